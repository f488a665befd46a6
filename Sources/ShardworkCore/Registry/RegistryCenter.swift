/// The registry center: a ZooKeeper-shaped, hierarchical store of small nodes that hosts share.
///
/// `ZooKeeperRegistry` implements it over ZooKeeper for a cluster; `EmbeddedRegistry` implements
/// the same semantics in process for a single host. Coordination (election, sharding, execution
/// markers, failover) is written once against this protocol.
///
/// Semantics are ZooKeeper's:
/// - Paths are absolute (`/job/config`), `/`-separated, without a trailing slash (except the root
///   `/`), with no empty, `.` or `..` segment. Parents must exist before a child is created.
/// - Persistent nodes live until deleted; ephemeral nodes are deleted when the session that created
///   them ends (closed or expired) and cannot have children. Sequential modes append a ten-digit,
///   zero-padded counter: the number of children the parent has had created so far (deletions do
///   not lower it), as ZooKeeper keeps it (`job-0000000007`).
/// - Every node has a data version that each `setData` increments; a `version` argument makes a
///   write conditional (`nil` means any version).
/// - `multi` applies all of its operations atomically, or none of them.
/// - Watches are one-shot: a watcher passed to `data`, `exists` or `children` is called at most once,
///   for the next change of that node (data watches) or of its list of children (child watches).
///   Watchers must return quickly and must not block; they typically yield into an `AsyncStream`.
///   After a session ends, its pending watches never fire: re-read and re-arm on a new session.
public protocol RegistryCenter: AnyObject, Sendable {
    /// Creates a node and returns its path (which differs from `path` for sequential modes).
    @discardableResult
    func create(_ path: String, data: [UInt8], mode: CreateMode) async throws(RegistryError) -> String

    /// Deletes a node that has no children; with a `version`, only if the node is at that version.
    func delete(_ path: String, version: Int32?) async throws(RegistryError)

    /// Replaces a node's data; with a `version`, only if the node is at that version.
    @discardableResult
    func setData(_ path: String, data: [UInt8], version: Int32?) async throws(RegistryError) -> NodeStat

    /// A node's data and stat; throws `.noNode` when it does not exist. `watch` fires on the node's
    /// next data change or deletion.
    func data(_ path: String, watch: Watcher?) async throws(RegistryError) -> (data: [UInt8], stat: NodeStat)

    /// A node's stat, or `nil` when it does not exist. `watch` fires on the node's next creation,
    /// data change or deletion.
    func exists(_ path: String, watch: Watcher?) async throws(RegistryError) -> NodeStat?

    /// The names (not paths) of a node's children, in no particular order; throws `.noNode`.
    /// `watch` fires when a child is created or deleted, or the node itself is deleted.
    func children(_ path: String, watch: Watcher?) async throws(RegistryError) -> [String]

    /// Applies `operations` atomically. When one fails, none is applied and the error is
    /// `.transactionFailed` with the index of the failing operation.
    @discardableResult
    func multi(_ operations: [RegistryOperation]) async throws(RegistryError) -> [RegistryOperationResult]

    /// The current session's id, or `nil` while there is none (not yet connected, expired, closed).
    var sessionID: Int64? { get }

    /// Session state changes, starting with the current state. Each call returns a new stream.
    func sessionStates() -> AsyncStream<SessionState>

    /// Ends the session: its ephemeral nodes are deleted, and later calls throw `.closed`.
    func close() async

    /// The session timeout granted, for registries whose sessions time out (`nil` otherwise).
    var sessionTimeout: Duration? { get }

    /// When the registry was last heard from (an answer or an event), on the monotonic time of the
    /// host's ``SchedulerClock``; `nil` when the registry cannot tell.
    var lastContact: ContinuousClock.Instant? { get }

    /// Creates the node that `/` stands for when it is missing (a ZooKeeper namespace that was
    /// deleted); nothing for a registry whose root always exists.
    func ensureNamespace() async throws(RegistryError)
}

extension RegistryCenter {
    public var sessionTimeout: Duration? { nil }
    public var lastContact: ContinuousClock.Instant? { nil }
    public func ensureNamespace() async throws(RegistryError) {}
}

/// How a node is created.
public enum CreateMode: Sendable, Equatable, CaseIterable {
    case persistent
    case ephemeral
    case persistentSequential
    case ephemeralSequential

    public var isEphemeral: Bool { self == .ephemeral || self == .ephemeralSequential }
    public var isSequential: Bool { self == .persistentSequential || self == .ephemeralSequential }
}

/// A node's metadata, as ZooKeeper's `Stat`.
public struct NodeStat: Sendable, Equatable {
    /// The transaction that created the node (`czxid`).
    public var createdTransaction: Int64
    /// The transaction that last changed the node's data (`mzxid`).
    public var modifiedTransaction: Int64
    /// Creation and last data change, milliseconds since the Unix epoch, by the registry's clock.
    public var createdTime: Int64
    public var modifiedTime: Int64
    /// The data version: 0 at creation, incremented by every `setData`.
    public var version: Int32
    /// The child version: incremented by every creation or deletion of a child.
    public var childrenVersion: Int32
    /// The session that owns an ephemeral node, or 0.
    public var ephemeralOwner: Int64
    public var dataLength: Int32
    public var childCount: Int32

