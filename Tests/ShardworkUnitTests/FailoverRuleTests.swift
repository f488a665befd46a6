import ShardworkCore
import Testing

@Suite("Failover rules")
struct FailoverRuleTests {
    /// Instances `a` (10.0.0.1) and `b` (10.0.0.2) are live; `gone` (10.0.0.3) is not.
    func snapshot() -> JobSnapshot {
        var snapshot = JobSnapshot()
        snapshot.instances = [
            "10.0.0.1@-@1": JobInstance(id: "10.0.0.1@-@1", serverIP: "10.0.0.1"),
            "10.0.0.2@-@2": JobInstance(id: "10.0.0.2@-@2", serverIP: "10.0.0.2"),
        ]
        snapshot.servers = ["10.0.0.1": "ENABLED", "10.0.0.2": "ENABLED", "10.0.0.3": "ENABLED", "10.0.0.4": "DISABLED"]
        for item in 0..<6 { snapshot.items[item] = JobSnapshot.Item() }
        return snapshot
    }

    @Test("a fire shards first only when the flag was raised at or before its instant (by the registry's clock), and there is someone to shard over")
    func shardingForFire() {
        var snapshot = snapshot()
        #expect(!CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "no flag")
        snapshot.reshardingNecessary = true
        #expect(CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "a flag of unknown time counts as raised before")
        snapshot.reshardingFlaggedAt = 1_500
        #expect(CoordinationRules.needsSharding(snapshot, forFireAt: 2_000))
        snapshot.reshardingFlaggedAt = 2_000
        #expect(CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "raised at the instant: for it")
        snapshot.reshardingFlaggedAt = 2_001
        #expect(!CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "raised after the instant: for the next fire")
        snapshot.reshardingFlaggedAt = 3_000
        #expect(!CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "a second after: still for the next fire")
        #expect(CoordinationRules.needsSharding(snapshot, forFireAt: 3_000))
        snapshot.reshardingFlaggedAt = 3_001
        #expect(CoordinationRules.needsSharding(snapshot, forFireAt: 2_000), "later than a late fire's second (clocks off, an old misfire): for this fire")
        snapshot.instances = [:]
        #expect(!CoordinationRules.needsSharding(snapshot, forFireAt: 3_000), "nobody to shard over")
    }

    @Test("only running items of instances that are gone fail over; owned ones wait for the resharding")
    func onlyRunningItems() {
        var snapshot = snapshot()
        snapshot.items[0]?.owner = "10.0.0.3@-@3"
        snapshot.items[0]?.running = "10.0.0.3@-@3"
        snapshot.items[1]?.owner = "10.0.0.3@-@3"  // owned, not running
        snapshot.items[2]?.running = "10.0.0.1@-@1"  // running on a live instance
        snapshot.items[3]?.running = "10.0.0.4@-@4"  // gone, but its server is disabled
        snapshot.items[4]?.running = "10.0.0.3@-@3"
        snapshot.failoverQueue = [4]  // already queued
        #expect(CoordinationRules.crashedItems(snapshot, total: 6) == [0])
    }

    @Test("a claim whose taker is gone is queued again; a live taker's is not")
    func deadTaker() {
        var snapshot = snapshot()
        snapshot.items[0]?.failovering = "10.0.0.3@-@3"
        snapshot.items[1]?.failovering = "10.0.0.2@-@2"
        snapshot.items[1]?.failover = "10.0.0.2@-@2"
        snapshot.items[2]?.failover = "10.0.0.2@-@2"
        snapshot.items[2]?.running = "10.0.0.3@-@3"  // being taken over now: not queued again
        #expect(CoordinationRules.crashedItems(snapshot, total: 6) == [0])
    }

    @Test("an idle instance's own running markers are left from a lost session, and queued")
    func ownStaleMarkers() {
        var snapshot = snapshot()
        snapshot.items[5]?.running = "10.0.0.1@-@1"
        #expect(CoordinationRules.crashedItems(snapshot, total: 6).isEmpty)
        #expect(CoordinationRules.crashedItems(snapshot, total: 6, idleLocal: "10.0.0.1@-@1") == [5])
    }

    @Test("the next item to take is the first in descending string order, as ElasticJob takes it")
    func order() {
        var snapshot = snapshot()
        snapshot.failoverQueue = [9, 10, 2]
        #expect(CoordinationRules.nextFailoverItem(snapshot, total: 20) == 9)
        #expect(CoordinationRules.nextFailoverItem(snapshot, total: 5) == 2)
    }

    @Test("a normal fire skips items queued or taken over, so failover and resharding never meet")
    func normalFireSkips() {
        var snapshot = snapshot()
        snapshot.servers["10.0.0.1"] = "ENABLED"
        for item in 0..<6 { snapshot.items[item]?.owner = "10.0.0.1@-@1" }
        snapshot.failoverQueue = [1]
        snapshot.items[2]?.failovering = "10.0.0.2@-@2"
        snapshot.items[3]?.failover = "10.0.0.2@-@2"
        let me = JobInstance(id: "10.0.0.1@-@1", serverIP: "10.0.0.1")
        #expect(CoordinationRules.itemsToRun(snapshot, me, total: 6, failover: true, monitorExecution: true) == [0, 4, 5])
    }

    @Test("an item's epoch is its claim's while taken over, its assignment's otherwise")
    func epochs() {
        var item = JobSnapshot.Item()
        item.ownerEpoch = 40
        #expect(item.epoch == 40)
        item.failoveringEpoch = 57
        #expect(item.epoch == 57)
    }
}
