public import ShardworkCore

/// One execution of one item on one host: a row of ElasticJob's `JOB_EXECUTION_LOG` (reference
/// §4.15), with Shardwork's own facts beside it in `SHARDWORK_EXECUTION_LOG` (same `id`).
///
/// Written twice: when the item's fire starts (no completion yet, `success` false as ElasticJob
/// writes it) and when it ends (completion time, outcome, failure cause).
public struct ExecutionRecord: Sendable, Equatable, Codable {
    /// A UUID, as ElasticJob's `id` (at most 40 characters).
    public var id: String
    public var jobName: String
    /// ElasticJob's task id: `{job}@-@{items}@-@READY@-@{ip}@-@{pid}`.
    public var taskID: String
    public var hostname: String
    public var ip: String
    public var item: Int
    public var source: FireSource
    /// Start and completion, milliseconds since 1970; `completeTime` is `nil` while it runs.
    public var startTime: Int64
    public var completeTime: Int64?
    /// `nil` while it runs.
    public var outcome: Outcome?
    /// The failure, truncated to ``ExecutionRecord/failureCauseLimit`` characters as ElasticJob does.
    public var failureCause: String?

    // Shardwork's own columns.
    /// The cron instant (scheduled fires and their misfire re-runs) or the moment of a trigger or
    /// failover run.
    public var fireTime: Int64
    public var fencingEpoch: UInt64
    public var plugin: String
    public var pluginVersion: String
    public var instanceID: String
    /// The host stopped the item because it lost its hold on it (fencing).
    public var fenced: Bool

    public enum Outcome: String, Sendable, Codable {
        case succeeded
        case failed
        /// It ran past the job's item timeout and was asked to stop.
        case timedOut
    }

    /// ElasticJob's limit on `failure_cause` and `message`.
    public static let failureCauseLimit = 4000

    /// From the fire time to the item's start (0 for triggers and failover runs).
    public var lagMilliseconds: Int64 { max(0, startTime - fireTime) }

    /// ElasticJob's `execution_source`: `NORMAL_TRIGGER` (a scheduled fire or a trigger), `MISFIRE`
    /// or `FAILOVER`.
    public var elasticJobSource: String {
        switch source {
        case .schedule, .trigger: "NORMAL_TRIGGER"
        case .misfire: "MISFIRE"
        case .failover: "FAILOVER"
        }
    }

    public init(
        id: String, jobName: String, taskID: String, hostname: String, ip: String, item: Int, source: FireSource,
        startTime: Int64, completeTime: Int64? = nil, outcome: Outcome? = nil, failureCause: String? = nil,
        fireTime: Int64, fencingEpoch: UInt64, plugin: String, pluginVersion: String, instanceID: String, fenced: Bool = false
    ) {
        self.id = id
        self.jobName = jobName
        self.taskID = taskID
        self.hostname = hostname
        self.ip = ip
        self.item = item
        self.source = source
        self.startTime = startTime
        self.completeTime = completeTime
        self.outcome = outcome
        self.failureCause = failureCause.map { String($0.prefix(Self.failureCauseLimit)) }
        self.fireTime = fireTime
        self.fencingEpoch = fencingEpoch
        self.plugin = plugin
        self.pluginVersion = pluginVersion
        self.instanceID = instanceID
        self.fenced = fenced
    }
}

/// A row of ElasticJob's `JOB_STATUS_TRACE_LOG`: one state of one fire on one host.
public struct StatusTraceRecord: Sendable, Equatable, Codable {
    public var id: String
    public var jobName: String
    /// Always empty in ElasticJob-Lite.
    public var originalTaskID: String
    public var taskID: String
    /// The IP part of the task id.
    public var slaveID: String
    /// Always `READY` in ElasticJob-Lite.
    public var executionType: String
    /// Java's `List.toString()` of the items: `[0, 1]`.
    public var shardingItems: String
    public var state: State
    public var message: String
    public var creationTime: Int64

    /// The states ElasticJob-Lite writes.
    public enum State: String, Sendable, Codable {
        case staging = "TASK_STAGING"
        case running = "TASK_RUNNING"
        case finished = "TASK_FINISHED"
        case error = "TASK_ERROR"
    }

    public init(
        id: String, jobName: String, taskID: String, slaveID: String, items: [Int], state: State, message: String,
        creationTime: Int64
    ) {
        self.id = id
        self.jobName = jobName
        originalTaskID = ""
        self.taskID = taskID
        self.slaveID = slaveID
        executionType = "READY"
        shardingItems = "[" + items.map(String.init).joined(separator: ", ") + "]"
        self.state = state
        self.message = String(message.prefix(ExecutionRecord.failureCauseLimit))
        self.creationTime = creationTime
    }
}

/// What the writer hands a store in one batch, in order.
public enum HistoryWrite: Sendable, Equatable {
    /// An item started: insert its row (or, if its completion came first, leave it).
    case executionStarted(ExecutionRecord)
    /// An item ended: update its row by id, or insert it complete when there is none (ElasticJob's
    /// insert-or-update).
    case executionCompleted(ExecutionRecord)
    case status(StatusTraceRecord)
}

/// Which executions to read, newest first.
public struct ExecutionQuery: Sendable, Equatable {
    /// `nil` for every job.
    public var jobName: String?
    public var item: Int?
    public var instanceID: String?
    /// Start time bounds, milliseconds since 1970, inclusive.
    public var since: Int64?
    public var until: Int64?
    /// Only executions that ended without success.
    public var failedOnly: Bool
    public var source: FireSource?
    /// At most this many (1...1000), after skipping `offset`.
    public var limit: Int
    public var offset: Int

    public static let maximumLimit = 1000

    public init(
        jobName: String? = nil, item: Int? = nil, instanceID: String? = nil, since: Int64? = nil, until: Int64? = nil,
        failedOnly: Bool = false, source: FireSource? = nil, limit: Int = 100, offset: Int = 0
    ) {
        self.jobName = jobName
        self.item = item
        self.instanceID = instanceID
        self.since = since
        self.until = until
        self.failedOnly = failedOnly
        self.source = source
        self.limit = min(max(limit, 1), Self.maximumLimit)
        self.offset = max(offset, 0)
    }
}

/// A database that keeps the history: ElasticJob's two tables and index, and Shardwork's table.
///
/// Calls come from one writer at a time (and readers); each call may block on the database, and is
/// never made on a fire's path.
public protocol HistoryStore: Sendable {
    /// Creates the tables and index when they are missing, and checks that existing ones have the
    /// columns this store writes. Throws a ``HistoryStoreError`` that names the setting to fix.
    func prepare() async throws
    /// Applies a batch in one transaction.
    func apply(_ batch: [HistoryWrite]) async throws
    /// Executions matching the query, newest start first.
    func executions(_ query: ExecutionQuery) async throws -> [ExecutionRecord]
    /// Deletes what started (executions) or was created (status rows) before `time`; returns how
    /// many rows went.
    func purge(before time: Int64) async throws -> Int
    /// Releases the connection.
    func close() async
}

/// A store that cannot be used, and what to do about it.
public struct HistoryStoreError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
