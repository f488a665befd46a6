import Foundation
public import Logging
import Synchronization
public import ZooKeeper

/// The registry center over a ZooKeeper ensemble: ElasticJob's registry, shared by every host of a
/// cluster.
///
/// One ZooKeeper session serves the whole process, whatever the number of jobs. Every path of the
/// protocol lives under `/{namespace}`, as with Curator's namespace in ElasticJob, so ElasticJob's
/// own tools read the same tree.
///
/// Sessions: while the connection is lost the C client tries the servers again on its own and the
/// session lives on (`disconnected`, then `connected` with the same id). When the server expires
/// the session, this registry reports `expired` and opens a new session, retrying with a backoff
/// from `baseSleepTimeMilliseconds` doubling up to `maxSleepTimeMilliseconds`, forever; the new
/// session arrives as `connected` with another id, and the host registers again. An expiry is
/// never a shutdown.
public final class ZooKeeperRegistry: RegistryCenter {
    public let configuration: ZooKeeperConfiguration
    /// Requests sent to ZooKeeper by this process, by kind.
    public let statistics = ZooKeeperStatistics()
    private let logger: Logger
    /// `/{namespace}`: the prefix of every path sent to the server.
    private let root: String
    private let state = Mutex(State())
    private let contact = Mutex<ContinuousClock.Instant?>(nil)
    /// Stamps ``lastContact``: the monotonic time of the host's clock, so that the host measures
    /// the registry's silence on the clock it was given.
    private let clock: any SchedulerClock
    /// The registry's own tasks (each client's session events, a renewal, the heartbeat, closing a
    /// replaced client): cancelled and awaited by ``close()``.
    private let tasks = BackgroundTasks()
    private let requestMetrics = RegistryRequestMetrics()

    private struct State {
        var client: ZooKeeperClient?
        /// Raised with every new client, so that late events of a replaced one are ignored.
        var generation = 0
        var sessionID: Int64?
        var current: SessionState = .disconnected
        var subscribers: [Int: AsyncStream<SessionState>.Continuation] = [:]
        var nextSubscriber = 0
        var closed = false
        var renewals = 0
        /// The client generation whose expiry started a renewal: a second expiry event of the same
        /// client must not open a second client (it would never become current, nor be closed).
        var renewedGeneration = 0
        /// The heartbeat read still waiting for its answer: the client it went to, when, and
        /// whether its lateness was reported.
        var heartbeat: (client: ObjectIdentifier, sent: ContinuousClock.Instant, reported: Bool)?
    }

    /// A registry that failed to start.
    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Connects to the ensemble, waits for the first session and creates the namespace node.
    ///
    /// Waits up to `connectionTimeoutMilliseconds` (the C client tries every server of
    /// `serverLists` again and again meanwhile), or without end when `waitForServer` is set; a
    /// warning names the servers each time the backoff interval passes.
    /// `clock` stamps ``lastContact`` with its monotonic time: give the host's clock.
    public static func connect(
        _ configuration: ZooKeeperConfiguration, clock: any SchedulerClock = SystemClock(), logger: Logger
    ) async throws(StartError) -> ZooKeeperRegistry {
        let registry = ZooKeeperRegistry(configuration: configuration, clock: clock, logger: logger)
        do {
            try registry.openClient()
        } catch {
            throw StartError(description: "registry.zookeeper.serverLists: '\(configuration.serverLists)' is not a list of host:port: \(error)")
        }
        switch await registry.firstSession(logger: logger) {
        case .connected:
            break
        case .refused:
            throw StartError(description: "ZooKeeper at \(configuration.serverLists) refused the credentials of registry.zookeeper.digest; check the user and password")
        case .timedOut(let warnings):
            await registry.close()
            throw StartError(description: """
                cannot connect to ZooKeeper at \(configuration.serverLists): no session after \(configuration.connectionTimeoutMilliseconds) ms \
                (registry.zookeeper.connectionTimeoutMilliseconds), with the client retrying every server of serverLists throughout \
                (\(warnings) warnings logged). Check that ZooKeeper runs there and that serverLists is right; raise \
                connectionTimeoutMilliseconds, or set registry.zookeeper.waitForServer: true to keep waiting
                """)
        }
        do {
            try await registry.createNamespace()
        } catch {
            await registry.close()
            throw StartError(description: "cannot create the namespace node \(registry.root) on ZooKeeper at \(configuration.serverLists): \(error)")
        }
        registry.startHeartbeat()
        return registry
    }

