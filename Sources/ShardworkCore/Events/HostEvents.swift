import Synchronization

/// A host's event stream: every ``HostEvent`` the host publishes reaches each subscriber, in order.
///
/// Publishing never waits. Each subscriber has a bounded buffer; when a subscriber falls behind by
/// that many events, the events that do not fit are dropped for it alone and counted
/// (``HostEventSubscription/dropped``, and ``dropped`` for the host). With no subscriber, an event
/// is not even made: publishers pass it as an autoclosure, so the fire path pays one atomic load.
public final class HostEvents: Sendable {
    private let clock: any SchedulerClock
    /// The subscribers, or `nil` once the host stopped (a later subscription ends at once).
    private let subscribers = Mutex<[UInt64: Subscriber]?>([:])
    /// How many subscribers there are, read without the lock by every publisher.
    private let subscriberCount = Atomic<Int>(0)
    private let nextID = Atomic<UInt64>(0)
    private let droppedTotal = Atomic<Int>(0)

    private struct Subscriber: Sendable {
        let continuation: AsyncStream<HostEvent>.Continuation
        let counter: HostEventSubscription.Counter
    }

    /// The default buffer of a subscription: a few seconds of a busy host's events.
    public static let defaultBuffer = 65_536

    public init(clock: any SchedulerClock) {
        self.clock = clock
    }

    /// Whether anyone listens: publishers that would do work to describe an event check this first.
    public var isObserved: Bool { subscriberCount.load(ordering: .relaxed) > 0 }

    /// Events dropped for slow subscribers since the host started, over all subscriptions.
    public var dropped: Int { droppedTotal.load(ordering: .relaxed) }

    /// Publishes an event, stamped with the host's clock now. The event is made only when someone
    /// listens.
    public func publish(_ kind: @autoclosure () -> HostEvent.Kind) {
        guard isObserved else { return }
        publish(HostEvent(time: clock.now(), kind: kind()))
    }

    /// Publishes an event with its own time.
    public func publish(_ event: HostEvent) {
        guard isObserved else { return }
        var lost = 0
        subscribers.withLock { subscribers in
            for subscriber in (subscribers ?? [:]).values {
                if case .dropped = subscriber.continuation.yield(event) {
                    subscriber.counter.value.wrappingAdd(1, ordering: .relaxed)
                    lost += 1
                }
            }
        }
        if lost > 0 { droppedTotal.wrappingAdd(lost, ordering: .relaxed) }
    }

    /// A new subscription, which receives every event published from now on until it is cancelled
    /// (or its iteration ends). `buffer`: how many events may wait for it before they are dropped.
    public func subscribe(buffer: Int = HostEvents.defaultBuffer) -> HostEventSubscription {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let (stream, continuation) = AsyncStream<HostEvent>.makeStream(bufferingPolicy: .bufferingOldest(max(1, buffer)))
        let counter = HostEventSubscription.Counter()
        continuation.onTermination = { [weak self] _ in self?.remove(id) }
        let open = subscribers.withLock { subscribers -> Bool in
            guard subscribers != nil else { return false }
            subscribers?[id] = Subscriber(continuation: continuation, counter: counter)
            return true
        }
        if open {
            subscriberCount.wrappingAdd(1, ordering: .relaxed)
        } else {
            continuation.finish()
        }
        return HostEventSubscription(stream: stream, counter: counter, cancel: { continuation.finish() })
    }

    private func remove(_ id: UInt64) {
        let removed = subscribers.withLock { $0?.removeValue(forKey: id) != nil }
        if removed { subscriberCount.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Ends every subscription (the host stopped): their iterations end after the events they hold,
    /// and a subscription made later ends at once.
    package func finish() {
        let all = subscribers.withLock { subscribers in
            defer { subscribers = nil }
            return Array((subscribers ?? [:]).values)
        }
        subscriberCount.wrappingSubtract(all.count, ordering: .relaxed)
        for subscriber in all { subscriber.continuation.finish() }
    }
}

/// One subscriber's view of a host's events: iterate it for the events, in the order they were
/// published.
public struct HostEventSubscription: AsyncSequence, Sendable {
    public typealias Element = HostEvent

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    private let stream: AsyncStream<HostEvent>
    private let counter: Counter
    private let cancelAction: @Sendable () -> Void

    init(stream: AsyncStream<HostEvent>, counter: Counter, cancel: @escaping @Sendable () -> Void) {
        self.stream = stream
        self.counter = counter
        cancelAction = cancel
    }

    /// Events this subscriber lost because it fell behind by more than its buffer.
    public var dropped: Int { counter.value.load(ordering: .relaxed) }

    /// Ends the subscription: the iteration ends after the events already buffered.
    public func cancel() { cancelAction() }

    public func makeAsyncIterator() -> AsyncStream<HostEvent>.AsyncIterator { stream.makeAsyncIterator() }
}
