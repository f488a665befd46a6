import CZooKeeper
import Foundation
public import Logging
import Synchronization

/// One ZooKeeper session over the C client (`libzookeeper_mt`).
///
/// Every operation is asynchronous: it is queued with the C client's `zoo_a*` call and resumed from
/// its completion thread, so no Swift thread ever blocks on the network. Watches are one-shot
/// callbacks (or, with the `…Watch` methods, a sequence of one event). Session changes arrive on
/// `sessionEvents`, starting with the first `connected`.
///
/// The C client connects, and reconnects after a lost connection, on its own, trying the servers
/// of the connection string in turn. An expired session cannot be revived: the client reports
/// `.expired`, fails every later request with `.invalidState`, and a new client must be opened.
public final class ZooKeeperClient: Sendable {
    /// Session events, for one consumer.
    public let sessionEvents: AsyncStream<ZooKeeperSessionEvent>
    /// The connection string: `host:port,host:port` (a `/chroot` suffix is allowed, as the C client
    /// allows it).
    public let servers: String
    private let core: ClientCore
    private let acl: AclChoice

    private enum AclChoice { case open, creatorOnly }

    /// Starts connecting; returns at once. With a `digest` (`user:password`), the client
    /// authenticates with it and creates every node readable and writable by that user only
    /// (ZooKeeper's CREATOR_ALL_ACL).
    ///
    /// With `resuming`, the client asks for that existing session (ZooKeeper's session resumption)
    /// instead of a new one: the server expires the request when the session is gone.
    public init(
        servers: String, sessionTimeout: Duration, digest: String? = nil, resuming: SessionCredentials? = nil, logger: Logger
    ) throws(ZooKeeperError) {
        let (stream, continuation) = AsyncStream.makeStream(of: ZooKeeperSessionEvent.self, bufferingPolicy: .unbounded)
        self.sessionEvents = stream
        self.servers = servers
        self.core = ClientCore(events: continuation, logger: logger)
        self.acl = digest == nil ? .open : .creatorOnly
        clientLog.withLock { current in
            if current == nil { current = logger }
        }
        zoo_set_debug_level(ZOO_LOG_LEVEL_WARN)

        let timeout = sessionTimeout.components
        let milliseconds = Int32(clamping: timeout.seconds * 1000 + timeout.attoseconds / 1_000_000_000_000_000)
        let context = Unmanaged.passRetained(core).toOpaque()
        var clientID = clientid_t()
        if let resuming {
            clientID.client_id = resuming.sessionID
            withUnsafeMutableBytes(of: &clientID.passwd) { buffer in
                for (index, byte) in resuming.password.prefix(buffer.count).enumerated() { buffer[index] = byte }
            }
        }
        let zh = withUnsafePointer(to: &clientID) { id in
            zookeeper_init2(servers, sessionWatcher, milliseconds, resuming == nil ? nil : id, context, ZOO_NO_LOG_CLIENTENV, logCallback)
        }
        guard let zh else {
            Unmanaged<ClientCore>.fromOpaque(context).release()
            continuation.finish()
            throw ZooKeeperError(returnCode: ZBADARGUMENTS.rawValue, path: servers)
        }
        core.state.withLock { $0.handle = Handle(pointer: zh) }
        if let digest {
            let bytes = Array(digest.utf8)
            let rc = bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) {
                    zoo_add_auth(zh, "digest", $0.baseAddress, Int32($0.count), ignoreCompletion, nil)
                }
            }
            if rc != ZOK.rawValue {
                core.logger.error("ZooKeeper: cannot queue the digest authentication", metadata: ["error": "\(String(cString: zerror(rc)))"])
            }
        }
    }

    deinit {
        guard let handle = core.beginClose() else { return }
        let core = core
        Thread { Self.closeHandle(handle, core: core) }.start()
    }

    /// The current session's id, while connected or reconnecting; `nil` before the first connection
    /// and after expiry or close.
    public var sessionID: Int64? { core.state.withLock { $0.sessionID } }

    /// The session's id and password, once connected: another client can resume the session with
    /// them (which is also how a test forces an expiry: resume the session elsewhere and close it).
    public var sessionCredentials: SessionCredentials? {
        core.withHandle { handle -> SessionCredentials? in
            guard let handle, let id = zoo_client_id(handle.pointer), id.pointee.client_id != 0 else { return nil }
            var password = id.pointee.passwd
            let bytes = withUnsafeBytes(of: &password) { Array($0) }
            return SessionCredentials(sessionID: id.pointee.client_id, password: bytes)
        }
    }

    /// The session timeout the server granted (it bounds the requested one by its own minimum and
    /// maximum), once connected.
    public var negotiatedTimeout: Duration? { core.state.withLock { $0.timeout } }

    /// Ends the session (its ephemeral nodes are deleted at once) and stops the client's threads.
    /// Outstanding requests fail with `.closing`; later ones too.
    public func close() async {
        guard let handle = core.beginClose() else { return }
        let core = core
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            // zookeeper_close joins the client's threads: never on a Swift cooperative thread.
            Thread {
                Self.closeHandle(handle, core: core)
                done.resume()
            }.start()
        }
    }

    private static func closeHandle(_ handle: Handle, core: ClientCore) {
        zookeeper_close(handle.pointer)
        core.finishClose()
        Unmanaged.passUnretained(core).release()
    }

    private var aclPointer: UnsafeMutablePointer<ACL_vector> {
        switch acl {
        case .open: shardwork_zk_open_acl_unsafe()
        case .creatorOnly: shardwork_zk_creator_all_acl()
        }
    }

    // MARK: Operations

    /// Creates a node and returns its path (with the sequence number for sequential modes).
    @discardableResult
    public func create(_ path: String, data: [UInt8], mode: ZooKeeperCreateMode) async throws(ZooKeeperError) -> String {
        let acl = aclPointer
        let (rc, payload) = await submit { zh, request in
            withBytes(data) { bytes, count in
                zoo_acreate(zh, path, bytes, count, acl, mode.flags, stringCompletion, request)
            }
        }
        guard rc == ZOK.rawValue, case .path(let created) = payload else { throw ZooKeeperError(returnCode: rc, path: path) }
        return created
    }

    /// Deletes a childless node; with a `version`, only at that version.
    public func delete(_ path: String, version: Int32?) async throws(ZooKeeperError) {
        let (rc, _) = await submit { zh, request in
            zoo_adelete(zh, path, version ?? -1, voidCompletion, request)
        }
        guard rc == ZOK.rawValue else { throw ZooKeeperError(returnCode: rc, path: path) }
    }

    /// Replaces a node's data and returns its new stat.
    @discardableResult
    public func setData(_ path: String, data: [UInt8], version: Int32?) async throws(ZooKeeperError) -> ZooKeeperStat {
        let (rc, payload) = await submit { zh, request in
            withBytes(data) { bytes, count in
                zoo_aset(zh, path, bytes, count, version ?? -1, statCompletion, request)
            }
        }
        guard rc == ZOK.rawValue, case .stat(let stat?) = payload else { throw ZooKeeperError(returnCode: rc, path: path) }
        return stat
    }

    /// A node's data and stat. A `watch` is set only when the node exists (as in ZooKeeper), and
    /// fires on its next data change or deletion.
    public func data(_ path: String, watch: ZooKeeperWatcher? = nil) async throws(ZooKeeperError) -> (data: [UInt8], stat: ZooKeeperStat) {
        try await data(path, watch: watch.map { ClientCore.Watch(fire: $0, abandon: nil) })
    }

    /// A node's stat, or `nil` when it does not exist. A `watch` is set either way and fires on the
    /// node's next creation, data change or deletion.
    public func exists(_ path: String, watch: ZooKeeperWatcher? = nil) async throws(ZooKeeperError) -> ZooKeeperStat? {
        try await exists(path, watch: watch.map { ClientCore.Watch(fire: $0, abandon: nil) })
    }

    /// The names of a node's children, in the server's order. A `watch` fires when a child is
    /// created or deleted, or the node is deleted.
    public func children(_ path: String, watch: ZooKeeperWatcher? = nil) async throws(ZooKeeperError) -> [String] {
        try await children(path, watch: watch.map { ClientCore.Watch(fire: $0, abandon: nil) })
    }

    func data(_ path: String, watch: ClientCore.Watch?) async throws(ZooKeeperError) -> (data: [UInt8], stat: ZooKeeperStat) {
        let token = watch.map(core.register)
        let (rc, payload) = await submit { zh, request in
            zoo_awget(zh, path, token == nil ? nil : pathWatcher, token.map { UnsafeMutableRawPointer(bitPattern: $0) } ?? nil,
                      dataCompletion, request)
        }
        guard rc == ZOK.rawValue, case .data(let bytes, let stat) = payload else {
            if let token { core.unregister(token) }
            throw ZooKeeperError(returnCode: rc, path: path)
        }
        return (bytes, stat)
    }

    func exists(_ path: String, watch: ClientCore.Watch?) async throws(ZooKeeperError) -> ZooKeeperStat? {
        let token = watch.map(core.register)
        let (rc, payload) = await submit { zh, request in
            zoo_awexists(zh, path, token == nil ? nil : pathWatcher, token.map { UnsafeMutableRawPointer(bitPattern: $0) } ?? nil,
                         statCompletion, request)
        }
        if rc == ZNONODE.rawValue { return nil }
        guard rc == ZOK.rawValue, case .stat(let stat) = payload else {
            if let token { core.unregister(token) }
            throw ZooKeeperError(returnCode: rc, path: path)
        }
        return stat
    }

    func children(_ path: String, watch: ClientCore.Watch?) async throws(ZooKeeperError) -> [String] {
        let token = watch.map(core.register)
        let (rc, payload) = await submit { zh, request in
            zoo_awget_children(zh, path, token == nil ? nil : pathWatcher, token.map { UnsafeMutableRawPointer(bitPattern: $0) } ?? nil,
                               stringsCompletion, request)
        }
        guard rc == ZOK.rawValue, case .children(let names) = payload else {
            if let token { core.unregister(token) }
            throw ZooKeeperError(returnCode: rc, path: path)
        }
        return names
    }

    /// Applies the operations atomically: all of them, or none. A failure names the index of the
    /// operation that failed.
    @discardableResult
    public func multi(_ operations: [ZooKeeperOperation]) async throws(ZooKeeperError) -> [ZooKeeperOperationResult] {
        guard !operations.isEmpty else { return [] }
        let storage = MultiStorage(operations, acl: aclPointer)
        let (rc, payload) = await submit(
            { zh, request in
                zoo_amulti(zh, Int32(operations.count), storage.ops, storage.results, voidCompletion, request)
            },
            finish: { rc in .multi(storage.read(rc, operations)) })
        guard case .multi(let outcome) = payload else { throw ZooKeeperError(returnCode: rc) }
        switch outcome {
        case .success(let results): return results
        case .failure(let error): throw error
        }
    }

    /// Queues one request. `call` gets the handle and the request's context pointer, and returns the
    /// C client's immediate return code; on anything but `ZOK` the completion will never run and
    /// the request ends here with that code.
    private func submit(
        _ call: (OpaquePointer, UnsafeRawPointer) -> Int32, finish: (@Sendable (Int32) -> Payload)? = nil
    ) async -> (Int32, Payload) {
        await withCheckedContinuation { continuation in
            let request = Request(continuation, finish: finish)
            let context = UnsafeRawPointer(Unmanaged.passRetained(request).toOpaque())
            let rc = core.withHandle { handle in handle.map { call($0.pointer, context) } ?? ZCLOSING.rawValue }
            if rc != ZOK.rawValue {
                Unmanaged<Request>.fromOpaque(context).release()
                request.continuation.resume(returning: (rc, .none))
            }
        }
    }
}

