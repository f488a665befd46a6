import Foundation

// What ClusterOperations answers with. Every model is the JSON body of an HTTP API answer, so the
// field names are ElasticJob's (its lifecycle module's `JobBriefInfo`, `ShardingInfo`,
// `ServerBriefInfo`) where it has them, in camelCase otherwise.

/// One job in the cluster: ElasticJob's `JobBriefInfo`, plus what Shardwork adds.
public struct JobBrief: Sendable, Equatable, Codable {
    /// ElasticJob's `JobStatus`.
    public enum Status: String, Sendable, Equatable, Codable {
        /// Instances run the job and every item is assigned to one of them.
        case ok = "OK"
        /// No instance runs the job.
        case crashed = "CRASHED"
        /// Every server of the job is disabled.
        case disabled = "DISABLED"
        /// A resharding is due: some item is assigned to an instance that is gone, or no item is
        /// assigned at all.
        case shardingFlag = "SHARDING_FLAG"

        /// ElasticJob's rules (`JobStatisticsAPIImpl.getJobStatus`), in its order: `CRASHED` without
        /// instances; `DISABLED` when every `servers/*` value is `DISABLED` (also when there is no
        /// server node); `SHARDING_FLAG` when some non-empty `sharding/{i}/instance` is not a live
        /// instance, or no item has an owner; `OK` otherwise.
        package static func of(_ snapshot: JobSnapshot) -> Status {
            if snapshot.instances.isEmpty { return .crashed }
            if snapshot.servers.values.allSatisfy({ $0 == ServerStatus.disabled.rawValue }) { return .disabled }
            let owners = Set(snapshot.items.values.compactMap(\.owner).filter { !$0.isEmpty })
            if owners.isEmpty || !owners.isSubset(of: snapshot.instances.keys) { return .shardingFlag }
            return .ok
        }
    }

    public var jobName: String
    /// The job type (the value of the job's root node).
    public var jobType: String
    public var description: String
    /// `nil` for a one-off job, and when the configuration cannot be read.
    public var cron: String?
    /// Live instances (children of `instances/`).
    public var instanceCount: Int
    /// 0 when the configuration cannot be read.
    public var shardingTotalCount: Int
    public var status: Status
    /// The job was added to the running cluster (it has a `dynamic` node) rather than configured
    /// in the hosts' files.
    public var dynamic: Bool
    /// Instances that cannot run the job (children of `incapable/`), sorted.
    public var incapableInstances: [String]
    /// Why the stored configuration cannot be read, when it cannot; the fields that come from it
    /// are then empty. `updateConfiguration` replaces it.
    public var configurationError: String?

    public init(
        jobName: String, jobType: String, description: String, cron: String?, instanceCount: Int,
        shardingTotalCount: Int, status: Status, dynamic: Bool, incapableInstances: [String],
        configurationError: String? = nil
    ) {
        self.jobName = jobName
        self.jobType = jobType
        self.description = description
        self.cron = cron
        self.instanceCount = instanceCount
        self.shardingTotalCount = shardingTotalCount
        self.status = status
        self.dynamic = dynamic
        self.incapableInstances = incapableInstances
        self.configurationError = configurationError
    }
}

/// Everything about one job: its brief, its leader, each item, instance and server.
public struct JobStatus: Sendable, Equatable, Codable {
    public var brief: JobBrief
    /// The leader's instance id (`leader/election/instance`), if there is a leader.
    public var leader: String?
    /// The resharding flag (`leader/sharding/necessary`): items are reassigned at the next fire.
    public var reshardingNecessary: Bool
    /// Items `0..<shardingTotalCount`, in order (none when the configuration cannot be read).
    public var items: [ShardingInfo]
    /// Live instances, sorted by id.
    public var instances: [InstanceInfo]
    /// Server nodes, sorted by IP.
    public var servers: [ServerInfo]
    /// Instances that cannot run the job and why, sorted by id.
    public var incapable: [IncapableInstance]
    /// Who added the job and when, for a job added to the running cluster whose `dynamic` node
    /// holds that record.
    public var addedBy: DynamicJobRecord?

