public import ShardworkCore
import Synchronization

/// Records every event of a host's stream from the moment it is made, for tests to wait on and
/// read: tests assert on events, not on log text.
public final class EventRecorder: Sendable {
    private final class Store: Sendable {
        let events = Mutex<[HostEvent]>([])
    }

    private let store = Store()
    private let subscription: HostEventSubscription

    public init(_ events: HostEvents) {
        let subscription = events.subscribe()
        self.subscription = subscription
        let store = self.store
        Task {
            for await event in subscription { store.events.withLock { $0.append(event) } }
        }
    }

    deinit { subscription.cancel() }

    /// Every event recorded so far, in the order published.
    public var events: [HostEvent] { store.events.withLock { $0 } }

    /// Events lost because this recorder fell behind (none expected in tests).
    public var dropped: Int { subscription.dropped }

    public func kinds(job: String? = nil) -> [HostEvent.Kind] {
        events.filter { job == nil || $0.job == job }.map(\.kind)
    }

    public func fireStarts(_ job: String) -> [FireStart] {
        events.compactMap { if case .fireStarted(let start) = $0.kind, start.job == job { start } else { nil } }
    }

    public func fireEnds(_ job: String) -> [FireEnd] {
        events.compactMap { if case .fireEnded(let end) = $0.kind, end.job == job { end } else { nil } }
    }

    public func count(_ matches: (HostEvent.Kind) -> Bool) -> Int {
        events.count { matches($0.kind) }
    }

    /// Waits (30 s at the most) until `count` recorded events match; returns whether they came.
    public func waitFor(count: Int = 1, seconds: Double = 30, _ matches: @Sendable (HostEvent.Kind) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if self.count(matches) >= count { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return self.count(matches) >= count
    }

    /// Waits until `count` fires of `job` have ended.
    public func waitForFires(_ job: String, count: Int = 1, seconds: Double = 30) async -> Bool {
        await waitFor(count: count, seconds: seconds) { if case .fireEnded(let end) = $0 { end.job == job } else { false } }
    }
}