// MARK: Watches as sequences

extension ZooKeeperClient {
    /// A node's data, and its next change as a sequence of at most one event. The sequence ends
    /// without an event when the watch can no longer fire (session expired, client closed).
    public func dataWatch(_ path: String) async throws(ZooKeeperError)
        -> (data: [UInt8], stat: ZooKeeperStat, change: AsyncStream<ZooKeeperWatchEvent>)
    {
        let (stream, watch) = Self.oneShot()
        let (bytes, stat) = try await data(path, watch: watch)
        return (bytes, stat, stream)
    }

    /// A node's stat (`nil` when missing), and its next creation, change or deletion.
    public func existsWatch(_ path: String) async throws(ZooKeeperError)
        -> (stat: ZooKeeperStat?, change: AsyncStream<ZooKeeperWatchEvent>)
    {
        let (stream, watch) = Self.oneShot()
        return (try await exists(path, watch: watch), stream)
    }

    /// A node's children, and the next change of that list.
    public func childrenWatch(_ path: String) async throws(ZooKeeperError)
        -> (children: [String], change: AsyncStream<ZooKeeperWatchEvent>)
    {
        let (stream, watch) = Self.oneShot()
        return (try await children(path, watch: watch), stream)
    }

    private static func oneShot() -> (AsyncStream<ZooKeeperWatchEvent>, ClientCore.Watch) {
        let (stream, continuation) = AsyncStream.makeStream(of: ZooKeeperWatchEvent.self)
        let watch = ClientCore.Watch(
            fire: { event in
                continuation.yield(event)
                continuation.finish()
            },
            abandon: { continuation.finish() })
        return (stream, watch)
    }
}