    /// How the wait for the first session ended.
    private enum FirstSession: Sendable {
        case connected
        /// The server refused the credentials: the client closed.
        case refused
        case timedOut(warnings: Int)
    }

    /// Waits for the client's first session, on its session events rather than by looking: until it
    /// connects, the server refuses the credentials, or `connectionTimeoutMilliseconds` pass
    /// (never, with `waitForServer`). A warning names the servers each time the backoff interval
    /// passes.
    private func firstSession(logger: Logger) async -> FirstSession {
        let configuration = configuration
        let states = sessionStates()
        return await withTaskGroup(of: FirstSession.self) { group in
            group.addTask {
                for await state in states {
                    switch state {
                    case .connected: return .connected
                    case .closed: return .refused
                    case .disconnected, .expired: continue
                    }
                }
                return .refused
            }
            group.addTask {
                let started = ContinuousClock.now
                let deadline = configuration.waitForServer ? nil : started + .milliseconds(configuration.connectionTimeoutMilliseconds)
                var backoff = Backoff(configuration)
                var warnings = 0
                var nextWarning = started + backoff.next()
                while !Task.isCancelled {
                    let wake = deadline.map { min($0, nextWarning) } ?? nextWarning
                    try? await Task.sleep(until: wake, clock: .continuous)
                    if Task.isCancelled { break }
                    let now = ContinuousClock.now
                    if let deadline, now >= deadline { return .timedOut(warnings: warnings) }
                    if now >= nextWarning {
                        warnings += 1
                        logger.warning(
                            "registry: not connected to ZooKeeper yet; still retrying",
                            metadata: [
                                "servers": "\(configuration.serverLists)", "elapsed.seconds": "\((now - started).components.seconds)",
                                "check": "\(warnings)",
                            ])
                        nextWarning = now + backoff.next()
                    }
                }
                return .timedOut(warnings: warnings)
            }
            let first = await group.next() ?? .refused
            group.cancelAll()
            return first
        }
    }

    private init(configuration: ZooKeeperConfiguration, clock: any SchedulerClock, logger: Logger) {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.root = "/" + configuration.namespace
    }

    deinit {
        let client = state.withLock { $0.client }
        if let client { Task { await client.close() } }
    }

    // MARK: Sessions

    /// Opens a new client and follows its session events. The first client is the current one at
    /// once; a replacement becomes current when it connects.
    private func openClient() throws(ZooKeeperError) {
        let client = try ZooKeeperClient(
            servers: configuration.serverLists,
            sessionTimeout: .milliseconds(configuration.sessionTimeoutMilliseconds),
            digest: configuration.digest, logger: logger)
        let generation = state.withLock { state -> Int in
            state.generation += 1
            if state.client == nil { state.client = client }
            return state.generation
        }
        tasks.spawn("session events") { [weak self] in
            for await event in client.sessionEvents {
                guard let self else { return }
                self.handle(event, of: client, generation: generation)
            }
        }
    }

    private func handle(_ event: ZooKeeperSessionEvent, of client: ZooKeeperClient, generation: Int) {
        var publish: SessionState?
        var replaced: ZooKeeperClient?
        var renew = false
        state.withLock { state in
            guard generation == state.generation, !state.closed else { return }
            switch event {
            case .connected(let id, let timeout):
                if state.client !== client {
                    replaced = state.client
                    state.client = client
                }
                state.sessionID = id
                contact.withLock { $0 = clock.monotonicNow() }
                publish = .connected(sessionID: id)
                logger.info("registry: connected to a ZooKeeper session", metadata: [
                    "session": "\(String(id, radix: 16))", "servers": "\(configuration.serverLists)", "session.timeout": "\(timeout)",
                ])
            case .connecting:
                guard state.sessionID != nil else { return }
                publish = .disconnected
            case .expired, .authenticationFailed:
                state.sessionID = nil
                publish = .expired
                renew = state.renewedGeneration != generation
                state.renewedGeneration = generation
                if case .authenticationFailed = event {
                    logger.error("registry: ZooKeeper refused the credentials of registry.zookeeper.digest")
                }
            case .closed:
                return
            }
            if let next = publish {
                guard next != state.current else {
                    publish = nil
                    return
                }
                state.current = next
                for subscriber in state.subscribers.values { subscriber.yield(next) }
            }
        }
        if let replaced { tasks.spawn("close a replaced client") { await replaced.close() } }
        if renew { renewSession(after: client) }
    }

