import Foundation
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

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
