public import ShardworkSDK

/// One job, with ElasticJob's field names and the defaults ElasticJob applies when a field is
/// absent from YAML (its `JobConfigurationPOJO`: `monitorExecution`, `misfire` false and
/// `reconcileIntervalMinutes` 0 when absent), plus `jobType`, the name of a job type a plugin provides.
public struct JobConfiguration: Sendable, Equatable {
    public var jobName: String
    /// The job type's name (a provider of kind job type). In the registry it is the value of the
    /// job's root node, where ElasticJob keeps the job class or type.
    public var jobType: String
    /// A Quartz cron expression; `nil` for a one-off job, which runs only when triggered.
    public var cron: String?
    /// A tz-database id (`Asia/Shanghai`) or a Java `GMT+08:00` id; `nil` for the host's zone.
    public var timeZone: String?
    public var shardingTotalCount: Int
    /// `0=a,1=b`: a parameter per item.
    public var shardingItemParameters: String = ""
    public var jobParameter: String = ""
    public var monitorExecution: Bool = false
    public var failover: Bool = false
    public var misfire: Bool = false
    /// `< 0`: no check of the clock difference with the registry.
    public var maxTimeDiffSeconds: Int = -1
    /// `<= 0`: no periodic reconcile.
    public var reconcileIntervalMinutes: Int = 0
    public var jobShardingStrategyType: String?
    /// ElasticJob 3.0.5's name for the executor strategy (3.0.4 called it `jobExecutorServiceHandlerType`).
    public var jobExecutorThreadPoolSizeProviderType: String?
    public var jobErrorHandlerType: String?
    public var jobListenerTypes: [String] = []
    public var description: String = ""
    public var props: JobProperties = JobProperties()
    public var disabled: Bool = false
    public var overwrite: Bool = false
    public var label: String?
    public var staticSharding: Bool = false

    public init(jobName: String, jobType: String, cron: String?, shardingTotalCount: Int) {
        self.jobName = jobName
        self.jobType = jobType
        self.cron = cron
        self.shardingTotalCount = shardingTotalCount
    }

    /// A one-off job has no cron: it runs only when triggered.
    public var isOneOff: Bool { cron?.isEmpty ?? true }
}

/// Properties in `props` that the host itself reads (the `shardwork.` prefix is reserved for them).
public enum HostProperty {
    /// An item running longer than this many seconds is cancelled and counted as failed, and the job
    /// goes on without waiting for it. Absent: items may run as long as they like.
    public static let itemTimeoutSeconds = "shardwork.item.timeout.seconds"
    /// `process`: the job's items run in a separate worker process, so code that crashes fails its
    /// items instead of the host. `in-process` (the default): they run in the host.
    public static let isolation = "shardwork.isolation"
    /// ElasticJob's dataflow setting: fetch and process until a fetch returns nothing.
    public static let streamingProcess = "streaming.process"

    static let known = [itemTimeoutSeconds, isolation]
}

/// ElasticJob's `shardingItemParameters`: `0=Beijing,1=Shanghai`.
public enum ShardingItemParameters {
    /// Parses with ElasticJob's rules (`ShardingItemParameters.java`): split on `,`, each part trimmed
    /// and split on `=` into exactly two parts (Java's `split`, which drops trailing empty parts), the
    /// key a 32-bit integer, the value trimmed. An empty string has no parameters. Errors use
    /// ElasticJob's messages.
    public static func parse(_ text: String) throws(ParseError) -> [Int: String] {
        guard !text.isEmpty else { return [:] }
        var result: [Int: String] = [:]
        for part in javaSplit(text, ",") {
            let pieces = javaSplit(part.trimmed, "=")
            guard pieces.count == 2 else {
                throw ParseError("Sharding item parameters '\(text)' format error, should be int=xx,int=xx")
            }
            let key = pieces[0].trimmed
            guard let item = Int32(key) else {
                throw ParseError("Sharding item parameters key '\(key)' is not an integer.")
            }
            result[Int(item)] = String(pieces[1].trimmed)
        }
        return result
    }

    /// Java's `String.split` with a one-character separator: without a separator the text itself;
    /// otherwise the parts with every trailing empty part removed (`","` splits into nothing).
    private static func javaSplit(_ text: some StringProtocol, _ separator: Character) -> [Substring] {
        guard text.contains(separator) else { return [Substring(text)] }
        var parts = Substring(text).split(separator: separator, omittingEmptySubsequences: false)
        while parts.last?.isEmpty == true { parts.removeLast() }
        return parts
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line breaks (Java's `String.trim` for text).
    var trimmed: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
            return Substring()
        }
        return Substring(self[start...end])
    }
}
