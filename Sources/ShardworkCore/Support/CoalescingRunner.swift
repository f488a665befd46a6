import Synchronization

/// Runs work for a key one run at a time: a request made while a run for the key is under way
/// makes exactly one more run after it, however many requests came meanwhile. A level-triggered
/// look (a job's sync, a scan of the namespace) needs nothing more: the run after reads the state
/// that every request saw change.
final class CoalescingRunner<Key: Hashable & Sendable>: Sendable {
    /// The keys with a run under way, and whether another was asked for.
    private let running = Mutex<[Key: Bool]>([:])

    /// Runs `body` now, in the caller's task, and again while requests came during the run; when
    /// a run for `key` is under way already, asks it for one more and returns at once.
    func run(_ key: Key, _ body: () async -> Void) async {
        guard claim(key) else { return }
        repeat {
            await body()
        } while again(key)
    }

    /// Like ``run(_:_:)``, in a task `spawn` starts, only when no run for `key` is under way
    /// (otherwise that run is asked for one more, and nothing is spawned).
    func request(_ key: Key, spawn: (@escaping @Sendable () async -> Void) -> Void, _ body: @escaping @Sendable () async -> Void) {
        guard claim(key) else { return }
        spawn {
            repeat {
                await body()
            } while self.again(key)
        }
    }

    /// Whether a run for `key` is under way.
    func isRunning(_ key: Key) -> Bool {
        running.withLock { $0[key] != nil }
    }

    private func claim(_ key: Key) -> Bool {
        running.withLock { running in
            if running[key] != nil {
                running[key] = true
                return false
            }
            running[key] = false
            return true
        }
    }

    /// After a run: whether another was asked for (and is now the one under way).
    private func again(_ key: Key) -> Bool {
        running.withLock { running in
            if running[key] == true {
                running[key] = false
                return true
            }
            running.removeValue(forKey: key)
            return false
        }
    }
}
