import Foundation
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("Timer queue")
struct TimerQueueTests {
    @Test("keys come due in deadline order, ties in scheduling order")
    func order() {
        var queue = TimerQueue<String>()
        queue.schedule("c", at: 30)
        queue.schedule("a", at: 10)
        queue.schedule("b", at: 10)
        queue.schedule("d", at: 40)
        let first = queue.nextDeadline()
        let early = queue.popDue(now: 9)
        let due = queue.popDue(now: 30)
        let next = queue.nextDeadline()
        #expect(first == 10)
        #expect(early.isEmpty)
        #expect(due.map(\.key) == ["a", "b", "c"])
        #expect(queue.count == 1)
        #expect(next == 40)
    }

    @Test("rescheduling replaces the deadline; cancelling removes the key")
    func rescheduleAndCancel() {
        var queue = TimerQueue<String>()
        queue.schedule("a", at: 10)
        queue.schedule("a", at: 50)
        queue.schedule("b", at: 20)
        let cancelled = queue.cancel("b")
        let cancelledAgain = queue.cancel("b")
        #expect(cancelled && !cancelledAgain)
        let next = queue.nextDeadline()
        let due = queue.popDue(now: 100)
        let again = queue.popDue(now: 100)
        #expect(next == 50)
        #expect(due.map(\.key) == ["a"])
        #expect(again.isEmpty)
        #expect(!queue.isScheduled("a"))
    }

    @Test("a key cancelled and scheduled again comes due once, at its new deadline only")
    func cancelThenSchedule() {
        var queue = TimerQueue<String>()
        queue.schedule("a", at: 10)
        queue.cancel("a")
        queue.schedule("a", at: 50)
        let early = queue.popDue(now: 20)
        let due = queue.popDue(now: 60)
        #expect(early.isEmpty, "the cancelled entry stays dead")
        #expect(due.map(\.key) == ["a"] && due.map(\.deadline) == [50])
        #expect(queue.popDue(now: 100).isEmpty && queue.count == 0)
    }

    @Test("popDue hands out at most its limit, the earliest first")
    func popLimit() {
        var queue = TimerQueue<Int>()
        for key in 0..<10 { queue.schedule(key, at: Int64(key)) }
        let first = queue.popDue(now: 100, limit: 4)
        let rest = queue.popDue(now: 100)
        #expect(first.map(\.key) == [0, 1, 2, 3] && rest.map(\.key) == Array(4..<10))
    }

    @Test("ten thousand keys rescheduled a hundred times each stay correct and compact")
    func manyKeys() {
        var queue = TimerQueue<Int>()
        for round in 0..<100 {
            for key in 0..<10_000 { queue.schedule(key, at: Int64(round * 10_000 + key)) }
        }
        #expect(queue.count == 10_000)
        let due = queue.popDue(now: Int64(99 * 10_000 + 4_999))
        #expect(due.map(\.key) == Array(0..<5_000))
        let expectedDeadlines: [Int64] = (0..<5_000).map { Int64(990_000 + $0) }
        #expect(due.map(\.deadline) == expectedDeadlines)
        #expect(queue.count == 5_000)
    }
}

@Suite("Timer service")
struct TimerServiceTests {
    /// Collects handler calls and lets a test wait for a number of them.
    final class Fires: Sendable {
        private let calls = Mutex<[(key: String, deadline: Int64)]>([])
        private let arrived = DispatchSemaphore(value: 0)

        func record(_ key: String, _ deadline: Int64) {
            calls.withLock { $0.append((key, deadline)) }
            arrived.signal()
        }

        /// Waits for `count` more calls; false if they do not come within `seconds`.
        func wait(for count: Int, seconds: Double = 10) -> Bool {
            (0..<count).allSatisfy { _ in arrived.wait(timeout: .now() + seconds) == .success }
        }

        var all: [(key: String, deadline: Int64)] { calls.withLock { $0 } }
    }

    @Test("fires each key at its deadline by a manual clock, and reschedules it from the handler's answer")
    func manualClock() {
        let clock = ManualClock(now: 1_000)
        let timer = TimerService(clock: clock)
        let fires = Fires()
        timer.start { key, deadline, _ in
            fires.record(key, deadline)
            return key == "every-100" ? deadline + 100 : nil
        }
        defer { timer.stop() }
        timer.schedule("every-100", at: 1_100)
        timer.schedule("once", at: 1_150)

        clock.advance(to: 1_100)
        #expect(fires.wait(for: 1))
        clock.advance(to: 1_250)
        #expect(fires.wait(for: 2))
        #expect(fires.all.map(\.key) == ["every-100", "once", "every-100"])
        #expect(fires.all.map(\.deadline) == [1_100, 1_150, 1_200])
        // The handler's answer is applied after it returns.
        #expect(eventuallyBlocking { timer.isScheduled("every-100") })
        #expect(!timer.isScheduled("once"))
    }

