import Synchronization

/// The registry center in process: one session of an `EmbeddedRegistryServer`, with ZooKeeper's
/// semantics, for a single host (`standalone()`) or for tests that play several hosts on one
/// server.
///
/// Every call completes without suspending. Beyond the protocol, `expire()`, `disconnect()` and
/// `reconnect()` let tests and operations play what a ZooKeeper cluster does to a session.
///
/// Where ZooKeeper's behaviour is finer than the protocol's words, this follows ZooKeeper:
/// - `childrenVersion` rises with every child created or deleted, but a sequential name takes the
///   number of children ever created under the parent, which is what ZooKeeper stores as the
///   cversion (it reports `2 * creations - childCount`). After deletions the two differ: with
///   `job-0000000000` and `job-0000000001` created and one deleted, the parent's
///   `childrenVersion` is 3 and the next name is `job-0000000002`.
/// - A version of -1, like `nil`, means any version.
/// - All operations of one `multi`, and all ephemeral deletions of one ended session, share one
///   transaction id. Only writes that succeed take a transaction id (ZooKeeper also spends one on
///   refused writes and on opening and closing sessions; nothing here depends on the gaps).
/// - A watch fires at most once, after the write that triggered it has been applied in full; in a
///   `multi` it fires for the first change that concerned it, as ZooKeeper applies a multi's
///   operations in order.
/// - While disconnected, the session's watches wait; on reconnection those whose node changed
///   meanwhile fire once, judged against the tree as it is then (ZooKeeper's `SetWatches`).
///
/// Dropping the last reference to a registry closes its session.
public final class EmbeddedRegistry: RegistryCenter {
    /// The server this session belongs to; `server.connect()` opens another session on the same
    /// tree.
    public let server: EmbeddedRegistryServer
    /// The current session's id: it changes only when `renewSession()` follows an expiry.
    private let sessionNumber: Atomic<Int64>
    private var session: Int64 { sessionNumber.load(ordering: .acquiring) }

    init(server: EmbeddedRegistryServer, session: Int64) {
        self.server = server
        self.sessionNumber = Atomic(session)
    }

    deinit {
        server.close(session)
    }

    /// A new server with one session: the registry of a host that runs alone.
    public static func standalone() -> EmbeddedRegistry {
        EmbeddedRegistryServer().connect()
    }

    // MARK: RegistryCenter

    /// Creates a node; see `RegistryCenter.create`. Errors carry the requested path. The result
    /// may be ignored here: only sequential modes change the path.
    @discardableResult
    public func create(_ path: String, data: [UInt8], mode: CreateMode) async throws(RegistryError) -> String {
        try server.write(session, path: path) { (tree, transaction, journal) throws(RegistryError) in
            try tree.create(path, data: data, mode: mode, in: transaction, journal: &journal)
        }
    }

    /// Deletes a childless node; deleting the root throws `.invalidPath`.
    public func delete(_ path: String, version: Int32?) async throws(RegistryError) {
        try server.write(session, path: path) { (tree, transaction, journal) throws(RegistryError) in
            try tree.delete(path, version: version, in: transaction, journal: &journal)
        }
    }

    /// Replaces a node's data and returns its new stat.
    @discardableResult
    public func setData(_ path: String, data: [UInt8], version: Int32?) async throws(RegistryError) -> NodeStat {
        try server.write(session, path: path) { (tree, transaction, journal) throws(RegistryError) in
            try tree.setData(path, data: data, version: version, in: transaction, journal: &journal)
        }
    }

    /// A node's data and stat. A watch is set only when the node exists, as in ZooKeeper.
    public func data(_ path: String, watch: Watcher?) async throws(RegistryError) -> (data: [UInt8], stat: NodeStat) {
        let session = session
        return try server.request(session, path: path, writes: false) { (state, _) throws(RegistryError) in
            guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
            guard let node = state.tree.node(path) else { throw RegistryError(.noNode, path: path) }
            if let watch {
                state.watches.add(
                    EmbeddedWatch(session: session, watcher: watch), at: EmbeddedWatchKey(path: path, onChildren: false))
            }
            return (node.data, node.stat)
        }
    }

    /// A node's stat or `nil`. The watch is set either way: on a missing node it waits for the
    /// creation.
    public func exists(_ path: String, watch: Watcher?) async throws(RegistryError) -> NodeStat? {
        let session = session
        return try server.request(session, path: path, writes: false) { (state, _) throws(RegistryError) in
            guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
            if let watch {
                state.watches.add(
                    EmbeddedWatch(session: session, watcher: watch), at: EmbeddedWatchKey(path: path, onChildren: false))
            }
            return state.tree.node(path)?.stat
        }
    }

    /// The names of a node's children. A watch is set only when the node exists.
    public func children(_ path: String, watch: Watcher?) async throws(RegistryError) -> [String] {
        let session = session
        return try server.request(session, path: path, writes: false) { (state, _) throws(RegistryError) in
            guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
            guard let node = state.tree.node(path) else { throw RegistryError(.noNode, path: path) }
            if let watch {
                state.watches.add(
                    EmbeddedWatch(session: session, watcher: watch), at: EmbeddedWatchKey(path: path, onChildren: true))
            }
            return Array(node.children)
        }
    }

