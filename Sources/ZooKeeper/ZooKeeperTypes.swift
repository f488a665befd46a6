import CZooKeeper

/// A ZooKeeper operation failed. `code` is the C client's return code.
public struct ZooKeeperError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case noNode
        case nodeExists
        case badVersion
        case notEmpty
        case noChildrenForEphemerals
        /// A malformed path or argument, refused before anything was sent.
        case badArguments
        case sessionExpired
        /// The connection was lost while the request was outstanding: it may or may not have been
        /// applied.
        case connectionLoss
        case operationTimeout
        case noAuth
        case authFailed
        /// The client was closed (by `close()`, or while the request was outstanding).
        case closing
        /// The handle is no longer usable (its session expired or it was closed).
        case invalidState
        case other(Int32)

        init(_ rc: Int32) {
            switch rc {
            case ZNONODE.rawValue: self = .noNode
            case ZNODEEXISTS.rawValue: self = .nodeExists
            case ZBADVERSION.rawValue: self = .badVersion
            case ZNOTEMPTY.rawValue: self = .notEmpty
            case ZNOCHILDRENFOREPHEMERALS.rawValue: self = .noChildrenForEphemerals
            case ZBADARGUMENTS.rawValue: self = .badArguments
            case ZSESSIONEXPIRED.rawValue: self = .sessionExpired
            case ZCONNECTIONLOSS.rawValue: self = .connectionLoss
            case ZOPERATIONTIMEOUT.rawValue: self = .operationTimeout
            case ZNOAUTH.rawValue: self = .noAuth
            case ZAUTHFAILED.rawValue: self = .authFailed
            case ZCLOSING.rawValue: self = .closing
            case ZINVALIDSTATE.rawValue: self = .invalidState
            default: self = .other(rc)
            }
        }
    }

    /// The C client's return code (`ZNONODE` is -101, ...).
    public var returnCode: Int32
    public var code: Code { Code(returnCode) }
    /// The path of the operation, when there is one.
    public var path: String?
    /// For a failed `multi`: the index of the operation that failed (nothing was applied).
    public var failedOperation: Int?

    public init(returnCode: Int32, path: String? = nil, failedOperation: Int? = nil) {
        self.returnCode = returnCode
        self.path = path
        self.failedOperation = failedOperation
    }

    public var description: String {
        var text = String(cString: zerror(returnCode)) + " (\(returnCode))"
        if let failedOperation { text += " at operation \(failedOperation) of a multi" }
        if let path { text += ": \(path)" }
        return text
    }
}

/// ZooKeeper's `Stat` of a node.
public struct ZooKeeperStat: Sendable, Equatable {
    public var czxid: Int64
    public var mzxid: Int64
    public var ctime: Int64
    public var mtime: Int64
    public var version: Int32
    public var cversion: Int32
    public var aversion: Int32
    public var ephemeralOwner: Int64
    public var dataLength: Int32
    public var numChildren: Int32
    public var pzxid: Int64

    init(_ stat: Stat) {
        czxid = stat.czxid
        mzxid = stat.mzxid
        ctime = stat.ctime
        mtime = stat.mtime
        version = stat.version
        cversion = stat.cversion
        aversion = stat.aversion
        ephemeralOwner = stat.ephemeralOwner
        dataLength = stat.dataLength
        numChildren = stat.numChildren
        pzxid = stat.pzxid
    }
}

/// How a node is created.
public enum ZooKeeperCreateMode: Sendable, Equatable {
    case persistent, ephemeral, persistentSequential, ephemeralSequential

    var flags: Int32 {
        switch self {
        case .persistent: ZOO_PERSISTENT
        case .ephemeral: ZOO_EPHEMERAL
        case .persistentSequential: ZOO_PERSISTENT_SEQUENTIAL
        case .ephemeralSequential: ZOO_EPHEMERAL_SEQUENTIAL
        }
    }
}

/// One operation of a `multi`. A `version` of `nil` means any version.
public enum ZooKeeperOperation: Sendable, Equatable {
    case create(String, data: [UInt8], mode: ZooKeeperCreateMode)
    case delete(String, version: Int32?)
    case setData(String, data: [UInt8], version: Int32?)
    case check(String, version: Int32?)

    public var path: String {
        switch self {
        case .create(let path, _, _), .delete(let path, _), .setData(let path, _, _), .check(let path, _): path
        }
    }
}

/// The result of one operation of a successful `multi`.
public enum ZooKeeperOperationResult: Sendable, Equatable {
    case created(path: String)
    case deleted
    case set(ZooKeeperStat)
    case checked
}

/// A watched change of a node, delivered once.
public struct ZooKeeperWatchEvent: Sendable, Equatable {
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

/// A change of the client's session.
public enum ZooKeeperSessionEvent: Sendable, Equatable {
    /// Connected (first or again) with this session; `timeout` is the one the server negotiated.
    case connected(sessionID: Int64, timeout: Duration)
    /// The connection is lost; the client is trying the servers again, and the session lives on
    /// the server until its timeout passes.
    case connecting
    /// The server ended the session: its ephemeral nodes are gone, its watches will never fire, and
    /// this client can do nothing more. Open a new one.
    case expired
    /// The server refused the client's credentials; this client can do nothing more.
    case authenticationFailed
    /// Closed by `close()`.
    case closed
}

/// What identifies a session to the server: its id and the password the server gave it.
public struct SessionCredentials: Sendable, Equatable {
    public var sessionID: Int64
    public var password: [UInt8]

    public init(sessionID: Int64, password: [UInt8]) {
        self.sessionID = sessionID
        self.password = password
    }
}
