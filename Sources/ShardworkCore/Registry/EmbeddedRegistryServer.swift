import Foundation
import Synchronization

/// The shared side of the embedded registry: one node tree, its transaction counter, its watches
/// and its sessions, as one ZooKeeper server holds them.
///
/// Every host process that wants the same tree connects to the same server; `connect()` opens a
/// session and returns its client. A single host uses `EmbeddedRegistry.standalone()`.
///
/// One lock guards everything. Writes never call user code while holding it: the clock is read
/// before locking, and watchers are called after unlocking, one at a time and in the order their
/// changes were committed, whichever thread made them.
public final class EmbeddedRegistryServer: Sendable {
    let clock: @Sendable () -> Int64
    let state = Mutex(EmbeddedServerState())
    private let lastStreamToken = Atomic<UInt64>(0)

    /// A server whose tree holds only the root `/`.
    ///
    /// - Parameter clock: milliseconds since the Unix epoch, for node times; tests pass a
    ///   controlled one. It is called outside the lock, once per write.
    public init(clock: @escaping @Sendable () -> Int64 = { EmbeddedRegistryServer.wallClockMilliseconds() }) {
        self.clock = clock
    }

    /// The default clock: wall-clock milliseconds since the Unix epoch.
    public static func wallClockMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }

    /// Opens a new session and returns its client, connected. Session ids are unique per server
    /// and start at 1.
    public func connect() -> EmbeddedRegistry {
        let id = state.withLock { state in
            state.lastSessionID += 1
            state.sessions[state.lastSessionID] = EmbeddedSession()
            return state.lastSessionID
        }
        return EmbeddedRegistry(server: self, session: id)
    }

    // MARK: Requests

    /// Runs one request of `session` under the lock, then calls the watchers it fired.
    func request<T: Sendable>(
        _ session: Int64, path: String?, writes: Bool,
        _ body: (inout EmbeddedServerState, EmbeddedTransaction) throws(RegistryError) -> T
    ) throws(RegistryError) -> T {
        let now = writes ? clock() : 0
        let (value, deliveries) = try state.withLock { (state) throws(RegistryError) -> (T, [EmbeddedDelivery]) in
            try state.requireConnected(session, path: path)
            let transaction = EmbeddedTransaction(zxid: state.tree.lastTransaction + 1, time: now, session: session)
            let value = try body(&state, transaction)
            return (value, state.takeDeliveries())
        }
        deliver(deliveries)
        return value
    }

    /// Runs one write that is a single operation: it validates before it changes anything, so it
    /// needs no undo log.
    func write<T: Sendable>(
        _ session: Int64, path: String,
        _ operation: (inout EmbeddedTree, EmbeddedTransaction, inout EmbeddedJournal) throws(RegistryError) -> T
    ) throws(RegistryError) -> T {
        try request(session, path: path, writes: true) { (state, transaction) throws(RegistryError) in
            var journal = EmbeddedJournal(recordsUndo: false)
            let value = try operation(&state.tree, transaction, &journal)
            state.commit(transaction, journal)
            return value
        }
    }

    /// Calls watchers, outside the lock. Whoever finds the outbox idle delivers until it is empty,
    /// so events reach watchers in commit order even when several threads write; a watcher that
    /// writes (or closes a registry) adds to the outbox and its events follow the current batch.
    func deliver(_ first: [EmbeddedDelivery]) {
        var batch = first
        while !batch.isEmpty {
            for delivery in batch { delivery.watcher(delivery.event) }
            batch = state.withLock { $0.takeNextBatch() }
        }
    }

    // MARK: Session streams

    func nextStreamToken() -> UInt64 {
        lastStreamToken.add(1, ordering: .relaxed).newValue
    }

    func removeStream(_ token: UInt64, of session: Int64) {
        // Returned so that the continuation is released after unlocking. A renewed session took
        // its predecessor's streams, so the token is looked for in every session.
        let removed = state.withLock { state -> AsyncStream<SessionState>.Continuation? in
            if let stream = state.sessions[session]?.streams.removeValue(forKey: token) { return stream }
            for id in state.sessions.keys {
                if let stream = state.sessions[id]?.streams.removeValue(forKey: token) { return stream }
            }
            return nil
        }
        _ = removed
    }

    /// Replaces an expired session with a new one that takes over its streams, and tells them.
    /// Returns the new id, or `nil` when `old` has not expired.
    func renew(_ old: Int64) -> Int64? {
        state.withLock { state in
            guard let record = state.sessions[old], record.status == .expired || record.status == .disconnected(alive: false) else {
                return nil
            }
            state.sessions.removeValue(forKey: old)
            state.lastSessionID += 1
            let renewed = state.lastSessionID
            var fresh = EmbeddedSession()
            fresh.streams = record.streams
            state.sessions[renewed] = fresh
            state.announce(.connected(sessionID: renewed), to: renewed)
            return renewed
        }
    }

    /// Ends `session` for `close()` or a dropped client: deletes its ephemeral nodes if it is
    /// still alive, drops its watches, tells its streams `.closed` and finishes them.
    func close(_ session: Int64) {
        let (deliveries, released, record) = state.withLock { state in
            guard let status = state.sessions[session]?.status else {
                return ([EmbeddedDelivery](), [EmbeddedWatch](), EmbeddedSession?.none)
            }
            let released = status.isAlive ? state.endSession(session) : []
            state.announce(.closed, to: session)
            let record = state.sessions.removeValue(forKey: session)
            return (state.takeDeliveries(), released, record)
        }
        // Released here, unlocked: a dropped watcher may hold the last reference to a registry.
        _ = released
        if let record {
            for stream in record.streams.values { stream.finish() }
        }
        deliver(deliveries)
    }
}