// MARK: Requests and completions

enum Payload: Sendable {
    case none
    case path(String)
    case stat(ZooKeeperStat?)
    case data([UInt8], ZooKeeperStat)
    case children([String])
    case multi(Result<[ZooKeeperOperationResult], ZooKeeperError>)
}

/// One outstanding request: retained as the completion's `data` and released by the completion,
/// which the C client calls exactly once for every request it accepted.
final class Request: @unchecked Sendable {
    let continuation: CheckedContinuation<(Int32, Payload), Never>
    let finish: (@Sendable (Int32) -> Payload)?

    init(_ continuation: CheckedContinuation<(Int32, Payload), Never>, finish: (@Sendable (Int32) -> Payload)?) {
        self.continuation = continuation
        self.finish = finish
    }

    static func take(_ data: UnsafeRawPointer?) -> Request {
        Unmanaged<Request>.fromOpaque(data!).takeRetainedValue()
    }
}

let ignoreCompletion: void_completion_t = { _, _ in }

let voidCompletion: void_completion_t = { rc, data in
    let request = Request.take(data)
    request.continuation.resume(returning: (rc, request.finish?(rc) ?? .none))
}

let stringCompletion: string_completion_t = { rc, value, data in
    Request.take(data).continuation.resume(returning: (rc, value.map { .path(String(cString: $0)) } ?? .none))
}