    /// A new session after an expiry: close the dead client and open another, with a capped backoff
    /// between attempts that fail to produce a client; forever, until the registry is closed.
    private func renewSession(after expired: ZooKeeperClient) {
        tasks.spawn("session renewal") { [weak self] in
            await expired.close()
            var backoff = Backoff(self?.configuration ?? ZooKeeperConfiguration(serverLists: "", namespace: ""))
            while let self, !self.state.withLock({ $0.closed }) {
                let attempt = self.state.withLock { state -> Int in
                    state.renewals += 1
                    return state.renewals
                }
                self.logger.warning("registry: ZooKeeper session expired; opening a new one", metadata: ["attempt": "\(attempt)"])
                do {
                    try self.openClient()
                    return
                } catch {
                    self.logger.error("registry: cannot open a ZooKeeper session", metadata: ["error": "\(LogText.escaped("\(error)"))"])
                    try? await Task.sleep(for: backoff.next())
                }
            }
        }
    }

    public var sessionID: Int64? { state.withLock { $0.sessionID } }

    /// The timeout the server granted to the current session (the requested one until connected).
    public var sessionTimeout: Duration? {
        state.withLock { $0.client }?.negotiatedTimeout ?? .milliseconds(configuration.sessionTimeoutMilliseconds)
    }

    /// The last answer or session event from ZooKeeper, on the monotonic time of the clock given
    /// to ``connect(_:clock:logger:)``. A heartbeat read every quarter of the session timeout keeps
    /// it fresh while nothing else is asked, so that a silent connection shows in it within that
    /// quarter.
    public var lastContact: ContinuousClock.Instant? { contact.withLock { $0 } }

    /// An answer to a request sent at `sent` came: the session was alive then, and nothing is known
    /// of the time since. Stamped with the send time, not the time the answer is read: an answer
    /// read late (the host was stopped with the answer in its socket, say) must not make a session
    /// that may have ended meanwhile look fresh, or an item the host no longer owns would go on.
    private func touch(since sent: ContinuousClock.Instant) {
        contact.withLock { contact in
            if contact.map({ $0 < sent }) ?? true { contact = sent }
        }
    }

    /// Whether the error is an answer from the server (so the server was heard from).
    private static func isAnswer(_ error: ZooKeeperError) -> Bool {
        switch error.code {
        case .connectionLoss, .operationTimeout, .sessionExpired, .closing, .invalidState: false
        default: true
        }
    }

    /// Sends a request: its answer, or an error the server gave, stamps the last contact with the
    /// time the request was sent (``touch(since:)``). Counted and timed by `kind` in the metrics.
    private func heard<Answer>(
        _ kind: RegistryRequestKind, _ request: () async throws(ZooKeeperError) -> Answer
    ) async throws(ZooKeeperError) -> Answer {
        let sent = clock.monotonicNow()
        do {
            let answer = try await request()
            touch(since: sent)
            requestMetrics.record(kind, .ok, elapsed: clock.monotonicNow() - sent)
            return answer
        } catch {
            let answered = Self.isAnswer(error)
            if answered { touch(since: sent) }
            requestMetrics.record(kind, answered ? .refused : .unanswered, elapsed: clock.monotonicNow() - sent)
            throw error
        }
    }

    /// ``heard(_:_:)`` for a request about `path`, its error as the registry's.
    private func heard<Answer>(
        _ kind: RegistryRequestKind, about path: String, _ request: () async throws(ZooKeeperError) -> Answer
    ) async throws(RegistryError) -> Answer {
        do {
            return try await heard(kind, request)
        } catch {
            throw map(error, path)
        }
    }

