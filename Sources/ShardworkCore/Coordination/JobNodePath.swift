/// ElasticJob's registry layout for one job (reference §2): every path Shardwork reads or writes.
public struct JobNodePath: Sendable, Equatable {
    public let job: String

    public init(job: String) { self.job = job }

    /// `/{job}`: holds the job type (ElasticJob: the job class or type).
    public var root: String { "/\(job)" }
    /// `/{job}/config`: the job's configuration as ElasticJob's YAML.
    public var config: String { root + "/config" }
    public var instances: String { root + "/instances" }
    /// `/{job}/instances/{ip@-@pid}`: ephemeral, one per running host.
    public func instance(_ id: String) -> String { instances + "/" + id }
    public var servers: String { root + "/servers" }
    /// `/{job}/servers/{ip}`: `ENABLED` or `DISABLED`.
    public func server(_ ip: String) -> String { servers + "/" + ip }
    public var sharding: String { root + "/sharding" }
    public func item(_ item: Int) -> String { sharding + "/\(item)" }
    /// `/{job}/sharding/{i}/instance`: the instance that owns item `i`.
    public func itemInstance(_ item: Int) -> String { self.item(item) + "/instance" }
    /// `/{job}/sharding/{i}/running`: the instance running item `i` (monitorExecution).
    public func itemRunning(_ item: Int) -> String { self.item(item) + "/running" }
    public func itemMisfire(_ item: Int) -> String { self.item(item) + "/misfire" }
    public func itemDisabled(_ item: Int) -> String { self.item(item) + "/disabled" }
    public func itemFailover(_ item: Int) -> String { self.item(item) + "/failover" }
    public func itemFailovering(_ item: Int) -> String { self.item(item) + "/failovering" }
    public var leader: String { root + "/leader" }
    public var leaderElection: String { leader + "/election" }
    /// `/{job}/leader/election/instance`: ephemeral, the leader's instance id.
    public var leaderInstance: String { leaderElection + "/instance" }
    public var leaderSharding: String { leader + "/sharding" }
    /// `/{job}/leader/failover/items/{i}`: item `i` of a crashed instance waits for a taker.
    public var failoverItems: String { leader + "/failover/items" }
    public func failoverItem(_ item: Int) -> String { failoverItems + "/\(item)" }
    /// `/{job}/leader/sharding/necessary`: the resharding flag.
    public var reshardingNecessary: String { leaderSharding + "/necessary" }
    /// `/{job}/leader/sharding/processing`: ephemeral, the leader is sharding now.
    public var shardingProcessing: String { leaderSharding + "/processing" }
    /// `/{job}/shutdown/{id}`: a command that instance `id` stop running the job. Shardwork's own
    /// node (ElasticJob infers a shutdown from the deletion of the instance node, which a session
    /// expiry also causes, and then stops the job by mistake).
    public var shutdown: String { root + "/shutdown" }
    public func shutdown(_ id: String) -> String { shutdown + "/" + id }
    /// `/{job}/incapable/{id}`: ephemeral, instance `id` cannot run the job (a plugin it names is
    /// not loaded there); the value says what is missing. Shardwork's own node: such an instance
    /// registers no instance node for the job, so it is handed no items.
    public var incapable: String { root + "/incapable" }
    public func incapable(_ id: String) -> String { incapable + "/" + id }
    /// `/{job}/dynamic`: the job was added to the running cluster (`shardwork job add`), so every
    /// host that can run it does. Shardwork's own node; its value says who added it and when.
    public var dynamic: String { root + "/dynamic" }
    public var trigger: String { root + "/trigger" }
    /// `/{job}/trigger/{id}`: a request that instance `id` run the job once now.
    public func trigger(_ id: String) -> String { trigger + "/" + id }
}

/// The values ElasticJob writes into `servers/{ip}`.
public enum ServerStatus: String, Sendable {
    case enabled = "ENABLED"
    case disabled = "DISABLED"
}
