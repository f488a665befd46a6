import ShardworkSDK
/// The bounds of the numbers a job's configuration holds, each with its reason. The same bounds
/// apply to a host's file, to the control API and to a configuration read from the registry (they
/// are all read by ``HostConfigurationReader``), so that every value the checks accept is one the
/// host can compute with: no accepted value overflows, and none asks for more than a host or the
/// registry can carry.
public enum JobLimits {
    /// The most sharding items a job may have. A resharding writes the whole assignment (a node per
    /// item, and the removal of the previous one) in one ZooKeeper transaction, and ZooKeeper limits
    /// a request to 1 MB (`jute.maxbuffer`): with the longest job name and namespace an item takes
    /// up to 530 bytes of it, so this many take about 0.54 MB, leaving room. Every fire also reads
    /// each item's markers, so a job's items cost every host registry reads in proportion (1,024
    /// items: 3 to 4 s for a fire that reshards on ZooKeeper, docs/performance.md).
    public static let maximumShardingTotalCount = 1_024

    /// ElasticJob keeps `maxTimeDiffSeconds` and `reconcileIntervalMinutes` as Java ints; a value
    /// outside that range cannot come from an ElasticJob tool, and within it every computation the
    /// host makes with them (milliseconds, seconds) fits.
    public static let javaInt = Int(Int32.min)...Int(Int32.max)

    /// The longest `shardwork.item.timeout.seconds`: 30 days.
    public static let maximumItemTimeoutSeconds = 2_592_000.0

    /// The largest configuration, as the YAML stored in the job's `config` node: the node is written
    /// in one request (with the job's other nodes when it is added), under ZooKeeper's 1 MB limit.
    public static let maximumConfigurationBytes = 256 * 1024
}

extension JobLimits {
    /// The first limit `job` breaks, with the field (`shardingTotalCount`, `props.shardwork.item.timeout.seconds`,
    /// `configuration` for the whole) and a message that says what is allowed and why; `nil` when it
    /// keeps them all. The configuration reader checks every job with it, and so does the host when
    /// it prepares a job made in code.
    public static func violation(of job: JobConfiguration) -> (field: String, message: String)? {
        if let problem = RegistryNames.jobNameProblem(job.jobName) {
            return ("jobName", "\(LogText.quoted(job.jobName, limit: 80)) \(problem)")
        }
        if job.shardingTotalCount < 1 {
            return ("shardingTotalCount", "must be at least 1 (shardingTotalCount should be larger than zero), got \(job.shardingTotalCount)")
        }
        if job.shardingTotalCount > maximumShardingTotalCount {
            return ("shardingTotalCount",
                    "must be at most \(maximumShardingTotalCount), got \(job.shardingTotalCount): a resharding writes every item in one "
                        + "ZooKeeper request, which is limited to 1 MB (docs/configuration.md#limits)")
        }
        // Every whole number of the POJO is a Java int (shardingTotalCount, checked above, is well within).
        for field in JobField.all {
            if case .whole(let path) = field.value, !javaInt.contains(job[keyPath: path]) {
                return (field.key, "must be from \(Int32.min) to \(Int32.max) (a Java int, as ElasticJob keeps it), got \(job[keyPath: path])")
            }
        }
        if let timeout = job.props[HostProperty.itemTimeoutSeconds] {
            guard let seconds = Double(timeout), seconds > 0, seconds <= maximumItemTimeoutSeconds else {
                return ("props.\(HostProperty.itemTimeoutSeconds)",
                        "must be a number of seconds above zero and at most 2592000 (30 days), got \(LogText.quoted(timeout, limit: 40))")
            }
        }
        let stored = ElasticJobYAML.encode(job).utf8.count
        if stored > maximumConfigurationBytes {
            return ("configuration",
                    "takes \(stored) bytes as stored in the registry, more than the \(maximumConfigurationBytes) allowed "
                        + "(ZooKeeper limits a request to 1 MB); shorten the longest values (jobParameter, shardingItemParameters, props)")
        }
        return nil
    }
}

/// The bounds of the ZooKeeper settings (`registry.zookeeper`), each with its reason.
public enum ZooKeeperLimits {
    /// The ZooKeeper client takes the session timeout as a 32-bit count of milliseconds, and servers
    /// bound it by their `maxSessionTimeout` (40 s unless configured); a day is far beyond both.
    public static let sessionTimeoutMilliseconds = 1...86_400_000
    /// How long `shardwork run` waits for its first session: up to a day (`waitForServer` waits
    /// without end).
    public static let connectionTimeoutMilliseconds = 1...86_400_000
    /// The reconnection backoff, each step: up to an hour.
    public static let sleepTimeMilliseconds = 0...3_600_000
    /// Curator's `ExponentialBackoffRetry` refuses more than 29 retries.
    public static let maxRetries = 0...29
}

/// The bounds of the host's own settings (`host`, `api`).
public enum HostLimits {
    /// The longest drain on SIGTERM: a day.
    public static let shutdownTimeoutSeconds = 0.0...86_400.0
    /// The control API's bearer token: 16 characters or more (guessing must be hopeless), at most
    /// 4096 (an HTTP header line).
    public static let tokenLength = 16...4_096
}