    public init(
        brief: JobBrief, leader: String?, reshardingNecessary: Bool, items: [ShardingInfo], instances: [InstanceInfo],
        servers: [ServerInfo], incapable: [IncapableInstance], addedBy: DynamicJobRecord?
    ) {
        self.brief = brief
        self.leader = leader
        self.reshardingNecessary = reshardingNecessary
        self.items = items
        self.instances = instances
        self.servers = servers
        self.incapable = incapable
        self.addedBy = addedBy
    }
}

/// One sharding item: ElasticJob's `ShardingInfo`, plus the markers Shardwork reads.
public struct ShardingInfo: Sendable, Equatable, Codable {
    /// ElasticJob's `ShardingInfo.ShardingStatus`.
    public enum Status: String, Sendable, Equatable, Codable {
        /// `sharding/{i}/disabled` exists: the owner skips the item.
        case disabled = "DISABLED"
        /// `sharding/{i}/running` exists.
        case running = "RUNNING"
        /// The item's owner is not a live instance (or it has none): it waits for a resharding.
        case shardingFlag = "SHARDING_FLAG"
        /// Assigned to a live instance, waiting for the next fire.
        case pending = "PENDING"

        /// ElasticJob's rules (`ShardingStatisticsAPIImpl`, `ShardingStatus.getShardingStatus`), in
        /// its order: disabled, running, owner not live, pending.
        package static func of(_ item: JobSnapshot.Item?, in snapshot: JobSnapshot) -> Status {
            if item?.disabled == true { return .disabled }
            if item?.running != nil { return .running }
            guard let owner = item?.owner, snapshot.instances[owner] != nil else { return .shardingFlag }
            return .pending
        }
    }

    public var item: Int
    /// The owner (`sharding/{i}/instance`).
    public var instanceId: String?
    /// The owner's server IP, from its instance node (as ElasticJob reads it): `nil` when the owner
    /// is not live.
    public var serverIp: String?
    public var status: Status
    /// ElasticJob's flag: `sharding/{i}/failover` exists (an instance runs the item for a crashed one).
    public var failover: Bool
    /// The instance in `sharding/{i}/failover`.
    public var failoverInstanceId: String?
    /// The instance in `sharding/{i}/running` (empty for ElasticJob ≤ 3.0.1's value).
    public var runningInstanceId: String?
    /// `sharding/{i}/misfire`: a fire came while the item was running.
    public var misfire: Bool
    /// The instance in `sharding/{i}/failovering`: the failover claim, which survives its taker.
    public var failoveringInstanceId: String?
    /// The item's fencing epoch: the registry transaction that created the failover claim, or
    /// else the assignment (`JobSnapshot.Item.epoch`). Every new assignment or claim has a larger one.
    public var epoch: UInt64?
    /// The item of a crashed instance waits for a failover taker (`leader/failover/items/{i}`).
    public var queuedForFailover: Bool

    public init(
        item: Int, instanceId: String?, serverIp: String?, status: Status, failover: Bool, failoverInstanceId: String?,
        runningInstanceId: String?, misfire: Bool, failoveringInstanceId: String?, epoch: UInt64?, queuedForFailover: Bool
    ) {
        self.item = item
        self.instanceId = instanceId
        self.serverIp = serverIp
        self.status = status
        self.failover = failover
        self.failoverInstanceId = failoverInstanceId
        self.runningInstanceId = runningInstanceId
        self.misfire = misfire
        self.failoveringInstanceId = failoveringInstanceId
        self.epoch = epoch
        self.queuedForFailover = queuedForFailover
    }

    /// Item `item` as `snapshot` has it.
    init(item: Int, in snapshot: JobSnapshot) {
        let record = snapshot.items[item]
        let owner = record?.owner
        self.init(
            item: item, instanceId: owner, serverIp: owner.flatMap { snapshot.instances[$0]?.serverIP },
            status: .of(record, in: snapshot), failover: record?.failover != nil, failoverInstanceId: record?.failover,
            runningInstanceId: record?.running, misfire: record?.misfire ?? false,
            failoveringInstanceId: record?.failovering, epoch: record?.epoch,
            queuedForFailover: snapshot.failoverQueue.contains(item))
    }
}

/// A live instance of a job (`instances/{id}`).
public struct InstanceInfo: Sendable, Equatable, Codable {
    /// `ip@-@pid`.
    public var instanceId: String
    public var serverIp: String
    /// The process id in the instance id.
    public var pid: Int32?

