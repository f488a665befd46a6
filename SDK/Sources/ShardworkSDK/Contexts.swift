/// Log levels, the same as swift-log's.
public enum LogLevel: Int32, Sendable, CaseIterable {
    case trace = 0, debug, info, notice, warning, error, critical
}

/// Logs through the host, which tags each message with the plugin (and the job, item and fire
/// where there is one). Safe to use from any task or thread.
public struct PluginLogger: Sendable {
    private let handler: @Sendable (LogLevel, String) -> Void

    /// A logger that hands every message to `handler` (tests use this to capture output).
    public init(_ handler: @escaping @Sendable (LogLevel, String) -> Void) {
        self.handler = handler
    }

    /// A logger that drops everything.
    public static var discarding: PluginLogger { PluginLogger { _, _ in } }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        handler(level, message())
    }

    public func trace(_ message: @autoclosure () -> String) { log(.trace, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func notice(_ message: @autoclosure () -> String) { log(.notice, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func critical(_ message: @autoclosure () -> String) { log(.critical, message()) }
}

/// What a provider is told when the host makes an instance of it for one job.
public struct ProviderSetup: Sendable {
    /// The job this instance serves.
    public var jobName: String
    /// The name the job's configuration used (may be an alias).
    public var providerName: String
    /// The job's `props`.
    public var properties: JobProperties
    public var logger: PluginLogger

    public init(jobName: String, providerName: String, properties: JobProperties = JobProperties(),
                logger: PluginLogger = .discarding) {
        self.jobName = jobName
        self.providerName = providerName
        self.properties = properties
        self.logger = logger
    }
}

/// The host's side of one running item: cancellation and the fencing check.
public struct ItemControl: Sendable {
    let cancelled: @Sendable () -> Bool
    let epochCurrent: @Sendable (UInt64) -> Bool?

    /// - Parameters:
    ///   - isCancelled: whether the host asks the item to stop.
    ///   - isEpochCurrent: whether an epoch is still the item's current one (`nil` when unknown).
    public init(isCancelled: @escaping @Sendable () -> Bool = { false },
                isEpochCurrent: @escaping @Sendable (UInt64) -> Bool? = { _ in nil }) {
        self.cancelled = isCancelled
        self.epochCurrent = isEpochCurrent
    }

    /// Whether the host asks the item to stop.
    public var isCancelled: Bool { cancelled() }

    /// Whether `epoch` is still the item's current epoch; `nil` when unknown.
    public func isEpochCurrent(_ epoch: UInt64) -> Bool? { epochCurrent(epoch) }
}

/// The sharding context of one item of one fire: ElasticJob's `ShardingContext`, plus the fire
/// time, the fencing epoch and cancellation.
public struct ShardingContext: Sendable {
    public var jobName: String
    /// `{job}@-@{items}@-@READY@-@{instance id}`, as ElasticJob builds it.
    public var taskID: String
    public var shardingTotalCount: Int
    public var jobParameter: String
    public var shardingItem: Int
    /// The item's parameter from `shardingItemParameters`, or `nil` when it has none.
    public var shardingParameter: String?
    /// The scheduled fire time in milliseconds since the Unix epoch.
    public var fireTimeMilliseconds: Int64
    /// The epoch of this item's assignment, or of the takeover that runs it after a crash. It only
    /// grows; a sink that records the highest epoch it has seen per item can refuse writes from a
    /// stale owner.
    public var fencingEpoch: UInt64
    public var logger: PluginLogger
    private let control: ItemControl

    public init(
        jobName: String, taskID: String, shardingTotalCount: Int, jobParameter: String,
        shardingItem: Int, shardingParameter: String?, fireTimeMilliseconds: Int64,
        fencingEpoch: UInt64, logger: PluginLogger = .discarding, control: ItemControl = ItemControl()
    ) {
        self.jobName = jobName
        self.taskID = taskID
        self.shardingTotalCount = shardingTotalCount
        self.jobParameter = jobParameter
        self.shardingItem = shardingItem
        self.shardingParameter = shardingParameter
        self.fireTimeMilliseconds = fireTimeMilliseconds
        self.fencingEpoch = fencingEpoch
        self.logger = logger
        self.control = control
    }

    /// True once the host asks the item to stop (shutdown, lost registry, timeout) or the task
    /// running the item is cancelled. Long-running items should check it between units of work.
    public var isCancelled: Bool { control.cancelled() || Task.isCancelled }

    /// Throws `CancellationError` when ``isCancelled``.
    public func checkCancellation() throws(CancellationError) {
        if isCancelled { throw CancellationError() }
    }

    /// Whether `epoch` (by default this item's own) is still the current epoch of the item: `false`
    /// once this host lost its hold on the item (its registry session ended, or the registry has
    /// been silent past the fencing limit, after which another host may be handed the item with a
    /// newer epoch); `nil` when the host cannot tell.
    public func isEpochCurrent(_ epoch: UInt64? = nil) -> Bool? {
        control.epochCurrent(epoch ?? fencingEpoch)
    }
}

/// Where a failure came from.
public enum FailureOrigin: UInt32, Sendable {
    case item = 1
    case listener = 2
    case environment = 3
}

/// One failure of a job, as an error handler sees it.
public struct JobFailure: Sendable {
    public var origin: FailureOrigin
    public var jobName: String
    public var taskID: String
    public var instanceID: String
    public var hostName: String
    /// The failed item, or `nil` when the failure is not an item's.
    public var item: Int?
    public var fireTimeMilliseconds: Int64
    public var message: String
    public var code: Int32

    public init(origin: FailureOrigin, jobName: String, taskID: String, instanceID: String,
                hostName: String, item: Int?, fireTimeMilliseconds: Int64, message: String, code: Int32 = 0) {
        self.origin = origin
        self.jobName = jobName
        self.taskID = taskID
        self.instanceID = instanceID
        self.hostName = hostName
        self.item = item
        self.fireTimeMilliseconds = fireTimeMilliseconds
        self.message = message
        self.code = code
    }
}

/// What an error handler decided.
public enum ErrorDisposition: Sendable, Equatable {
    /// The failure is dealt with; the fire goes on (ElasticJob's LOG and IGNORE).
    case handled
    /// The failure aborts the rest of the fire (ElasticJob's THROW).
    case propagate
}

/// How an item of a fire ended.
public enum ItemStatus: Int32, Sendable {
    case succeeded = 0
    case failed = 1
    case notRun = 2
}

/// One fire of a job on this host, as job listeners see it.
public struct FireInfo: Sendable {
    public var jobName: String
    public var taskID: String
    public var shardingTotalCount: Int
    public var jobParameter: String
    public var fireTimeMilliseconds: Int64
    /// The items this host runs in this fire, ascending.
    public var items: [Int]
    public var itemParameters: [Int: String]
    /// `nil` before the fire; after it, how each item ended.
    public var itemStatuses: [Int: ItemStatus]?

    public init(jobName: String, taskID: String, shardingTotalCount: Int, jobParameter: String,
                fireTimeMilliseconds: Int64, items: [Int], itemParameters: [Int: String] = [:],
                itemStatuses: [Int: ItemStatus]? = nil) {
        self.jobName = jobName
        self.taskID = taskID
        self.shardingTotalCount = shardingTotalCount
        self.jobParameter = jobParameter
        self.fireTimeMilliseconds = fireTimeMilliseconds
        self.items = items
        self.itemParameters = itemParameters
        self.itemStatuses = itemStatuses
    }
}
