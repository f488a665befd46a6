import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A task executor with one thread of its own, in Linux's idle scheduling class (`SCHED_IDLE`,
/// and `nice` 19 should that be refused): tasks that prefer it (`withTaskExecutorPreference`,
/// `Task(executorPreference:)`) run there only when no thread of the normal class wants the
/// processor, so the fire path's threads never wait for them. The history's writer runs its
/// reading, row making and database writes on such threads: on a host with no processor to spare
/// the history falls behind (its queue bounds how far, docs/history.md), never the fires.
///
/// ``stop()`` ends the thread once the jobs queued by then have run; jobs enqueued after it go to
/// the global concurrent executor, so that no task waits forever on a stopped thread.
final class BackgroundThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the state is behind its Mutex and the semaphore is thread-safe.
    private struct State {
        var jobs: [UnownedJob] = []
        var sleeping = false
        var stopping = false
    }

    let name: String
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// Linux's idle scheduling class (not exported to Swift by Glibc's module).
    static let idleSchedulingPolicy: Int32 = 5

    /// Starts the thread. `name` (at most 15 bytes, Linux's limit) is what `top -H` and `/proc`
    /// show for it.
    init(name: String) {
        self.name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let thread = Thread { [self] in
            #if canImport(Glibc)
            // On Linux the scheduling class, the nice value and the name are a thread's own: `0`
            // names the calling thread (a new thread starts with its creator's name).
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            var parameters = sched_param(sched_priority: 0)
            _ = sched_setscheduler(0, Self.idleSchedulingPolicy, &parameters)
            #endif
            Thread.current.name = self.name
            loop()
        }
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (accepted, wakeUp) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopping else { return (false, false) }
            state.jobs.append(job)
            defer { state.sleeping = false }
            return (true, state.sleeping)
        }
        guard accepted else {
            globalConcurrentExecutor.enqueue(job)
            return
        }
        if wakeUp { wake.signal() }
    }

    /// Ends the thread after the jobs already queued.
    func stop() {
        let wakeUp = state.withLock { state -> Bool in
            state.stopping = true
            defer { state.sleeping = false }
            return state.sleeping
        }
        if wakeUp { wake.signal() }
    }

    private func loop() {
        let executor = asUnownedTaskExecutor()
        while true {
            let (jobs, stopped) = state.withLock { state -> ([UnownedJob], Bool) in
                if state.jobs.isEmpty {
                    state.sleeping = !state.stopping
                    return ([], state.stopping)
                }
                defer { state.jobs.removeAll(keepingCapacity: true) }
                return (state.jobs, false)
            }
            if stopped { return }
            if jobs.isEmpty {
                wake.wait()
                continue
            }
            for job in jobs { job.runSynchronously(on: executor) }
        }
    }
}