    /// A read every quarter of the session timeout, so that `lastContact` shows a silent connection
    /// soon. The loop never waits for an answer: a read that is never answered (one sent to a client
    /// as it was replaced, say) must not end the heartbeat, or a healthy session would look silent
    /// and the host fence itself again and again. At most one read is outstanding per client. The
    /// task holds the registry only while it looks: a registry dropped without `close()` still goes
    /// away.
    private func startHeartbeat() {
        tasks.spawn("heartbeat") { [weak self] in
            while !Task.isCancelled {
                guard let timeout = self?.heartbeat() else { return }
                try? await Task.sleep(for: timeout / 4)
            }
        }
    }

    /// Sends one heartbeat read unless one to the current client is still unanswered (a warning
    /// says so once, past the session timeout); `nil` once the registry is closed.
    private func heartbeat() -> Duration? {
        let timeout = sessionTimeout ?? .seconds(10)
        let now = ContinuousClock.now
        let (client, late) = state.withLock { state -> (ZooKeeperClient?, Duration?) in
            guard !state.closed, state.sessionID != nil, let client = state.client else { return (nil, nil) }
            if let pending = state.heartbeat, pending.client == ObjectIdentifier(client) {
                guard !pending.reported, now - pending.sent > timeout else { return (nil, nil) }
                state.heartbeat?.reported = true
                return (nil, now - pending.sent)
            }
            state.heartbeat = (ObjectIdentifier(client), now, false)
            return (client, nil)
        }
        if state.withLock({ $0.closed }) { return nil }
        if let late {
            logger.warning("registry: a heartbeat read has had no answer for over the session timeout", metadata: [
                "waited": "\(late)", "session.timeout": "\(timeout)",
            ])
        }
        guard let client else { return timeout }
        let sent = clock.monotonicNow()
        tasks.spawn("heartbeat read") { [weak self] in
            do throws(ZooKeeperError) {
                _ = try await client.exists("/", watch: nil)
                self?.touch(since: sent)
                self?.requestMetrics.record(.exists, .ok, elapsed: (self?.clock.monotonicNow() ?? sent) - sent)
            } catch {
                let answered = Self.isAnswer(error)
                if answered { self?.touch(since: sent) }
                self?.requestMetrics.record(.exists, answered ? .refused : .unanswered, elapsed: (self?.clock.monotonicNow() ?? sent) - sent)
            }
            self?.state.withLock { state in
                if state.heartbeat?.client == ObjectIdentifier(client) { state.heartbeat = nil }
            }
        }
        return timeout
    }

    /// The current session's credentials (see `ZooKeeperClient.sessionCredentials`).
    public var sessionCredentials: SessionCredentials? { state.withLock { $0.client }?.sessionCredentials }