    public init(instanceId: String, serverIp: String, pid: Int32?) {
        self.instanceId = instanceId
        self.serverIp = serverIp
        self.pid = pid
    }
}

/// A server of a job (`servers/{ip}`).
public struct ServerInfo: Sendable, Equatable, Codable {
    public var serverIp: String
    /// The node's value: `ENABLED` or `DISABLED` (as stored, so anything else shows as it is).
    public var status: String

    public init(serverIp: String, status: String) {
        self.serverIp = serverIp
        self.status = status
    }
}

/// An instance that cannot run a job (`incapable/{id}`), and what it lacks.
public struct IncapableInstance: Sendable, Equatable, Codable {
    public var instanceId: String
    /// The node's value: what the instance is missing (a plugin, a provider).
    public var reason: String

    public init(instanceId: String, reason: String) {
        self.instanceId = instanceId
        self.reason = reason
    }
}

/// One server across every job: ElasticJob's `ServerBriefInfo`.
public struct ServerBrief: Sendable, Equatable, Codable {
    public var serverIp: String
    /// The jobs with a `servers/{serverIp}` node, sorted.
    public var jobNames: [String]
    /// Live instances on this server, over all its jobs, sorted.
    public var instances: [String]
    public var jobsNum: Int
    /// Jobs whose `servers/{serverIp}` is `DISABLED` (in any case, as ElasticJob compares).
    public var disabledJobsNum: Int
    public var instancesNum: Int

    public init(serverIp: String, jobNames: [String], instances: [String], disabledJobsNum: Int) {
        self.serverIp = serverIp
        self.jobNames = jobNames
        self.instances = instances
        self.jobsNum = jobNames.count
        self.disabledJobsNum = disabledJobsNum
        self.instancesNum = instances.count
    }
}

/// A server node that `disable` or `enable` wrote.
public struct ServerStatusChange: Sendable, Equatable, Codable {
    public var jobName: String
    public var serverIp: String
    /// What the node holds now: `ENABLED` or `DISABLED`.
    public var status: String

    public init(jobName: String, serverIp: String, status: String) {
        self.jobName = jobName
        self.serverIp = serverIp
        self.status = status
    }
}

/// An instance asked to stop running a job (`shutdown/{instanceId}`).
public struct ShutdownRequest: Sendable, Equatable, Codable {
    public var jobName: String
    public var instanceId: String

    public init(jobName: String, instanceId: String) {
        self.jobName = jobName
        self.instanceId = instanceId
    }
}

/// A job's configuration as the registry holds it.
public struct StoredJobConfiguration: Sendable, Equatable, Codable {
    /// The configuration read from ``yaml``, with the job type of the job's root node; `nil` when
    /// it cannot be read (``configurationError`` says why).
    public var configuration: JobConfiguration?
    /// The `config` node's text, as stored (ElasticJob's YAML).
    public var yaml: String
    /// The `config` node's data version: pass it to `updateConfiguration` so that an update made
    /// meanwhile by someone else is not overwritten.
    public var version: Int32
    public var configurationError: String?

    public init(configuration: JobConfiguration?, yaml: String, version: Int32, configurationError: String? = nil) {
        self.configuration = configuration
        self.yaml = yaml
        self.version = version
        self.configurationError = configurationError
    }
}

/// The value of a job's `dynamic` node: who added the job to the running cluster, and when.
public struct DynamicJobRecord: Sendable, Equatable, Codable {
    public var addedBy: String
    /// ISO 8601, UTC (`2026-12-01T12:00:00Z`).
    public var addedAt: String

    public init(addedBy: String, addedAt: String) {
        self.addedBy = addedBy
        self.addedAt = addedAt
    }

    /// The node's JSON text.
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Two strings always encode.
        let data = (try? encoder.encode(self)) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads a node's value; `nil` when it is not such a record.
    static func parse(_ text: String) -> DynamicJobRecord? {
        try? JSONDecoder().decode(DynamicJobRecord.self, from: Data(text.utf8))
    }
}

/// One node of a dump: its path and its value as text.
public struct DumpEntry: Sendable, Equatable, Codable {
    public var path: String
    public var value: String

    public init(path: String, value: String) {
        self.path = path
        self.value = value
    }
}
