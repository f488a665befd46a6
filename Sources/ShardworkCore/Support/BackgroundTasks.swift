import Synchronization

/// The tasks a host starts in the background (its loops, and the one-off work its timer and its
/// registry watches hand off), owned rather than detached: when the host stops, they are cancelled
/// and awaited, as swift-service-lifecycle's `ServiceGroup` does with the children of its task
/// group. Work spawned after the host began to stop starts cancelled.
///
/// A task group would need one long-lived caller to own it; a host is started and stopped by
/// separate calls (``ShardworkHost/start()``, ``ShardworkHost/shutdown()``), so the tasks are kept
/// here, by name, and each removes itself when it ends.
final class BackgroundTasks: Sendable {
    private struct State {
        var tasks: [UInt64: (name: String, task: Task<Void, Never>)] = [:]
        var next: UInt64 = 0
        var closed = false
        /// The stop waiting for the last task to end (``cancelAndWait(upTo:)``).
        var drained: CheckedContinuation<Void, Never>?

        /// Removes a task that ended; returns the stop's continuation when it was the last.
        mutating func remove(_ id: UInt64) -> CheckedContinuation<Void, Never>? {
            tasks.removeValue(forKey: id)
            guard tasks.isEmpty, let drained else { return nil }
            self.drained = nil
            return drained
        }
    }

    private let state = Mutex(State())

    /// Runs `work` in a task of its own, owned until it ends; `name` says what it is when it is
    /// still running at the end.
    func spawn(_ name: String, _ work: @escaping @Sendable () async -> Void) {
        state.withLock { state in
            let id = state.next
            state.next &+= 1
            let task = Task { [weak self] in
                await work()
                self?.state.withLock { $0.remove(id) }?.resume()
            }
            if state.closed {
                task.cancel()
            } else {
                state.tasks[id] = (name, task)
            }
        }
    }

    /// The number of tasks under way.
    var count: Int { state.withLock { $0.tasks.count } }

    /// Cancels every task and waits for them, up to `limit`: a task that does not end by then (one
    /// waiting on something that ignores cancellation) is left, and its name returned, so that
    /// it never holds the host's stop.
    func cancelAndWait(upTo limit: Duration) async -> [String] {
        let tasks = state.withLock { state in
            state.closed = true
            return state.tasks.values.map(\.task)
        }
        for task in tasks { task.cancel() }
        // Resumed by the last task to end, or by the limit, whichever comes first.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = state.withLock { state -> Bool in
                guard !state.tasks.isEmpty else { return false }
                state.drained = continuation
                return true
            }
            guard waiting else { return continuation.resume() }
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                self?.state.withLock { state in defer { state.drained = nil }; return state.drained }?.resume()
            }
        }
        return state.withLock { state in state.tasks.values.map(\.name).sorted() }
    }
}
