import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A task executor with one thread of its own at the lowest priority of Linux's normal scheduling
/// class (`nice` 19): tasks that prefer it (`withTaskExecutorPreference`,
/// `Task(executorPreference:)`) run there. A waking thread of the fire path preempts it, and while
/// the processors are contended it gets about 1/70 of a normal thread's share, so the fires do not
/// wait for it; yet it always gets that share, so a host whose processors are busy with jobs still
/// writes its history. (Linux's idle class, `SCHED_IDLE`, used before, gave no measurable gain in
/// trigger lag at 10,000 fires a second, starved the history completely on such a host, and an
/// unprivileged thread cannot leave it again; docs/performance.md.) The history's writer runs its
/// reading, row making and database writes on such threads, and the metrics their reading of the
/// host's events: on a host with no processor to spare they fall behind (the history's queue
/// bounds how far, docs/history.md), never the fires.
///
/// ``stop()`` ends the thread once the jobs queued by then have run; jobs enqueued after it go to
/// the global concurrent executor, so that no task waits forever on a stopped thread.
package final class BackgroundThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the state is behind its Mutex and the semaphore is thread-safe.
    private struct State {
        var jobs: [UnownedJob] = []
        var sleeping = false
        var stopping = false
    }

    package let name: String
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// The thread's nice value: the lowest priority of the normal class.
    package static let niceness: Int32 = 19

    /// Starts the thread. `name` (at most 15 bytes, Linux's limit) is what `top -H` and `/proc`
    /// show for it.
    package init(name: String) {
        self.name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let thread = Thread { [self] in
            #if canImport(Glibc)
            // On Linux the nice value is a thread's own: `0` is the calling thread.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Self.niceness)
            #endif
            nameCurrentThread(self.name)
            loop()
        }
        thread.start()
    }

    package func enqueue(_ job: consuming ExecutorJob) {
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
    package func stop() {
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
