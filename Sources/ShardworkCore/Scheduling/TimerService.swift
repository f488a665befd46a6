// `timespec` and `stat`: a release build finds them through the support module's header.
import CShardworkSupport
import Foundation
import Synchronization

/// The host's one source of time, in two kinds.
///
/// Wall-clock time (``now()``, milliseconds since the Unix epoch) is what cron instants are made
/// of: the timer fires by it, and the reconcile interval is counted on it. Monotonic time
/// (``monotonicNow()``, ``sleep(for:)``) measures what must not jump with the wall clock: the
/// shutdown deadline, how long a fire waits for a resharding, and how long the registry has been
/// silent (fencing). The system's clock reads the kernel for both; a test's clock can move either
/// by hand.
public protocol SchedulerClock: Sendable {
    func now() -> Int64
    /// The same clock in microseconds, so the timer can wake at a deadline rather than up to a
    /// millisecond after it.
    func nowMicroseconds() -> Int64
    /// Called by a ``TimerService`` with a function that wakes it. A clock whose time can jump
    /// (set by hand, say) calls it after each jump, so that what became due fires at once; without
    /// it the timer notices within a second, the longest it sleeps.
    func onJump(_ wake: @escaping @Sendable () -> Void)
    /// The current monotonic instant.
    func monotonicNow() -> ContinuousClock.Instant
    /// Sleeps for `duration` of monotonic time; throws `CancellationError` when the task is
    /// cancelled.
    func sleep(for duration: Duration) async throws
}

extension SchedulerClock {
    public func nowMicroseconds() -> Int64 { now() * 1000 }
    public func onJump(_ wake: @escaping @Sendable () -> Void) {}
    public func monotonicNow() -> ContinuousClock.Instant { .now }
    public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}

/// The system's real-time clock.
public struct SystemClock: SchedulerClock {
    public init() {}

    public func now() -> Int64 { nowMicroseconds() / 1000 }

    public func nowMicroseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
    }
}

/// One timer for every job of the process.
///
/// A single thread sleeps until the earliest deadline of a ``TimerQueue`` and hands each due key to
/// the handler, which returns the key's next deadline (or `nil` to stop). An idle job costs one heap
/// entry: no thread, task or timer of its own. The handler runs on the timer's thread and must
/// only hand work off (start a task, enqueue), never wait.
///
/// With an arming lead, each key is also handed to the arm handler that long before its deadline,
/// so that the work of a fire can be prepared ahead. When keys come due, the release handler is
/// called first, with the time, so that work prepared for that instant can be let go in bulk
/// before the timer's own work on each key (it may wait a few milliseconds for that work to
/// start); due keys are then handed out a few hundred at a time. Firing always comes before arming.
public final class TimerService: @unchecked Sendable {
    // `queue`, `handler` and `running` are guarded by `condition`, which also wakes the thread.
    /// Called with the key, its deadline and the clock's time when the key came due; returns the
    /// key's next deadline.
    public typealias Handler = @Sendable (_ key: String, _ deadline: Int64, _ now: Int64) -> Int64?
    /// Called with a key and its coming deadline, `armLeadMilliseconds` before it.
    public typealias ArmHandler = @Sendable (_ key: String, _ deadline: Int64) -> Void

    private let condition = NSCondition()
    private var queue = TimerQueue<String>()
    /// The same keys at their deadlines less the lead, until they are armed.
    private var armQueue = TimerQueue<String>()
    private var handler: Handler?
    private var armHandler: ArmHandler?
    private var releaseHandler: (@Sendable (_ now: Int64) -> Void)?
    private var running = false
    private var thread: Thread?
    /// Keys scheduled or cancelled while handlers ran: what was done to them wins over the
    /// handlers' answers.
    private var dispatching = false
    private var touchedWhileDispatching = Set<String>()
    public let clock: any SchedulerClock
    /// The longest the thread sleeps before looking at the clock again, so that a wall-clock jump
    /// (NTP, a suspended VM) delays no fire by more than this.
    private let maximumSleepMilliseconds: Int64
    /// How long before its deadline a key is armed; 0: never.
    public let armLeadMilliseconds: Int64

