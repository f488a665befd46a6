import DequeModule
import Foundation

/// The host's threads for job items.
///
/// Job code is called through C and may block (a Swift plugin's async code is waited for on the
/// calling thread), so it never runs on Swift's cooperative pool. One pool serves every job; each
/// job's executor strategy limits how many of its items run at once. The thread count does not
/// depend on the number of jobs.
///
/// An item that outlives its timeout keeps its thread (a thread cannot be stopped), so the pool
/// starts a replacement and the capacity for other work stays the same; when the stuck item
/// finally returns, the surplus thread ends. Replacements are capped at the pool's size: items that
/// never return can hold at most that many threads beyond it, and past the cap the pool's capacity
/// shrinks instead of its thread count growing.
package final class WorkerPool: @unchecked Sendable {
    // Everything below is guarded by `condition`.
    private let condition = NSCondition()
    private var work = Deque<@Sendable () -> Void>()
    private var threadCount = 0
    private var idleCount = 0
    private var stuckCount = 0
    private var stopped = false
    private var nextThreadNumber = 0

    /// The number of threads available for work (not counting stuck ones).
    package let size: Int

    package init(size: Int) {
        precondition(size > 0, "a worker pool needs at least one thread")
        self.size = size
    }

    /// The default size: twice the processors, at least four.
    package static var defaultSize: Int {
        max(4, 2 * ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Runs `body` on a pool thread, in submission order as threads become free. Returns false,
    /// running nothing, when the pool has been shut down.
    @discardableResult
    package func submit(_ body: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopped else { return false }
        work.append(body)
        if idleCount > 0 { condition.signal() }
        // An idle thread that was woken counts as idle until it takes its work: work beyond the
        // idle threads needs a thread of its own, or it would wait behind a long item.
        if work.count > idleCount, threadCount < capacity { startThread() }
        return true
    }

    /// How many threads the pool may have: its size, and one replacement per stuck thread up to
    /// its size again.
    private var capacity: Int { size + min(stuckCount, size) }

    /// Runs every one of `bodies` on pool threads, in order, with one lock and one wake-up for the
    /// lot: how the timer releases a burst of fires that came due at one instant.
    /// Returns false, running none of them, when the pool has been shut down.
    @discardableResult
    package func submit(contentsOf bodies: [@Sendable () -> Void]) -> Bool {
        guard !bodies.isEmpty else { return true }
        condition.lock()
        defer { condition.unlock() }
        guard !stopped else { return false }
        work.append(contentsOf: bodies)
        // Idle threads take what they can; threads are started for the rest, up to the size.
        // Busy threads are not counted: they may be held by a long item.
        if idleCount > 0 {
            if bodies.count >= idleCount {
                condition.broadcast()
            } else {
                for _ in 0..<bodies.count { condition.signal() }
            }
        }
        var starts = min(work.count - idleCount, capacity - threadCount)
        while starts > 0 {
            startThread()
            starts -= 1
        }
        return true
    }

    /// A thread is stuck in work past its deadline: start another so capacity does not shrink.
    /// Call ``releaseStuck()`` when that work returns.
    package func markStuck() {
        condition.lock()
        defer { condition.unlock() }
        stuckCount += 1
        if work.count > idleCount && !stopped && threadCount < capacity { startThread() }
    }

    /// How many threads are held by work past its deadline now.
    package var stuckThreads: Int {
        condition.lock()
        defer { condition.unlock() }
        return stuckCount
    }

    /// The work that ``markStuck()`` was called for has returned.
    package func releaseStuck() {
        condition.lock()
        defer { condition.unlock() }
        stuckCount = max(0, stuckCount - 1)
    }

    /// How many threads the pool has now, stuck ones included.
    package var threads: Int {
        condition.lock()
        defer { condition.unlock() }
        return threadCount
    }

    /// The pool now, read under its lock once: what the metrics sample (docs/metrics.md).
    package var load: WorkerPoolLoad {
        condition.lock()
        defer { condition.unlock() }
        return WorkerPoolLoad(threads: threadCount, busy: threadCount - idleCount, queued: work.count, stuck: stuckCount)
    }

    /// Stops taking work; threads end once the queued work is done.
    package func shutdown() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func startThread() {
        threadCount += 1
        nextThreadNumber += 1
        let name = "sw-worker-\(nextThreadNumber)"
        let thread = Thread { [self] in
            nameCurrentThread(name)
            loop()
        }
        thread.start()
    }

    private func loop() {
        condition.lock()
        while true {
            // Surplus threads (started for stuck work that has since returned) end when idle.
            if threadCount > capacity || (stopped && work.isEmpty) {
                threadCount -= 1
                condition.unlock()
                return
            }
            guard let body = work.popFirst() else {
                idleCount += 1
                condition.wait()
                idleCount -= 1
                continue
            }
            condition.unlock()
            body()
            condition.lock()
        }
    }
}

/// A worker pool's threads and work at one moment (``WorkerPool/load``).
package struct WorkerPoolLoad: Sendable, Equatable {
    /// Threads the pool has, stuck ones included.
    package var threads: Int
    /// Threads running work (an item, a fire's bookkeeping).
    package var busy: Int
    /// Work waiting for a thread.
    package var queued: Int
    /// Threads held by items past their timeout.
    package var stuck: Int
}