let statCompletion: stat_completion_t = { rc, stat, data in
    Request.take(data).continuation.resume(returning: (rc, .stat(stat.map { ZooKeeperStat($0.pointee) })))
}

let dataCompletion: data_completion_t = { rc, value, length, stat, data in
    var bytes: [UInt8] = []
    if let value, length > 0 {
        bytes = Array(UnsafeRawBufferPointer(start: value, count: Int(length)))
    }
    let payload: Payload = stat.map { .data(bytes, ZooKeeperStat($0.pointee)) } ?? .none
    Request.take(data).continuation.resume(returning: (rc, payload))
}

let stringsCompletion: strings_completion_t = { rc, strings, data in
    var names: [String] = []
    if let vector = strings?.pointee, let items = vector.data {
        names.reserveCapacity(Int(vector.count))
        for index in 0..<Int(vector.count) {
            if let name = items[index] { names.append(String(cString: name)) }
        }
    }
    Request.take(data).continuation.resume(returning: (rc, .children(names)))
}

/// Calls `body` with a pointer to `data` (never null, even when empty, so that the node gets empty
/// data rather than none) and its length.
func withBytes<R>(_ data: [UInt8], _ body: (UnsafePointer<CChar>, Int32) -> R) -> R {
    if data.isEmpty {
        var zero: CChar = 0
        return body(&zero, 0)
    }
    return data.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, Int32($0.count)) }
    }
}

