/// What the registry says about one job at one moment: leadership, flags, instances, servers and
/// every item's markers. Coordination decisions are pure functions of a snapshot (below), so they
/// can be tested without a registry; ``JobCoordinator`` reads snapshots and applies the writes.
public struct JobSnapshot: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        /// The instance that owns the item (`sharding/{i}/instance`).
        public var owner: String?
        /// The fencing epoch of that assignment: the registry transaction that created the node.
        public var ownerEpoch: UInt64?
        /// The instance running the item (`sharding/{i}/running`), `""` for ElasticJob ≤ 3.0.1's value.
        public var running: String?
        public var misfire = false
        public var disabled = false
        public var failover: String?
        public var failoverEpoch: UInt64?
        public var failovering: String?

        public init() {}
    }

    /// The leader's instance id.
    public var leader: String?
    public var reshardingNecessary = false
    public var shardingProcessing = false
    /// Live instances by id (children of `instances/`).
    public var instances: [String: JobInstance] = [:]
    /// Server status by IP (`servers/{ip}`).
    public var servers: [String: String] = [:]
    /// Items by number (children of `sharding/`).
    public var items: [Int: Item] = [:]
    /// The data version of the `config` node, to notice a change.
    public var configVersion: Int32?
    /// A trigger request for the instance that read the snapshot is waiting (`trigger/{id}`).
    public var triggerRequested = false
    /// A shutdown command for the instance that read the snapshot is waiting (`shutdown/{id}`).
    public var shutdownRequested = false

    public init() {}
}

/// ElasticJob's decisions (reference §4), as pure functions of a snapshot.
public enum CoordinationRules {
    /// Java's `String.compareTo`: UTF-16 code units, lexicographically.
    public static func javaPrecedes(_ a: String, _ b: String) -> Bool {
        a.utf16.lexicographicallyPrecedes(b.utf16)
    }

    /// Whether a server takes part: its status is `ENABLED` and some live instance runs on it
    /// (ElasticJob's `isAvailableServer`).
    public static func isServerAvailable(_ snapshot: JobSnapshot, ip: String) -> Bool {
        snapshot.servers[ip] == ServerStatus.enabled.rawValue
            && snapshot.instances.values.contains { $0.serverIP == ip }
    }

    /// The instances a strategy shards over: live instances whose server is `ENABLED`, in descending
    /// order of instance id, as ElasticJob's `getAvailableJobInstances` hands them to the strategy.
    public static func availableInstances(_ snapshot: JobSnapshot) -> [String] {
        snapshot.instances.values
            .filter { snapshot.servers[$0.serverIP] == ServerStatus.enabled.rawValue }
            .map(\.id)
            .sorted { javaPrecedes($1, $0) }
    }

    public static func isLeader(_ snapshot: JobSnapshot, _ instanceID: String) -> Bool {
        snapshot.leader == instanceID
    }

    /// Sharding happens at a fire when the flag is set and there is someone to shard over.
    public static func needsSharding(_ snapshot: JobSnapshot) -> Bool {
        snapshot.reshardingNecessary && !availableInstances(snapshot).isEmpty
    }

    /// Items of `0..<total` assigned to `instance`; none when its server is not available.
    public static func assignedItems(_ snapshot: JobSnapshot, _ instance: JobInstance, total: Int) -> [Int] {
        guard isServerAvailable(snapshot, ip: instance.serverIP) else { return [] }
        return (0..<total).filter { snapshot.items[$0]?.owner == instance.id }
    }

    /// The items this instance runs in a normal fire: its assigned items, less those another
    /// instance took over for failover, those disabled, and (with monitorExecution) those whose
    /// running marker is still there.
    public static func itemsToRun(
        _ snapshot: JobSnapshot, _ instance: JobInstance, total: Int, failover: Bool, monitorExecution: Bool
    ) -> [Int] {
        assignedItems(snapshot, instance, total: total).filter { item in
            let record = snapshot.items[item] ?? JobSnapshot.Item()
            if failover && record.failover != nil { return false }
            if record.disabled { return false }
            if monitorExecution && record.running != nil { return false }
            return true
        }
    }

    /// Whether another live instance is running any of `0..<total`. A marker of an instance that is
    /// gone does not count: ElasticJob's leader waits for such stale markers forever, and the job
    /// with it.
    public static func hasLiveRunningItems(_ snapshot: JobSnapshot, total: Int, excluding instanceID: String) -> Bool {
        (0..<total).contains { item in
            guard let runner = snapshot.items[item]?.running, runner != instanceID else { return false }
            return snapshot.instances[runner] != nil
        }
    }

    /// Whether any of `0..<total` has a running marker.
    public static func hasRunningItems(_ snapshot: JobSnapshot, total: Int) -> Bool {
        (0..<total).contains { snapshot.items[$0]?.running != nil }
    }

    /// The owners of items that are not live instances any more (reconcile's trigger).
    public static func hasItemsOfOfflineInstances(_ snapshot: JobSnapshot, total: Int) -> Bool {
        (0..<total).contains { item in
            guard let owner = snapshot.items[item]?.owner else { return true }
            return snapshot.instances[owner] == nil
        }
    }
}