    public init(
        createdTransaction: Int64, modifiedTransaction: Int64, createdTime: Int64, modifiedTime: Int64,
        version: Int32, childrenVersion: Int32, ephemeralOwner: Int64, dataLength: Int32, childCount: Int32
    ) {
        self.createdTransaction = createdTransaction
        self.modifiedTransaction = modifiedTransaction
        self.createdTime = createdTime
        self.modifiedTime = modifiedTime
        self.version = version
        self.childrenVersion = childrenVersion
        self.ephemeralOwner = ephemeralOwner
        self.dataLength = dataLength
        self.childCount = childCount
    }
}

/// One operation of a `multi`.
public enum RegistryOperation: Sendable, Equatable {
    case create(String, data: [UInt8], mode: CreateMode)
    case delete(String, version: Int32?)
    case setData(String, data: [UInt8], version: Int32?)
    /// Succeeds when the node exists (and, with a version, is at that version).
    case check(String, version: Int32?)

    public var path: String {
        switch self {
        case .create(let path, _, _), .delete(let path, _), .setData(let path, _, _), .check(let path, _): path
        }
    }
}

/// The result of one operation of a `multi`, in the order of the operations.
public enum RegistryOperationResult: Sendable, Equatable {
    case created(path: String)
    case deleted
    case set(NodeStat)
    case checked
}

/// A watched change.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case created, deleted, dataChanged, childrenChanged
    }

    public var kind: Kind
    public var path: String

    public init(_ kind: Kind, _ path: String) {
        self.kind = kind
        self.path = path
    }
}

/// Called once with the change a watch was set for.
public typealias Watcher = @Sendable (WatchEvent) -> Void

/// The state of the session between this process and the registry.
public enum SessionState: Sendable, Equatable {
    /// Connected with this session id. After `disconnected`, the same id means the session survived.
    case connected(sessionID: Int64)
    /// The connection is lost; the session may still be alive on the server. Nothing this host wrote
    /// is lost yet, but it must not start work that depends on its registrations.
    case disconnected
    /// The session is gone: its ephemeral nodes are deleted and its watches will never fire. A new
    /// session follows (`connected` with another id).
    case expired
    /// Closed by this process.
    case closed
}

/// A registry operation failed.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The node (or, for `create`, its parent) does not exist.
        case noNode
        case nodeExists
        /// The node is not at the version the operation required.
        case badVersion
        /// `delete` of a node that has children.
        case notEmpty
        /// `create` under an ephemeral node.
        case noChildrenForEphemerals
        /// The path is malformed.
        case invalidPath
        /// The session is gone; the operation was not applied.
        case sessionExpired
        /// The connection was lost; the operation may or may not have been applied.
        case connectionLoss
        /// Not allowed by the node's ACL.
        case noAuth
        /// The registry was closed by this process.
        case closed
        /// A `multi` failed at `index` with `underlying`; nothing was applied.
        indirect case transactionFailed(index: Int, underlying: Code)
        /// Anything else, with the backend's own words.
        case other(String)
    }

    public var code: Code
    public var path: String?

    public init(_ code: Code, path: String? = nil) {
        self.code = code
        self.path = path
    }

    public var description: String {
        let subject = path.map { " (\($0))" } ?? ""
        return Self.describe(code) + subject
    }

    private static func describe(_ code: Code) -> String {
        switch code {
        case .noNode: "no such node"
        case .nodeExists: "the node already exists"
        case .badVersion: "the node is not at the expected version"
        case .notEmpty: "the node has children"
        case .noChildrenForEphemerals: "an ephemeral node cannot have children"
        case .invalidPath: "invalid path"
        case .sessionExpired: "the registry session has expired"
        case .connectionLoss: "the connection to the registry was lost"
        case .noAuth: "not authorised"
        case .closed: "the registry is closed"
        case .transactionFailed(let index, let underlying): "transaction failed at operation \(index): \(describe(underlying))"
        case .other(let text): text
        }
    }
}

extension RegistryError.Code {
    /// The connection was lost before the answer came, directly or as the reason a transaction
    /// failed: the write may or may not have been applied.
    public var isUncertain: Bool {
        switch self {
        case .connectionLoss: true
        case .transactionFailed(_, let underlying): underlying.isUncertain
        default: false
        }
    }

    /// A missing node, directly or as the reason a transaction failed.
    public var isNoNode: Bool {
        switch self {
        case .noNode: true
        case .transactionFailed(_, let underlying): underlying.isNoNode
        default: false
        }
    }
}

extension RegistryCenter {
    /// A node's data as UTF-8 text, or `nil` when the node does not exist.
    public func string(_ path: String) async throws(RegistryError) -> String? {
        do {
            return String(decoding: try await data(path, watch: nil).data, as: UTF8.self)
        } catch where error.code == .noNode {
            return nil
        }
    }
}

extension Array where Element == UInt8 {
    /// UTF-8 bytes of `text`, for node data.
    public init(utf8 text: String) { self = Array(text.utf8) }
}
