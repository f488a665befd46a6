import DequeModule
import Synchronization

/// A host's event stream: every ``HostEvent`` the host publishes reaches each subscriber, in order.
///
/// Publishing never waits. Each subscriber has a bounded buffer; when a subscriber falls behind by
/// that many events, the events that do not fit are dropped for it alone and counted
/// (``HostEventSubscription/dropped``, and ``dropped`` for the host). With no subscriber, an event
/// is not even made: publishers pass it as an autoclosure, so the fire path pays one atomic load.
///
/// With a subscriber, publishing appends the event to its buffer under that buffer's lock; it
/// wakes the subscriber only when the subscriber waits on an empty buffer. A subscriber that asks
/// for a `linger` takes its events in batches at most that often, so a host firing thousands of
/// times a second wakes it a few dozen times a second, not once per event (waking a thread costs
/// the publisher a system call).
public final class HostEvents: Sendable {
    private let clock: any SchedulerClock
    /// The subscribers' buffers, or `nil` once the host stopped (a later subscription ends at once).
    private let subscribers = Mutex<[HostEventBuffer]?>([])
    /// How many subscribers there are, read without the lock by every publisher.
    private let subscriberCount = Atomic<Int>(0)
    private let droppedTotal = Atomic<Int>(0)

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
        guard isObserved, let buffers = subscribers.withLock({ $0 }) else { return }
        var lost = 0
        for buffer in buffers where !buffer.offer(event) { lost += 1 }
        if lost > 0 { droppedTotal.wrappingAdd(lost, ordering: .relaxed) }
    }

    /// A new subscription, which receives every event published from now on until it is cancelled
    /// (or dropped, or its iteration ends). `buffer`: how many events may wait for it before they
    /// are dropped. `linger`: after each batch of events, how long the iteration lets the next
    /// batch gather before it takes it (0: each event as soon as it comes).
    public func subscribe(buffer: Int = HostEvents.defaultBuffer, linger: Duration = .zero) -> HostEventSubscription {
        let events = HostEventBuffer(capacity: max(1, buffer))
        let open = subscribers.withLock { subscribers -> Bool in
            guard subscribers != nil else { return false }
            subscribers?.append(events)
            return true
        }
        if open {
            subscriberCount.wrappingAdd(1, ordering: .relaxed)
        } else {
            events.finish()
        }
        return HostEventSubscription(events, linger: linger, handle: HostEventSubscription.Handle { [weak self] in self?.remove(events) })
    }

    /// Ends a subscription: its iteration ends after the events it holds.
    private func remove(_ events: HostEventBuffer) {
        let removed = subscribers.withLock { subscribers -> Bool in
            guard let index = subscribers?.firstIndex(where: { $0 === events }) else { return false }
            subscribers?.remove(at: index)
            return true
        }
        if removed { subscriberCount.wrappingSubtract(1, ordering: .relaxed) }
        events.finish()
    }

    /// Ends every subscription (the host stopped): their iterations end after the events they hold,
    /// and a subscription made later ends at once.
    package func finish() {
        let all = subscribers.withLock { subscribers in
            defer { subscribers = nil }
            return subscribers ?? []
        }
        subscriberCount.wrappingSubtract(all.count, ordering: .relaxed)
        for events in all { events.finish() }
    }
}

/// One subscriber's events waiting to be taken, bounded; and the subscriber, when it waits.
final class HostEventBuffer: Sendable {
    private struct State {
        var events = Deque<HostEvent>()
        var waiting: CheckedContinuation<Void, Never>?
        var finished = false
    }

    private let state = Mutex(State())
    private let capacity: Int
    let dropped = Atomic<Int>(0)

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Adds an event; false when it was dropped (the buffer is full).
    func offer(_ event: HostEvent) -> Bool {
        let (kept, waiting) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !state.finished else { return (true, nil) }
            guard state.events.count < capacity else { return (false, nil) }
            state.events.append(event)
            defer { state.waiting = nil }
            return (true, state.waiting)
        }
        if !kept { dropped.wrappingAdd(1, ordering: .relaxed) }
        waiting?.resume()
        return kept
    }

    /// Whether no more events come.
    var isFinished: Bool { state.withLock { $0.finished } }

    /// No more events: the taker gets what is buffered, then the end.
    func finish() {
        state.withLock { state in
            state.finished = true
            defer { state.waiting = nil }
            return state.waiting
        }?.resume()
    }

    /// Every event buffered now, waiting for one when there is none; `nil` at the end (finished
    /// and empty) or when the calling task is cancelled. One taker at a time.
    func take() async -> [HostEvent]? {
        while !Task.isCancelled {
            // The buffer is swapped out, not copied: publishers wait on this lock only a moment,
            // even when the taker runs at a low priority.
            let ready = state.withLock { state -> Deque<HostEvent>?? in
                if !state.events.isEmpty {
                    var taken = Deque<HostEvent>()
                    swap(&taken, &state.events)
                    return .some(taken)
                }
                return state.finished ? .some(nil) : nil
            }
            if let ready { return ready.map { Array($0) } }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { state -> Bool in
                        if !state.events.isEmpty || state.finished || Task.isCancelled { return true }
                        state.waiting = continuation
                        return false
                    }
                    if now { continuation.resume() }
                }
            } onCancel: {
                state.withLock { state in
                    defer { state.waiting = nil }
                    return state.waiting
                }?.resume()
            }
        }
        return nil
    }
}

/// One subscriber's view of a host's events: iterate it (from one task) for the events, in the
/// order they were published. The subscription ends when it is cancelled, when the host stops, or
/// when the subscription and its iterators are gone.
public struct HostEventSubscription: AsyncSequence, Sendable {
    public typealias Element = HostEvent

    /// Ends the subscription once no copy of it is left.
    final class Handle: Sendable {
        let end: @Sendable () -> Void

        init(_ end: @escaping @Sendable () -> Void) {
            self.end = end
        }

        deinit { end() }
    }

    private let events: HostEventBuffer
    private let linger: Duration
    private let handle: Handle

    init(_ events: HostEventBuffer, linger: Duration, handle: Handle) {
        self.events = events
        self.linger = linger
        self.handle = handle
    }

    /// Events this subscriber lost because it fell behind by more than its buffer.
    public var dropped: Int { events.dropped.load(ordering: .relaxed) }

    /// Ends the subscription: the iteration ends after the events already buffered.
    public func cancel() { handle.end() }

    public func makeAsyncIterator() -> Iterator { Iterator(events: events, linger: linger, handle: handle) }

    public struct Iterator: AsyncIteratorProtocol {
        let events: HostEventBuffer
        let linger: Duration
        let handle: Handle
        private var batch: [HostEvent] = []
        private var index = 0

        init(events: HostEventBuffer, linger: Duration, handle: Handle) {
            self.events = events
            self.linger = linger
            self.handle = handle
        }

        public mutating func next() async -> HostEvent? {
            if index == batch.count {
                // Let the next batch gather (unless the stream has ended: the end comes at once).
                if !batch.isEmpty, linger > .zero, !events.isFinished { try? await Task.sleep(for: linger) }
                guard let next = await events.take() else {
                    batch = []
                    index = 0
                    return nil
                }
                batch = next
                index = 0
            }
            defer { index += 1 }
            return batch[index]
        }
    }
}
