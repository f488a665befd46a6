import ShardworkCore
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
