/// The ZooKeeper registry's settings: ElasticJob's `ZookeeperConfiguration` fields, names and
/// defaults (reference §1.2), plus `waitForServer`.
public struct ZooKeeperConfiguration: Sendable, Equatable {
    /// `host1:2181,host2:2181`.
    public var serverLists: String
    /// Every job's nodes live under `/{namespace}`.
    public var namespace: String
    /// ZooKeeper's session timeout. ElasticJob's 0 means Curator's default, 60,000 ms.
    public var sessionTimeoutMilliseconds: Int = 60_000
    /// How long to wait for the first connection. ElasticJob's 0 means Curator's default, 15,000 ms.
    public var connectionTimeoutMilliseconds: Int = 15_000
    /// Reconnection backoff: starts at the base and doubles up to the maximum.
    public var baseSleepTimeMilliseconds: Int = 1_000
    public var maxSleepTimeMilliseconds: Int = 3_000
    /// ElasticJob's retry count, read for compatibility. The C client retries connections on its
    /// own, without a count: the start-up wait is bounded by `connectionTimeoutMilliseconds`.
    public var maxRetries: Int = 3
    /// `user:password`: digest authentication, and nodes created readable and writable by that
    /// user only (ZooKeeper's CREATOR_ALL_ACL), as ElasticJob does.
    public var digest: String?
    /// Shardwork's own: keep trying to reach ZooKeeper at start-up instead of exiting after
    /// `maxRetries`.
    public var waitForServer = false
    /// Shardwork's fencing: when ZooKeeper has not been heard from for this fraction of the session
    /// timeout, the host asks its running items to stop and starts no new one, before the session
    /// can expire and another host be handed its items. Between 0 and 1.
    public var cancelItemsAtSessionFraction = 0.5
    /// Shardwork's own: the ElasticJob version whose nodes must be able to read what this host writes
    /// into the namespace (the executor key's spelling, time zones as GMT offsets).
    public var elasticJobCompatibility: ElasticJobCompatibility = .default

    public init(serverLists: String, namespace: String) {
        self.serverLists = serverLists
        self.namespace = namespace
    }
}
