import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("Host event stream")
struct HostEventStreamTests {
    static func fire(_ number: Int) -> HostEvent.Kind {
        .misfire(job: "job-\(number)", fireTime: Int64(number), kept: true)
    }

    @Test("with no subscriber an event is not even made")
    func nobodyListening() {
        let events = HostEvents(clock: ManualClock(now: 0))
        let made = Atomic<Int>(0)
        func event() -> HostEvent.Kind {
            made.add(1, ordering: .relaxed)
            return Self.fire(1)
        }
        #expect(!events.isObserved)
        events.publish(event())
        #expect(made.load(ordering: .relaxed) == 0)
        let subscription = events.subscribe()
        #expect(events.isObserved)
        events.publish(event())
        #expect(made.load(ordering: .relaxed) == 1)
        subscription.cancel()
        #expect(!events.isObserved, "a cancelled subscription is gone at once")
        events.publish(event())
        #expect(made.load(ordering: .relaxed) == 1)
    }

    @Test("every subscriber gets every event in order; one that falls behind loses what does not fit, counted, and publishing never waits")
    func slowSubscriber() async {
        let clock = ManualClock(now: 1_000)
        let events = HostEvents(clock: clock)
        let slow = events.subscribe(buffer: 8)
        let reader = events.subscribe()
        // Nobody reads while 100 events are published: the slow one's buffer fills at 8.
        for number in 0..<100 { events.publish(Self.fire(number)) }
        #expect(slow.dropped == 92)
        #expect(reader.dropped == 0)
        #expect(events.dropped == 92)
        slow.cancel()
        reader.cancel()
        var kept: [HostEvent] = []
        for await event in slow { kept.append(event) }
        #expect(kept.map(\.kind) == (0..<8).map(Self.fire), "the first 8, in order")
        var all: [HostEvent] = []
        for await event in reader { all.append(event) }
        #expect(all.map(\.kind) == (0..<100).map(Self.fire))
        #expect(all.allSatisfy { $0.time == 1_000 }, "stamped with the host's clock")
        #expect(!events.isObserved)
    }

    @Test("a subscriber with a linger takes what came meanwhile in one batch; the end comes at once")
    func lingeringSubscriber() async throws {
        let events = HostEvents(clock: ManualClock(now: 0))
        let subscription = events.subscribe(linger: .milliseconds(200))
        let received = Mutex<[Int64]>([])
        let reader = Task {
            for await event in subscription { received.withLock { $0.append(event.kind == Self.fire(0) ? 0 : 1) } }
            return received.withLock { $0.count }
        }
        events.publish(Self.fire(0))
        // The first event wakes the reader; what comes during its linger waits for the next batch.
        #expect(await eventually { received.withLock { $0.count } == 1 })
        for number in 1...500 { events.publish(Self.fire(number)) }
        #expect(await eventually { received.withLock { $0.count } == 501 })
        events.finish()
        #expect(await reader.value == 501)
        #expect(subscription.dropped == 0)
    }

    @Test("a subscription nobody holds any more ends, and the host's events are no longer made for it")
    func droppedSubscription() async {
        let events = HostEvents(clock: ManualClock(now: 0))
        do {
            let subscription = events.subscribe()
            #expect(events.isObserved)
            _ = subscription.dropped
        }
        #expect(!events.isObserved)
        // A subscription made after the host stopped ends at once.
        events.finish()
        let late = events.subscribe()
        #expect(!events.isObserved)
        var count = 0
        for await _ in late { count += 1 }
        #expect(count == 0)
    }

    @Test("a cancelled reading task ends its iteration")
    func cancelledReader() async {
        let events = HostEvents(clock: ManualClock(now: 0))
        let subscription = events.subscribe()
        let reader = Task {
            var count = 0
            for await _ in subscription { count += 1 }
            return count
        }
        events.publish(Self.fire(1))
        try? await Task.sleep(for: .milliseconds(50))
        reader.cancel()
        #expect(await reader.value <= 1)
    }
}