    public init(clock: any SchedulerClock = SystemClock(), maximumSleepMilliseconds: Int64 = 1000, armLeadMilliseconds: Int64 = 0) {
        self.clock = clock
        self.maximumSleepMilliseconds = maximumSleepMilliseconds
        self.armLeadMilliseconds = armLeadMilliseconds
        clock.onJump { [weak self] in self?.wake() }
    }

    /// Starts the timer thread.
    public func start(handler: @escaping Handler, arm: ArmHandler? = nil, release: (@Sendable (_ now: Int64) -> Void)? = nil) {
        condition.lock()
        defer { condition.unlock() }
        guard !running else { return }
        self.handler = handler
        self.armHandler = armLeadMilliseconds > 0 ? arm : nil
        self.releaseHandler = release
        running = true
        let thread = Thread { [self] in
            nameCurrentThread("shardwork-timer")
            run()
        }
        thread.start()
        self.thread = thread
    }

    /// Stops the thread: no new run of due keys or arming starts after this returns (one that has
    /// started, up to a few hundred handler calls, finishes).
    public func stop() {
        condition.lock()
        running = false
        condition.signal()
        condition.unlock()
    }

    /// Schedules `key` at `deadline` (epoch ms), replacing its previous deadline.
    public func schedule(_ key: String, at deadline: Int64) {
        condition.lock()
        if dispatching { touchedWhileDispatching.insert(key) }
        let earliest = queue.nextDeadline()
        queue.schedule(key, at: deadline)
        var wake = earliest.map({ deadline < $0 }) ?? true
        if armLeadMilliseconds > 0 {
            let earliestArm = armQueue.nextDeadline()
            armQueue.schedule(key, at: deadline - armLeadMilliseconds)
            wake = wake || (earliestArm.map { deadline - armLeadMilliseconds < $0 } ?? true)
        }
        if wake { condition.signal() }
        condition.unlock()
    }

    public func cancel(_ key: String) {
        condition.lock()
        if dispatching { touchedWhileDispatching.insert(key) }
        queue.cancel(key)
        armQueue.cancel(key)
        condition.unlock()
    }

    public func isScheduled(_ key: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return queue.isScheduled(key)
    }

    /// How many keys are scheduled.
    public var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.count
    }

    private func wake() {
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while running {
            let nowMicroseconds = clock.nowMicroseconds()
            let now = nowMicroseconds / 1000
            if let releaseHandler, let earliest = queue.nextDeadline(), earliest <= now {
                condition.unlock()
                releaseHandler(now)
                condition.lock()
            }
            // A few hundred at a time, so that a key scheduled meanwhile is not kept waiting long.
            let due = queue.popDue(now: now, limit: 256)
            if !due.isEmpty, let handler {
                for (key, _) in due { armQueue.cancel(key) }
                dispatching = true
                condition.unlock()
                var next: [(String, Int64)] = []
                next.reserveCapacity(due.count)
                for (key, deadline) in due {
                    if let deadline = handler(key, deadline, now) { next.append((key, deadline)) }
                }
                condition.lock()
                dispatching = false
                for (key, deadline) in next where !touchedWhileDispatching.contains(key) {
                    queue.schedule(key, at: deadline)
                    if armLeadMilliseconds > 0 { armQueue.schedule(key, at: deadline - armLeadMilliseconds) }
                }
                touchedWhileDispatching.removeAll(keepingCapacity: true)
                continue
            }
            if let armHandler {
                // A few at a time, so that a deadline that comes meanwhile is not kept waiting.
                let arming = armQueue.popDue(now: now, limit: 64)
                if !arming.isEmpty {
                    condition.unlock()
                    for (key, armTime) in arming { armHandler(key, armTime + armLeadMilliseconds) }
                    condition.lock()
                    continue
                }
            }
            var earliest = queue.nextDeadline()
            if armHandler != nil, let arm = armQueue.nextDeadline() { earliest = min(earliest ?? arm, arm) }
            if let deadline = earliest {
                let wait = min(deadline * 1000 - nowMicroseconds, maximumSleepMilliseconds * 1000)
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(max(wait, 0)) / 1_000_000))
            } else {
                condition.wait()
            }
        }
        condition.unlock()
    }
}
