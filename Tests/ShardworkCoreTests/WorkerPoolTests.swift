import Dispatch
import Foundation
import ShardworkCore
import Synchronization
import ShardworkTestSupport
import Testing

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

    @Test("its threads carry their name in the kernel, as top -H and ps -L show them")
    func threadNames() {
        let pool = WorkerPool(size: 1)
        let seen = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        pool.submit {
            let name = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
            seen.withLock { $0 = name?.trimmingCharacters(in: .newlines) }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        let name = seen.withLock { $0 }
        #expect(name?.hasPrefix("sw-worker-") == true, "\(name ?? "no name")")
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

    @Test("submit(contentsOf:) starts a thread when every existing thread is busy")
    func poolBulkSubmitWithBusyThreads() async throws {
        let pool = WorkerPool(size: 4)
        let gate = DispatchSemaphore(value: 0)
        let started = Atomic<Bool>(false)
        pool.submit { started.store(true, ordering: .releasing); gate.wait() }
        #expect(eventuallyBlocking(seconds: 2) { started.load(ordering: .acquiring) })
        let ran = Atomic<Bool>(false)
        pool.submit(contentsOf: [{ ran.store(true, ordering: .releasing) }])
        let ok = eventuallyBlocking(seconds: 2) { ran.load(ordering: .acquiring) }
        #expect(ok, "bulk-submitted work waited for the busy thread; threads=\(pool.threads)")
        gate.signal()
        #expect(eventuallyBlocking(seconds: 2) { ran.load(ordering: .acquiring) })
        pool.shutdown()
    }

    @Test("two bodies submitted one after the other while one thread idles both run, even when the first blocks")
    func backToBackSubmits() async throws {
        let pool = WorkerPool(size: 4)
        // One thread, idle: its first work is done.
        let warmed = Atomic<Bool>(false)
        pool.submit { warmed.store(true, ordering: .releasing) }
        #expect(eventuallyBlocking(seconds: 10) { warmed.load(ordering: .acquiring) })
        #expect(eventuallyBlocking(seconds: 10) { pool.threads == 1 })
        usleep(50_000)  // and waiting for work
        // The idle thread is woken for the first body, and counts as idle until it takes it: the
        // second body, submitted at once, must get a thread of its own rather than wait behind the
        // first (a worker process ran a healthy item only after a 60 s one so).
        let gate = DispatchSemaphore(value: 0)
        let ran = Atomic<Bool>(false)
        pool.submit { gate.wait() }
        pool.submit { ran.store(true, ordering: .releasing) }
        let ok = eventuallyBlocking(seconds: 10) { ran.load(ordering: .acquiring) }
        #expect(ok, "the second body waited behind the first; threads=\(pool.threads)")
        gate.signal()
        pool.shutdown()
    }
}
