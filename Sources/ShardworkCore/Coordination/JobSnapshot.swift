import Foundation

/// What the registry says about one job at one moment: leadership, flags, instances, servers and
/// every item's markers. Coordination decisions are pure functions of a snapshot (below), so they
/// can be tested without a registry; ``JobCoordinator`` reads snapshots and applies the writes.
package struct JobSnapshot: Sendable, Equatable {
    package struct Item: Sendable, Equatable {
        /// The instance that owns the item (`sharding/{i}/instance`).
        package var owner: String?
        /// The fencing epoch of that assignment: the registry transaction that created the node.
        package var ownerEpoch: UInt64?
        /// The instance running the item (`sharding/{i}/running`), `""` for ElasticJob ≤ 3.0.1's value.
        package var running: String?
        package var misfire = false
        package var disabled = false
        package var failover: String?
        package var failoverEpoch: UInt64?
        package var failovering: String?
        /// The fencing epoch of the failover claim: the transaction that created `failovering`.
        package var failoveringEpoch: UInt64?

        /// The item's current fencing epoch: the failover claim's when there is one, else the
        /// assignment's. Every new assignment and every new claim has a larger one.
        package var epoch: UInt64? { failoveringEpoch ?? ownerEpoch }

        package init() {}
    }

    /// The leader's instance id.
    package var leader: String?
    /// Whether the leader node belongs to a session (ephemeral, as every host writes it): one that
    /// does not was written by another tool and outlives any host.
    package var leaderIsEphemeral = true
    package var reshardingNecessary = false
    /// When the resharding flag was created, by the registry's clock (epoch milliseconds): the
    /// flag applies to fires of later instants only (``CoordinationRules/needsSharding(_:forFireAt:)``).
    package var reshardingFlaggedAt: Int64?
    package var shardingProcessing = false
    /// Live instances by id (children of `instances/`).
    package var instances: [String: JobInstance] = [:]
    /// Server status by IP (`servers/{ip}`).
    package var servers: [String: String] = [:]
    /// Instance nodes whose value is not the instance its id names (`jobInstanceId: {id}`,
    /// `serverIp: {the id's address}`), by id, with the value: another tool wrote them. The
    /// snapshot takes such an instance as its id says; its host writes the node again.
    package var unexpectedInstanceValues: [String: String] = [:]
    /// Items by number (children of `sharding/`).
    package var items: [Int: Item] = [:]
    /// Items of crashed instances waiting for a taker (children of `leader/failover/items`).
    package var failoverQueue: Set<Int> = []
    /// The data version of the `config` node, to notice a change.
    package var configVersion: Int32?
    /// The transaction that created the `config` node: another one means the job was removed and
    /// added again.
    package var configCreated: Int64?
    /// A trigger request for the instance that read the snapshot is waiting (`trigger/{id}`).
    package var triggerRequested = false
    /// A shutdown command for the instance that read the snapshot is waiting (`shutdown/{id}`).
    package var shutdownRequested = false

    package init() {}
}