    /// Applies `operations` in order against the tree as the earlier ones left it, all in one
    /// transaction, or none of them: the first refusal undoes the earlier operations and throws
    /// `.transactionFailed(index:underlying:)` with that operation's path. An empty `multi` is
    /// not a transaction and returns no results.
    @discardableResult
    public func multi(_ operations: [RegistryOperation]) async throws(RegistryError) -> [RegistryOperationResult] {
        try server.request(session, path: nil, writes: true) { (state, transaction) throws(RegistryError) in
            guard !operations.isEmpty else { return [] }
            var journal = EmbeddedJournal(recordsUndo: true)
            var results: [RegistryOperationResult] = []
            results.reserveCapacity(operations.count)
            for (index, operation) in operations.enumerated() {
                do throws(RegistryError) {
                    results.append(try state.tree.apply(operation, in: transaction, journal: &journal))
                } catch {
                    state.tree.rollBack(journal)
                    throw RegistryError(.transactionFailed(index: index, underlying: error.code), path: error.path)
                }
            }
            state.commit(transaction, journal)
            return results
        }
    }

    /// The session id while the session is connected or disconnected (a disconnected session may
    /// still be alive, and this client cannot know otherwise until it reconnects); `nil` once it
    /// has expired or been closed.
    public var sessionID: Int64? {
        let session = session
        return server.state.withLock { state in
            switch state.sessions[session]?.status {
            case .connected?, .disconnected?: session
            case .expired?, nil: nil
            }
        }
    }

    /// A new stream of this session's states: the current one (`.connected(sessionID:)` while
    /// connected), then every change. It finishes after `.closed`. An expired session's streams
    /// stay open until `close()`, since this registry does not open a new session by itself.
    public func sessionStates() -> AsyncStream<SessionState> {
        let session = session
        let (stream, continuation) = AsyncStream.makeStream(of: SessionState.self)
        let token = server.nextStreamToken()
        continuation.onTermination = { [weak server] _ in server?.removeStream(token, of: session) }
        let open = server.state.withLock { state in
            guard let status = state.sessions[session]?.status else {
                continuation.yield(.closed)
                return false
            }
            // Yielded under the lock, so that no change can overtake the current state.
            continuation.yield(status.state(of: session))
            state.sessions[session]?.streams[token] = continuation
            return true
        }
        if !open { continuation.finish() }
        return stream
    }

    /// Ends the session: its ephemeral nodes are deleted (firing other sessions' watches), its own
    /// watches are dropped, its streams get `.closed` and finish, and later calls throw `.closed`.
    /// Closing while disconnected ends the session on the server at once (a ZooKeeper session
    /// would linger until its timeout).
    public func close() async {
        server.close(session)
    }

    // MARK: What the cluster does to a session

    /// Expires the session, as the server does when a session times out: its ephemeral nodes are
    /// deleted (firing other sessions' watches) and its pending watches are dropped at once. A
    /// connected client learns it now (`.expired` on its streams; later calls throw
    /// `.sessionExpired`); a disconnected one when it reconnects.
    public func expire() {
        let session = session
        let (deliveries, released) = server.state.withLock { state in
            var released: [EmbeddedWatch] = []
            switch state.sessions[session]?.status {
            case .connected?:
                released = state.endSession(session)
                state.sessions[session]?.status = .expired
                state.announce(.expired, to: session)
            case .disconnected(alive: true)?:
                released = state.endSession(session)
                state.sessions[session]?.status = .disconnected(alive: false)
            case .disconnected(alive: false)?, .expired?, nil:
                break
            }
            return (state.takeDeliveries(), released)
        }
        // Released here, unlocked: a dropped watcher may hold the last reference to a registry.
        _ = released
        server.deliver(deliveries)
    }

    /// After the session expired, continues with a new one, as `ZooKeeperRegistry` does by itself:
    /// the streams get `.connected` with the new id and calls work again. Nothing of the old session
    /// carries over (its ephemeral nodes and watches are gone). Does nothing while the session lives.
    public func renewSession() {
        if let renewed = server.renew(session) {
            sessionNumber.store(renewed, ordering: .releasing)
        }
    }

    /// Loses the connection without losing the session: streams get `.disconnected`, calls throw
    /// `.connectionLoss` and apply nothing, ephemeral nodes stay, and watches wait for
    /// `reconnect()`.
    public func disconnect() {
        let session = session
        server.state.withLock { state in
            guard state.sessions[session]?.status == .connected else { return }
            state.sessions[session]?.status = .disconnected(alive: true)
            state.stashWatches(of: session)
            state.announce(.disconnected, to: session)
        }
    }

    /// Restores the connection. If the session survived, streams get `.connected` with the same
    /// id and the watches that missed a change fire; if it expired meanwhile, streams get
    /// `.expired` and later calls throw `.sessionExpired`.
    public func reconnect() {
        let session = session
        let deliveries = server.state.withLock { state in
            switch state.sessions[session]?.status {
            case .disconnected(alive: true)?:
                state.sessions[session]?.status = .connected
                state.announce(.connected(sessionID: session), to: session)
                state.rearmWatches(of: session)
            case .disconnected(alive: false)?:
                state.sessions[session]?.status = .expired
                state.announce(.expired, to: session)
            case .connected?, .expired?, nil:
                break
            }
            return state.takeDeliveries()
        }
        server.deliver(deliveries)
    }
}