    public func sessionStates() -> AsyncStream<SessionState> {
        let (stream, continuation) = AsyncStream.makeStream(of: SessionState.self, bufferingPolicy: .unbounded)
        let key = state.withLock { state -> Int? in
            continuation.yield(state.current)
            guard !state.closed else { return nil }
            let key = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[key] = continuation
            return key
        }
        if let key {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
            }
        } else {
            continuation.finish()
        }
        return stream
    }

    public func close() async {
        let (client, subscribers) = state.withLock { state -> (ZooKeeperClient?, [AsyncStream<SessionState>.Continuation]) in
            guard !state.closed else { return (nil, []) }
            state.closed = true
            state.sessionID = nil
            state.current = .closed
            defer {
                state.client = nil
                state.subscribers = [:]
            }
            return (state.client, Array(state.subscribers.values))
        }
        for subscriber in subscribers {
            subscriber.yield(.closed)
            subscriber.finish()
        }
        await client?.close()
        // The client's events have ended with it; the heartbeat and a renewal see `closed`.
        _ = await tasks.cancelAndWait(upTo: .seconds(2))
    }

    // MARK: Operations

    private func currentClient() throws(RegistryError) -> ZooKeeperClient {
        try state.withLock { state throws(RegistryError) in
            if state.closed { throw RegistryError(.closed) }
            guard let client = state.client else { throw RegistryError(.sessionExpired) }
            return client
        }
    }

    /// The server's path of a protocol path.
    private func full(_ path: String) throws(RegistryError) -> String {
        guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
        return path == "/" ? root : root + path
    }

    /// The protocol's path of a server path.
    private func relative(_ path: String) -> String {
        guard path.hasPrefix(root) else { return path }
        let rest = path.dropFirst(root.count)
        return rest.isEmpty ? "/" : String(rest)
    }

    private func map(_ error: ZooKeeperError, _ path: String) -> RegistryError {
        RegistryError(Self.code(error.code), path: path)
    }

    private static func code(_ code: ZooKeeperError.Code) -> RegistryError.Code {
        switch code {
        case .noNode: .noNode
        case .nodeExists: .nodeExists
        case .badVersion: .badVersion
        case .notEmpty: .notEmpty
        case .noChildrenForEphemerals: .noChildrenForEphemerals
        case .badArguments: .invalidPath
        case .sessionExpired, .invalidState: .sessionExpired
        case .connectionLoss, .operationTimeout: .connectionLoss
        case .noAuth, .authFailed: .noAuth
        case .closing: .closed
        case .other(let rc): .other("ZooKeeper error \(rc)")
        }
    }

    private static func mode(_ mode: CreateMode) -> ZooKeeperCreateMode {
        switch mode {
        case .persistent: .persistent
        case .ephemeral: .ephemeral
        case .persistentSequential: .persistentSequential
        case .ephemeralSequential: .ephemeralSequential
        }
    }

    private static func stat(_ stat: ZooKeeperStat) -> NodeStat {
        NodeStat(
            createdTransaction: stat.czxid, modifiedTransaction: stat.mzxid, createdTime: stat.ctime,
            modifiedTime: stat.mtime, version: stat.version, childrenVersion: stat.cversion,
            ephemeralOwner: stat.ephemeralOwner, dataLength: stat.dataLength, childCount: stat.numChildren)
    }

    /// A protocol watcher as the client's: the event names the protocol's path.
    private static func watcher(_ watch: Watcher?, _ path: String) -> ZooKeeperWatcher? {
        guard let watch else { return nil }
        return { event in
            let kind: WatchEvent.Kind = switch event.kind {
            case .created: .created
            case .deleted: .deleted
            case .dataChanged: .dataChanged
            case .childrenChanged: .childrenChanged
            }
            watch(WatchEvent(kind, path))
        }
    }

    @discardableResult
    public func create(_ path: String, data: [UInt8], mode: CreateMode) async throws(RegistryError) -> String {
        let full = try full(path)
        statistics.count(\.creates)
        let client = try currentClient()
        let created = try await heard(.create, about: path) { () async throws(ZooKeeperError) in
            try await client.create(full, data: data, mode: Self.mode(mode))
        }
        return relative(created)
    }

    public func delete(_ path: String, version: Int32?) async throws(RegistryError) {
        guard path != "/" else { throw RegistryError(.invalidPath, path: path) }
        let full = try full(path)
        statistics.count(\.deletes)
        let client = try currentClient()
        try await heard(.delete, about: path) { () async throws(ZooKeeperError) in
            try await client.delete(full, version: version)
        }
    }

    @discardableResult
    public func setData(_ path: String, data: [UInt8], version: Int32?) async throws(RegistryError) -> NodeStat {
        let full = try full(path)
        statistics.count(\.sets)
        let client = try currentClient()
        let stat = try await heard(.set, about: path) { () async throws(ZooKeeperError) in
            try await client.setData(full, data: data, version: version)
        }
        return Self.stat(stat)
    }

    public func data(_ path: String, watch: Watcher?) async throws(RegistryError) -> (data: [UInt8], stat: NodeStat) {
        let full = try full(path)
        statistics.count(\.reads)
        let client = try currentClient()
        let (bytes, stat) = try await heard(.get, about: path) { () async throws(ZooKeeperError) in
            try await client.data(full, watch: Self.watcher(watch, path))
        }
        return (bytes, Self.stat(stat))
    }

    public func exists(_ path: String, watch: Watcher?) async throws(RegistryError) -> NodeStat? {
        let full = try full(path)
        statistics.count(\.reads)
        let client = try currentClient()
        let stat = try await heard(.exists, about: path) { () async throws(ZooKeeperError) in
            try await client.exists(full, watch: Self.watcher(watch, path))
        }
        return stat.map(Self.stat)
    }

    public func children(_ path: String, watch: Watcher?) async throws(RegistryError) -> [String] {
        let full = try full(path)
        statistics.count(\.reads)
        let client = try currentClient()
        return try await heard(.children, about: path) { () async throws(ZooKeeperError) in
            try await client.children(full, watch: Self.watcher(watch, path))
        }
    }

    @discardableResult
    public func multi(_ operations: [RegistryOperation]) async throws(RegistryError) -> [RegistryOperationResult] {
        guard !operations.isEmpty else { return [] }
        var translated: [ZooKeeperOperation] = []
        translated.reserveCapacity(operations.count)
        for (index, operation) in operations.enumerated() {
            guard RegistryPath.isValid(operation.path) else {
                throw RegistryError(.transactionFailed(index: index, underlying: .invalidPath), path: operation.path)
            }
            let full = try full(operation.path)
            switch operation {
            case .create(_, let data, let mode): translated.append(.create(full, data: data, mode: Self.mode(mode)))
            case .delete(_, let version): translated.append(.delete(full, version: version))
            case .setData(_, let data, let version): translated.append(.setData(full, data: data, version: version))
            case .check(_, let version): translated.append(.check(full, version: version))
            }
        }
        statistics.count(\.multis)
        statistics.count(\.multiOperations, by: operations.count)
        let client = try currentClient()
        do {
            let results = try await heard(.multi) { () async throws(ZooKeeperError) in try await client.multi(translated) }
            return results.map { result in
                switch result {
                case .created(let path): .created(path: relative(path))
                case .deleted: .deleted
                case .set(let stat): .set(Self.stat(stat))
                case .checked: .checked
                }
            }
        } catch {
            if let index = error.failedOperation {
                throw RegistryError(.transactionFailed(index: index, underlying: Self.code(error.code)), path: operations[index].path)
            }
            throw RegistryError(Self.code(error.code))
        }
    }

    /// Creates `/{namespace}` (and its parents) when missing, as Curator does for a namespace.
    /// Creates `/{namespace}` when it is missing: an operator deleted it while the hosts ran.
    public func ensureNamespace() async throws(RegistryError) {
        do {
            try await createNamespace()
        } catch {
            throw map(error, "/")
        }
    }

    private func createNamespace() async throws(ZooKeeperError) {
        var path = ""
        for segment in root.split(separator: "/") {
            path += "/" + segment
            guard let client = state.withLock({ $0.client }) else { throw ZooKeeperError(returnCode: -112, path: path) }
            do {
                try await client.create(path, data: [], mode: .persistent)
            } catch {
                if error.code != .nodeExists { throw error }
            }
        }
    }
}