/// ElasticJob's decisions (reference §4), as pure functions of a snapshot.
package enum CoordinationRules {
    /// Java's `String.compareTo`: UTF-16 code units, lexicographically.
    package static func javaPrecedes(_ a: String, _ b: String) -> Bool {
        a.utf16.lexicographicallyPrecedes(b.utf16)
    }

    /// Whether a server node's value enables its server: as ElasticJob's `isEnableServer` reads
    /// it, anything but `DISABLED` (a node that is missing enables nothing here: every host writes
    /// its own before it takes part).
    package static func isEnabled(_ status: String?) -> Bool {
        guard let status else { return false }
        return status != ServerStatus.disabled.rawValue
    }

    /// Whether a server takes part: its status is not `DISABLED` and some live instance runs on it
    /// (ElasticJob's `isAvailableServer`).
    package static func isServerAvailable(_ snapshot: JobSnapshot, ip: String) -> Bool {
        isEnabled(snapshot.servers[ip]) && snapshot.instances.values.contains { $0.serverIP == ip }
    }

    /// The instances a strategy shards over: live instances whose server is `ENABLED`, in descending
    /// order of instance id, as ElasticJob's `getAvailableJobInstances` hands them to the strategy.
    package static func availableInstances(_ snapshot: JobSnapshot) -> [String] {
        snapshot.instances.values
            .filter { isEnabled(snapshot.servers[$0.serverIP]) }
            .map(\.id)
            .sorted { javaPrecedes($1, $0) }
    }

    package static func isLeader(_ snapshot: JobSnapshot, _ instanceID: String) -> Bool {
        snapshot.leader == instanceID
    }

    /// Sharding happens at a fire when the flag is set and there is someone to shard over.
    package static func needsSharding(_ snapshot: JobSnapshot) -> Bool {
        snapshot.reshardingNecessary && !availableInstances(snapshot).isEmpty
    }

    /// Whether the fire of the instant `fireTime` shards first: only when the flag was raised before
    /// that instant (by the registry's clock, the same for every host). An instant is run under the
    /// assignment in force at it: every host fires it on its own clock, and one that fires it late,
    /// after a membership change, must not run new items for it while another host ran the old ones
    /// (an item would run twice for one instant). A flag raised within a late fire's second after the
    /// instant is for the next fire. One raised later than that (the registry's clock is ahead of the
    /// host's, or the fire is a misfire of an older instant), or of unknown time, is taken as raised
    /// before: a clock off by minutes must not hold every resharding back by as much.
    package static func needsSharding(_ snapshot: JobSnapshot, forFireAt fireTime: Int64) -> Bool {
        guard needsSharding(snapshot) else { return false }
        guard let flaggedAt = snapshot.reshardingFlaggedAt else { return true }
        return flaggedAt <= fireTime || flaggedAt - fireTime > shardingWindowMilliseconds
    }

    /// Items of `0..<total` whose running marker names `instance`: at the start of one of its
    /// runs (one at a time per job on an instance), markers left by an earlier run.
    package static func ownLeftoverMarkers(_ snapshot: JobSnapshot, _ instance: JobInstance, total: Int) -> [Int] {
        snapshot.items.filter { $0.key < total && $0.value.running == instance.id }.map(\.key).sorted()
    }

    /// How long after an instant a flag is still for the next fire: a fire later than this is a
    /// missed one (``JobFireState/lateFireMilliseconds``).
    package static let shardingWindowMilliseconds: Int64 = 1_000

    /// Items of `0..<total` assigned to `instance`; none when its server is not available.
    package static func assignedItems(_ snapshot: JobSnapshot, _ instance: JobInstance, total: Int) -> [Int] {
        guard isServerAvailable(snapshot, ip: instance.serverIP) else { return [] }
        return (0..<total).filter { snapshot.items[$0]?.owner == instance.id }
    }

    /// The items this instance runs in a normal fire: its assigned items, less those another
    /// instance took over for failover, those disabled, and (with monitorExecution) those whose
    /// running marker is still there.
    package static func itemsToRun(
        _ snapshot: JobSnapshot, _ instance: JobInstance, total: Int, failover: Bool, monitorExecution: Bool
    ) -> [Int] {
        assignedItems(snapshot, instance, total: total).filter { item in
            let record = snapshot.items[item] ?? JobSnapshot.Item()
            // An item being failed over, or waiting for a taker, runs there: never twice at once.
            if failover && (record.failover != nil || record.failovering != nil || snapshot.failoverQueue.contains(item)) {
                return false
            }
            if record.disabled { return false }
            if monitorExecution && record.running != nil { return false }
            return true
        }
    }

    /// Whether another live instance is running any of `0..<total`. A marker of an instance that is
    /// gone does not count: ElasticJob's leader waits for such stale markers forever, and the job
    /// with it.
    package static func hasLiveRunningItems(_ snapshot: JobSnapshot, total: Int, excluding instanceID: String) -> Bool {
        (0..<total).contains { item in
            guard let runner = snapshot.items[item]?.running, runner != instanceID else { return false }
            return snapshot.instances[runner] != nil
        }
    }

    /// Whether any of `0..<total` has a running marker.
    package static func hasRunningItems(_ snapshot: JobSnapshot, total: Int) -> Bool {
        (0..<total).contains { snapshot.items[$0]?.running != nil }
    }

    /// The owners of items that are not live instances any more (reconcile's trigger).
    package static func hasItemsOfOfflineInstances(_ snapshot: JobSnapshot, total: Int) -> Bool {
        (0..<total).contains { item in
            guard let owner = snapshot.items[item]?.owner else { return true }
            return snapshot.instances[owner] == nil
        }
    }

    /// Items of `0..<total` assigned to an instance that is not live, with that instance: nobody
    /// runs them until a resharding. A departure is normally seen as a membership change and flags
    /// one; these are the ones such a change missed (an instance that died while no leader looked,
    /// an owner written by another tool), which the leader flags from what it finds.
    package static func itemsOfGoneOwners(_ snapshot: JobSnapshot, total: Int) -> [Int: String] {
        var gone: [Int: String] = [:]
        for item in 0..<total {
            if let owner = snapshot.items[item]?.owner, snapshot.instances[owner] == nil { gone[item] = owner }
        }
        return gone
    }

    /// The instance id's address (`ip@-@pid` → `ip`).
    static func serverIP(of instanceID: String) -> String {
        instanceID.components(separatedBy: "@-@").first ?? instanceID
    }

    /// ElasticJob 3.0.2+'s crash rule (reference §4.4), level-triggered: items whose `running`
    /// marker names an instance that is gone (and whose server is `ENABLED`), or whose failover
    /// claim names a taker that is gone, and that nobody is taking over now. Only items that were
    /// running fail over; items a crashed instance merely owned wait for the next resharding.
    ///
    /// `idleLocal` is the instance that looks, when the job is not running there: its own running
    /// markers are then left over from a run that lost its session, and count as crashed too
    /// (the instance id outlives a session, so nobody else could tell).
    package static func crashedItems(_ snapshot: JobSnapshot, total: Int, idleLocal: String? = nil) -> [Int] {
        (0..<total).filter { item in
            guard let record = snapshot.items[item], !snapshot.failoverQueue.contains(item) else { return false }
            if let taker = record.failovering {
                return snapshot.instances[taker] == nil && (record.failover == nil || snapshot.instances[record.failover!] == nil)
            }
            guard record.failover == nil, let runner = record.running, !runner.isEmpty else { return false }
            if runner == idleLocal { return true }
            guard snapshot.instances[runner] == nil else { return false }
            return isEnabled(snapshot.servers[serverIP(of: runner)])
        }
    }

    /// The next item this instance may take from the failover queue: ElasticJob takes the first in
    /// descending string order ("9" before "10").
    package static func nextFailoverItem(_ snapshot: JobSnapshot, total: Int) -> Int? {
        snapshot.failoverQueue.filter { $0 < total }.map(String.init).sorted(by: >).first.flatMap(Int.init)
    }
}
