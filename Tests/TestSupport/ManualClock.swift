public import ShardworkCore
import Synchronization

/// A clock that moves only when told to, for tests: the timer fires what its moves make due.
///
/// Its monotonic time (the shutdown deadline, the wait for a resharding, fencing silence) is the
/// system's unless `monotonic` is `.manual`: then it moves with the wall-clock time set here, by
/// the same amounts, and sleeps on it end only when ``advance(to:)`` gets past them. A test that
/// drives a cluster by hand wants that: a machine slowed down by the rest of the suite must not let
/// a ten-second wait run out between two of its steps.
public final class ManualClock: SchedulerClock {
    public enum MonotonicTime: Sendable {
        /// The system's monotonic clock.
        case real
        /// Moved by hand with the wall-clock time.
        case manual
    }

    private struct Sleeper {
        let until: Int64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Int64
        var wakes: [@Sendable () -> Void] = []
        var sleepers: [UInt64: Sleeper] = [:]
        var nextSleeper: UInt64 = 0
    }

    private let state: Mutex<State>
    private let monotonic: MonotonicTime
    /// The monotonic instant that stands for the time the clock was made with (`.manual` only).
    private let origin = ContinuousClock.now
    private let start: Int64

    public init(now: Int64, monotonic: MonotonicTime = .real) {
        state = Mutex(State(now: now))
        start = now
        self.monotonic = monotonic
    }

    public func now() -> Int64 { state.withLock { $0.now } }

    public func onJump(_ wake: @escaping @Sendable () -> Void) {
        state.withLock { $0.wakes.append(wake) }
    }

    public func monotonicNow() -> ContinuousClock.Instant {
        switch monotonic {
        case .real: .now
        case .manual: origin + .milliseconds(now() - start)
        }
    }

    public func sleep(for duration: Duration) async throws {
        guard case .manual = monotonic else { return try await Task.sleep(for: duration) }
        let (seconds, attoseconds) = duration.components
        // Whole milliseconds, rounded up: a sleep never ends early.
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        let id = state.withLock { state -> UInt64 in
            defer { state.nextSleeper += 1 }
            return state.nextSleeper
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    let until = state.now + max(milliseconds, 0)
                    if until <= state.now { return .success(()) }
                    state.sleepers[id] = Sleeper(until: until, continuation: continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// How many sleeps on the clock's monotonic time are under way (`.manual` only): a test waits
    /// for the one it means to end before it moves the clock past it.
    public var sleeping: Int { state.withLock { $0.sleepers.count } }

    /// Moves the clock to `time` (never backwards), wakes the timers that use it and ends the
    /// sleeps it gets past.
    public func advance(to time: Int64) {
        let (wakes, due) = state.withLock { state in
            state.now = max(state.now, time)
            let now = state.now
            let due = state.sleepers.filter { $0.value.until <= now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return (state.wakes, due.values.map(\.continuation))
        }
        for continuation in due { continuation.resume() }
        for wake in wakes { wake() }
    }

    public func advance(by milliseconds: Int64) {
        advance(to: now() + milliseconds)
    }
}
