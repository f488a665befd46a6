public import ShardworkCore
import Synchronization

/// A clock that moves only when told to, for tests: the timer fires what its moves make due.
public final class ManualClock: SchedulerClock {
    private let state: Mutex<(now: Int64, wakes: [@Sendable () -> Void])>

    public init(now: Int64) {
        state = Mutex((now, []))
    }

    public func now() -> Int64 { state.withLock { $0.now } }

    public func onJump(_ wake: @escaping @Sendable () -> Void) {
        state.withLock { $0.wakes.append(wake) }
    }

    /// Moves the clock to `time` (never backwards) and wakes the timers that use it.
    public func advance(to time: Int64) {
        let wakes = state.withLock { state in
            state.now = max(state.now, time)
            return state.wakes
        }
        for wake in wakes { wake() }
    }

    public func advance(by milliseconds: Int64) {
        advance(to: now() + milliseconds)
    }
}