/// One session as the server sees it. A closed session has no record.
struct EmbeddedSession {
    enum Status: Equatable {
        case connected
        /// The connection is lost. `alive` is false once the server has expired the session; the
        /// client learns that only when it reconnects, as a ZooKeeper client does.
        case disconnected(alive: Bool)
        case expired

        var isAlive: Bool { self == .connected || self == .disconnected(alive: true) }

        func state(of session: Int64) -> SessionState {
            switch self {
            case .connected: .connected(sessionID: session)
            case .disconnected: .disconnected
            case .expired: .expired
            }
        }
    }

    var status = Status.connected
    /// Watches put aside while disconnected, and the last transaction before the disconnection.
    var stashed: [EmbeddedStashedWatch] = []
    var disconnectedAt: Int64 = 0
    var streams: [UInt64: AsyncStream<SessionState>.Continuation] = [:]
}

/// Everything the server's lock guards.
struct EmbeddedServerState {
    var tree = EmbeddedTree()
    var watches = EmbeddedWatches()
    var sessions: [Int64: EmbeddedSession] = [:]
    var lastSessionID: Int64 = 0
    /// Fired watchers not yet called, in commit order.
    var outbox: [EmbeddedDelivery] = []
    /// Whether some thread is calling watchers and will empty the outbox.
    var delivering = false

    func requireConnected(_ session: Int64, path: String?) throws(RegistryError) {
        switch sessions[session]?.status {
        case .connected?: return
        case .disconnected?: throw RegistryError(.connectionLoss, path: path)
        case .expired?: throw RegistryError(.sessionExpired, path: path)
        case nil: throw RegistryError(.closed, path: path)
        }
    }

    mutating func commit(_ transaction: EmbeddedTransaction, _ journal: EmbeddedJournal) {
        tree.commit(transaction)
        watches.trigger(journal.changes, into: &outbox)
    }

    /// The first batch to deliver after a request, or nothing when the outbox is empty or another
    /// thread is already delivering (it will deliver these too).
    mutating func takeDeliveries() -> [EmbeddedDelivery] {
        guard !delivering, !outbox.isEmpty else { return [] }
        delivering = true
        return takeOutbox()
    }

    mutating func takeNextBatch() -> [EmbeddedDelivery] {
        if outbox.isEmpty { delivering = false }
        return takeOutbox()
    }

    private mutating func takeOutbox() -> [EmbeddedDelivery] {
        var batch: [EmbeddedDelivery] = []
        swap(&batch, &outbox)
        return batch
    }

    func announce(_ change: SessionState, to session: Int64) {
        guard let streams = sessions[session]?.streams else { return }
        for stream in streams.values { stream.yield(change) }
    }

    /// Ends a live session on the server, as ZooKeeper's closeSession does: its own watches are
    /// dropped first (they never fire once it has ended), then its ephemeral nodes are deleted in
    /// one transaction, firing other sessions' watches. Returns the dropped watches, for the
    /// caller to release after unlocking.
    mutating func endSession(_ session: Int64) -> [EmbeddedWatch] {
        var dropped = watches.removeAll(of: session).map(\.watch)
        dropped += sessions[session]?.stashed.map(\.watch) ?? []
        sessions[session]?.stashed = []

        var journal = EmbeddedJournal(recordsUndo: false)
        let transaction = EmbeddedTransaction(zxid: tree.lastTransaction + 1, time: 0, session: session)
        if tree.removeEphemerals(of: session, in: transaction, journal: &journal) {
            commit(transaction, journal)
        }
        return dropped
    }

    /// Puts a session's watches aside when its connection is lost.
    mutating func stashWatches(of session: Int64) {
        let stashed = watches.removeAll(of: session).map { key, watch in
            let kind: EmbeddedStashedWatch.Kind =
                key.onChildren ? .children : tree.node(key.path) == nil ? .creation : .data
            return EmbeddedStashedWatch(kind: kind, path: key.path, watch: watch)
        }
        sessions[session]?.stashed = stashed
        sessions[session]?.disconnectedAt = tree.lastTransaction
    }

    /// Re-arms a reconnected session's watches, firing those whose node changed meanwhile, by
    /// ZooKeeper's `SetWatches` rules: a data watch fires `deleted` if the node is gone, or
    /// `dataChanged` if its data was set (or it was re-created) since; a creation watch fires
    /// `created` if the node now exists; a child watch fires `deleted` if the node is gone, or
    /// `childrenChanged` if a child was created or deleted since.
    mutating func rearmWatches(of session: Int64) {
        let stashed = sessions[session]?.stashed ?? []
        let since = sessions[session]?.disconnectedAt ?? 0
        sessions[session]?.stashed = []
        for item in stashed {
            let node = tree.node(item.path)
            let fired: WatchEvent.Kind?
            switch (item.kind, node) {
            case (.data, nil), (.children, nil): fired = .deleted
            case (.data, let node?): fired = node.modifiedTransaction > since ? .dataChanged : nil
            case (.creation, nil): fired = nil
            case (.creation, _?): fired = .created
            case (.children, let node?): fired = node.childrenTransaction > since ? .childrenChanged : nil
            }
            if let fired {
                outbox.append(EmbeddedDelivery(watcher: item.watch.watcher, event: WatchEvent(fired, item.path)))
            } else {
                watches.add(item.watch, at: EmbeddedWatchKey(path: item.path, onChildren: item.kind == .children))
            }
        }
    }
}
