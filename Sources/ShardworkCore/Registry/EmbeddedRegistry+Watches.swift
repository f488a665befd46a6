/// One watcher passed to `data`, `exists` or `children`, waiting for its one event.
struct EmbeddedWatch {
    var session: Int64
    var watcher: Watcher
}

/// Where a watch waits: on a node (set by `data`, or by `exists` whether or not the node exists)
/// or on its list of children (set by `children`). ZooKeeper's server keeps the same two tables.
struct EmbeddedWatchKey: Hashable {
    var path: String
    var onChildren: Bool
}

/// A watcher called with its event once the lock is released.
struct EmbeddedDelivery {
    var watcher: Watcher
    var event: WatchEvent
}

/// The watches of a disconnected session, put aside the way ZooKeeper's client keeps them while it
/// reconnects. On reconnection each is judged against the tree as it is then, as ZooKeeper's
/// `SetWatches` does: changes made meanwhile fire once, with the kind the node's state now implies.
struct EmbeddedStashedWatch {
    enum Kind {
        /// On an existing node (set by `data`, or by `exists` on an existing node).
        case data
        /// On a missing node, for its creation (set by `exists`).
        case creation
        case children
    }

    var kind: Kind
    var path: String
    var watch: EmbeddedWatch
}

/// The two watch tables, by path, with the number of watches each session has in them so that an
/// ended session's watches are found without scanning every table.
struct EmbeddedWatches {
    private var onNodes: [String: [EmbeddedWatch]] = [:]
    private var onChildren: [String: [EmbeddedWatch]] = [:]
    private var bySession: [Int64: [EmbeddedWatchKey: Int]] = [:]

    var isEmpty: Bool { onNodes.isEmpty && onChildren.isEmpty }

    mutating func add(_ watch: EmbeddedWatch, at key: EmbeddedWatchKey) {
        if key.onChildren {
            onChildren[key.path, default: []].append(watch)
        } else {
            onNodes[key.path, default: []].append(watch)
        }
        bySession[watch.session, default: [:]][key, default: 0] += 1
    }

    /// Fires, in order, the watches each committed change triggers: a creation fires the node's
    /// watches (`created`) and the parent's child watches; a deletion fires the node's watches and
    /// child watches (`deleted`) and the parent's child watches; a data change fires the node's
    /// watches. Each watch is removed as it fires, so it fires once even if a `multi` changed its
    /// node twice (ZooKeeper applies a multi's operations one by one, and the first change wins).
    mutating func trigger(_ changes: [EmbeddedChange], into outbox: inout [EmbeddedDelivery]) {
        guard !isEmpty else { return }
        for change in changes {
            switch change {
            case .created(let path, let parent):
                fire(EmbeddedWatchKey(path: path, onChildren: false), .created, into: &outbox)
                fire(EmbeddedWatchKey(path: parent, onChildren: true), .childrenChanged, into: &outbox)
            case .deleted(let path, let parent):
                fire(EmbeddedWatchKey(path: path, onChildren: false), .deleted, into: &outbox)
                fire(EmbeddedWatchKey(path: path, onChildren: true), .deleted, into: &outbox)
                fire(EmbeddedWatchKey(path: parent, onChildren: true), .childrenChanged, into: &outbox)
            case .dataChanged(let path):
                fire(EmbeddedWatchKey(path: path, onChildren: false), .dataChanged, into: &outbox)
            }
        }
    }

    private mutating func fire(_ key: EmbeddedWatchKey, _ kind: WatchEvent.Kind, into outbox: inout [EmbeddedDelivery]) {
        let removed = key.onChildren ? onChildren.removeValue(forKey: key.path) : onNodes.removeValue(forKey: key.path)
        guard let removed else { return }
        let event = WatchEvent(kind, key.path)
        for watch in removed {
            outbox.append(EmbeddedDelivery(watcher: watch.watcher, event: event))
            forget(key, of: watch.session, count: 1)
        }
    }

    /// Takes every watch of `session` out of the tables (the session ended or lost its
    /// connection). The caller releases them after unlocking: a watcher may hold the last reference
    /// to a registry, whose `deinit` takes the lock.
    mutating func removeAll(of session: Int64) -> [(key: EmbeddedWatchKey, watch: EmbeddedWatch)] {
        guard let keys = bySession.removeValue(forKey: session) else { return [] }
        var taken: [(key: EmbeddedWatchKey, watch: EmbeddedWatch)] = []
        for key in keys.keys.sorted(by: Self.stableOrder) {
            let kept = take(from: key, session: session) { taken.append((key, $0)) }
            if key.onChildren {
                onChildren[key.path] = kept.isEmpty ? nil : kept
            } else {
                onNodes[key.path] = kept.isEmpty ? nil : kept
            }
        }
        return taken
    }

    private func take(from key: EmbeddedWatchKey, session: Int64, _ body: (EmbeddedWatch) -> Void) -> [EmbeddedWatch] {
        let all = (key.onChildren ? onChildren[key.path] : onNodes[key.path]) ?? []
        var kept: [EmbeddedWatch] = []
        for watch in all {
            if watch.session == session { body(watch) } else { kept.append(watch) }
        }
        return kept
    }

    private mutating func forget(_ key: EmbeddedWatchKey, of session: Int64, count: Int) {
        guard let remaining = bySession[session]?[key] else { return }
        if remaining > count {
            bySession[session]?[key] = remaining - count
        } else {
            bySession[session]?[key] = nil
            if bySession[session]?.isEmpty == true { bySession[session] = nil }
        }
    }

    /// Node watches before child watches, then by path: a reconnecting session's watches are
    /// judged in the order ZooKeeper's `SetWatches` lists them.
    private static func stableOrder(_ a: EmbeddedWatchKey, _ b: EmbeddedWatchKey) -> Bool {
        a.onChildren != b.onChildren ? !a.onChildren : a.path < b.path
    }
}