    @Test("keys are armed their lead ahead; at an instant the release comes first, then the keys due")
    func armAndRelease() {
        let clock = ManualClock(now: 1_000)
        let timer = TimerService(clock: clock, armLeadMilliseconds: 250)
        let fires = Fires()
        timer.start(
            handler: { key, deadline, _ in
                fires.record("due \(key)", deadline)
                return deadline + 1_000
            },
            arm: { key, deadline in fires.record("arm \(key)", deadline) },
            release: { now in fires.record("release", now) })
        defer { timer.stop() }
        timer.schedule("a", at: 2_000)
        timer.schedule("b", at: 2_000)

        clock.advance(to: 1_700)
        #expect(!fires.wait(for: 1, seconds: 0.2), "nothing before the lead")
        clock.advance(to: 1_750)
        #expect(fires.wait(for: 2))
        clock.advance(to: 2_000)
        #expect(fires.wait(for: 3))
        #expect(fires.all.map(\.key) == ["arm a", "arm b", "release", "due a", "due b"])
        #expect(fires.all.map(\.deadline) == [2_000, 2_000, 2_000, 2_000, 2_000])
        // Rescheduled from the handlers' answers, and armed again ahead of the next instant.
        clock.advance(to: 2_750)
        #expect(fires.wait(for: 2))
        #expect(fires.all.suffix(2).map(\.key) == ["arm a", "arm b"])
    }

    @Test("a key cancelled while its handler runs is not put back")
    func cancelDuringHandler() {
        let clock = ManualClock(now: 0)
        let timer = TimerService(clock: clock)
        let fires = Fires()
        timer.start { key, deadline, _ in
            timer.cancel(key)
            fires.record(key, deadline)
            return deadline + 10
        }
        defer { timer.stop() }
        timer.schedule("a", at: 10)
        clock.advance(to: 10)
        #expect(fires.wait(for: 1))
        #expect(!timer.isScheduled("a"))
    }

    @Test("with the system clock, near deadlines fire in order")
    func systemClock() {
        let timer = TimerService()
        let fires = Fires()
        timer.start { key, deadline, _ in
            fires.record(key, deadline)
            return nil
        }
        defer { timer.stop() }
        let now = SystemClock().now()
        timer.schedule("later", at: now + 60)
        timer.schedule("sooner", at: now + 20)
        #expect(fires.wait(for: 2))
        #expect(fires.all.map(\.key) == ["sooner", "later"])
    }
}

@Suite("Worker pool")
struct WorkerPoolTests {
    final class Concurrency: Sendable {
        private let state = Mutex((now: 0, most: 0))
        func enter() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
        func leave() { state.withLock { $0.now -= 1 } }
        var most: Int { state.withLock { $0.most } }
    }

    @Test("runs everything it is given on at most its size of threads")
    func runsWork() {
        let pool = WorkerPool(size: 3)
        let done = DispatchSemaphore(value: 0)
        let concurrency = Concurrency()
        for _ in 0..<50 {
            pool.submit {
                concurrency.enter()
                usleep(1_000)
                concurrency.leave()
                done.signal()
            }
        }
        for _ in 0..<50 { #expect(done.wait(timeout: .now() + 10) == .success) }
        let most = concurrency.most
        #expect(most <= 3)
        #expect(pool.threads <= 3)
        pool.shutdown()
    }

    @Test("a stuck thread is replaced, so other work still runs, and the surplus thread ends afterwards")
    func stuckWork() {
        let pool = WorkerPool(size: 1)
        let release = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        pool.submit {
            started.signal()
            release.wait()
            pool.releaseStuck()
            finished.signal()
        }
        #expect(started.wait(timeout: .now() + 10) == .success)
        let other = DispatchSemaphore(value: 0)
        pool.submit { other.signal() }
        pool.markStuck()
        #expect(other.wait(timeout: .now() + 10) == .success)
        #expect(pool.threads == 2)
        release.signal()
        #expect(finished.wait(timeout: .now() + 10) == .success)
        // One more piece of work lets the surplus thread notice it is surplus.
        let last = DispatchSemaphore(value: 0)
        pool.submit { last.signal() }
        #expect(last.wait(timeout: .now() + 10) == .success)
        pool.shutdown()
    }
}
