import ShardworkSDK

/// One field of a job as it is written: in a host's file, in the YAML of the job's `config` node and
/// in the control API's JSON. ``JobField/all`` is the one list of them: the YAML encoder, the reader
/// of jobs, the JSON form and the limits take their fields from it, so that a new field of
/// ``JobConfiguration`` needs one entry here (and any rule of its own where it is read).
///
/// Absent fields keep the defaults of ``JobConfiguration``'s properties, which are ElasticJob's
/// YAML defaults; the table does not repeat them.
struct JobField: Sendable {
    /// A property of ``JobConfiguration``; sendable, so that the table can be a constant.
    typealias Path<Property> = any WritableKeyPath<JobConfiguration, Property> & Sendable

    /// What the field holds, and where ``JobConfiguration`` keeps it.
    enum Value: Sendable {
        /// Text that is always there (empty by default): written even when empty.
        case text(Path<String>)
        /// Text that may be absent: written only when present.
        case optionalText(Path<String?>)
        case flag(Path<Bool>)
        case whole(Path<Int>)
        /// A list of names: in YAML written only when not empty.
        case list(Path<[String]>)
        /// `props`: string keys and values, in the order they were given.
        case properties(Path<JobProperties>)
        /// A key ElasticJob writes that no property holds: the reader accepts it and reads it by a
        /// rule of its own; nothing writes it.
        case notStored
    }

    /// The name in YAML and JSON: the field of ElasticJob's `JobConfigurationPOJO`, or `jobType`.
    let key: String
    let value: Value
    /// A job without it is refused. Readers take the required fields first, each with a message of
    /// its own that says what the field is for.
    let isRequired: Bool
    /// Whether ElasticJob's YAML in the `config` node holds it. `jobType` is not there: like
    /// ElasticJob's job class, it is the value of the job's root node.
    let isInConfigNode: Bool
    /// The kind of provider the field names (each name of a list names one), or `nil`.
    let provider: ProviderKind?

    init(_ key: String, _ value: Value, required: Bool = false, inConfigNode: Bool = true, provider: ProviderKind? = nil) {
        self.key = key
        self.value = value
        self.isRequired = required
        self.isInConfigNode = inConfigNode
        self.provider = provider
    }

    /// Every key a job may have, in the order of ``JobConfiguration``'s properties (which is
    /// ElasticJob's POJO order, `jobType` after the name), with ElasticJob's keys that no property
    /// holds where the POJO has them. The host file reader lists them in this order when it names
    /// the fields a job may have, and reads the optional ones in it.
    static let all: [JobField] = [
        JobField("jobName", .text(\.jobName), required: true),
        JobField("jobType", .text(\.jobType), required: true, inConfigNode: false, provider: .jobType),
        JobField("cron", .optionalText(\.cron)),
        JobField("timeZone", .optionalText(\.timeZone)),
        JobField("shardingTotalCount", .whole(\.shardingTotalCount), required: true),
        JobField("shardingItemParameters", .text(\.shardingItemParameters)),
        JobField("jobParameter", .text(\.jobParameter)),
        JobField("monitorExecution", .flag(\.monitorExecution)),
        JobField("failover", .flag(\.failover)),
        JobField("misfire", .flag(\.misfire)),
        JobField("maxTimeDiffSeconds", .whole(\.maxTimeDiffSeconds)),
        JobField("reconcileIntervalMinutes", .whole(\.reconcileIntervalMinutes)),
        JobField("jobShardingStrategyType", .optionalText(\.jobShardingStrategyType), provider: .shardingStrategy),
        JobField("jobExecutorThreadPoolSizeProviderType", .optionalText(\.jobExecutorThreadPoolSizeProviderType), provider: .executorStrategy),
        // ElasticJob 3.0.4's name for the executor strategy: read into the field above.
        JobField("jobExecutorServiceHandlerType", .notStored),
        JobField("jobErrorHandlerType", .optionalText(\.jobErrorHandlerType), provider: .errorHandler),
        JobField("jobListenerTypes", .list(\.jobListenerTypes), provider: .jobListener),
        // ElasticJob's tracing configurations: known, so that the reader can say they are not supported.
        JobField("jobExtraConfigurations", .notStored),
        JobField("description", .text(\.description)),
        JobField("props", .properties(\.props)),
        JobField("disabled", .flag(\.disabled)),
        JobField("overwrite", .flag(\.overwrite)),
        JobField("label", .optionalText(\.label)),
        JobField("staticSharding", .flag(\.staticSharding)),
    ]

    /// The fields a property of ``JobConfiguration`` holds, in the order of the properties.
    static let stored = all.filter(\.isStored)

    /// The fields that name providers: `jobType` and the strategy, handler and listener types.
    static let providerFields = all.filter { $0.provider != nil }

    var isStored: Bool {
        if case .notStored = value { false } else { true }
    }

    /// The providers `job` names, in the order of ``providerFields``: one for each field that holds
    /// one name (`nil` when the name is absent, which stands for the kind's default), one for each
    /// name of a list.
    static func providerNames(in job: JobConfiguration) -> [(field: String, kind: ProviderKind, name: String?)] {
        var names: [(field: String, kind: ProviderKind, name: String?)] = []
        for field in providerFields {
            guard let kind = field.provider else { continue }
            switch field.value {
            case .text(let path): names.append((field.key, kind, job[keyPath: path]))
            case .optionalText(let path): names.append((field.key, kind, job[keyPath: path]))
            case .list(let path): names += job[keyPath: path].map { (field.key, kind, $0) }
            case .flag, .whole, .properties, .notStored: break
            }
        }
        return names
    }
}