/// The C memory of one multi: operations, their paths and data, create path buffers, set stats and
/// results. It lives until the completion has read the results.
final class MultiStorage: @unchecked Sendable {
    let ops: UnsafeMutablePointer<zoo_op_t>
    let results: UnsafeMutablePointer<zoo_op_result_t>
    private var allocations: [UnsafeMutableRawPointer] = []
    private let count: Int

    init(_ operations: [ZooKeeperOperation], acl: UnsafeMutablePointer<ACL_vector>) {
        count = operations.count
        ops = .allocate(capacity: count)
        results = .allocate(capacity: count)
        results.initialize(repeating: zoo_op_result_t(), count: count)
        for (index, operation) in operations.enumerated() {
            let op = ops + index
            switch operation {
            case .create(let path, let data, let mode):
                let capacity = path.utf8.count + 32
                let buffer = allocate(capacity)
                zoo_create_op_init(op, string(path), bytes(data), Int32(data.count), acl, mode.flags,
                                   buffer.assumingMemoryBound(to: CChar.self), Int32(capacity))
            case .delete(let path, let version):
                zoo_delete_op_init(op, string(path), version ?? -1)
            case .setData(let path, let data, let version):
                let stat = allocate(MemoryLayout<Stat>.stride).assumingMemoryBound(to: Stat.self)
                zoo_set_op_init(op, string(path), bytes(data), Int32(data.count), version ?? -1, stat)
            case .check(let path, let version):
                zoo_check_op_init(op, string(path), version ?? -1)
            }
        }
    }

    deinit {
        for allocation in allocations { allocation.deallocate() }
        ops.deallocate()
        results.deallocate()
    }

    private func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(size, 1))
        allocations.append(pointer)
        return pointer
    }

    private func string(_ text: String) -> UnsafePointer<CChar> {
        let utf8 = Array(text.utf8CString)
        let pointer = allocate(utf8.count)
        utf8.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return UnsafePointer(pointer.assumingMemoryBound(to: CChar.self))
    }

    private func bytes(_ data: [UInt8]) -> UnsafePointer<CChar> {
        let pointer = allocate(data.count)
        data.withUnsafeBytes { if let base = $0.baseAddress { pointer.copyMemory(from: base, byteCount: $0.count) } }
        return UnsafePointer(pointer.assumingMemoryBound(to: CChar.self))
    }

    /// The outcome, read on the completion thread while the memory is still alive. When the multi
    /// failed, the operations before the failing one report success and those after it
    /// `ZRUNTIMEINCONSISTENCY`; the first other error is the cause.
    func read(_ rc: Int32, _ operations: [ZooKeeperOperation]) -> Result<[ZooKeeperOperationResult], ZooKeeperError> {
        guard rc == ZOK.rawValue else {
            for index in 0..<count {
                let err = results[index].err
                if err != ZOK.rawValue && err != ZRUNTIMEINCONSISTENCY.rawValue {
                    return .failure(ZooKeeperError(returnCode: err, path: operations[index].path, failedOperation: index))
                }
            }
            return .failure(ZooKeeperError(returnCode: rc))
        }
        var outcome: [ZooKeeperOperationResult] = []
        outcome.reserveCapacity(count)
        for (index, operation) in operations.enumerated() {
            let result = results[index]
            switch operation {
            case .create:
                outcome.append(.created(path: result.value.map { String(cString: $0) } ?? operation.path))
            case .delete:
                outcome.append(.deleted)
            case .setData:
                outcome.append(.set(ZooKeeperStat(ops[index].set_op.stat.pointee)))
            case .check:
                outcome.append(.checked)
            }
        }
        return .success(outcome)
    }
}