/// The requests a `ZooKeeperRegistry` sent, counted on the client side. Each create, delete,
/// setData and multi is one write transaction on the server; reads do not write.
public final class ZooKeeperStatistics: Sendable {
    public struct Counts: Sendable, Equatable {
        public var reads = 0
        public var creates = 0
        public var deletes = 0
        public var sets = 0
        public var multis = 0
        public var multiOperations = 0
        /// Write requests: each is one transaction on the server (a multi is one, whatever its size).
        public var writes: Int { creates + deletes + sets + multis }
    }

    private let counts = Mutex(Counts())

    func count(_ field: WritableKeyPath<Counts, Int>, by amount: Int = 1) {
        counts.withLock { $0[keyPath: field] += amount }
    }

    public var snapshot: Counts { counts.withLock { $0 } }
}

/// Capped exponential backoff: base, then doubled each time, up to the maximum.
struct Backoff {
    private var next_: Int
    private let maximum: Int

    init(_ configuration: ZooKeeperConfiguration) {
        next_ = max(configuration.baseSleepTimeMilliseconds, 1)
        maximum = max(configuration.maxSleepTimeMilliseconds, next_)
    }

    mutating func next() -> Duration {
        defer {
            let doubled = next_.multipliedReportingOverflow(by: 2)
            next_ = doubled.overflow ? maximum : min(doubled.partialValue, maximum)
        }
        return .milliseconds(next_)
    }
}
