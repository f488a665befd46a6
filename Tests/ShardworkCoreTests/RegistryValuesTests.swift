import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

/// Values in the registry that no host would write (another tool, an operator with zkCli) are
/// explained with their path and handled, never silently taken to mean something harmful.
@Suite("Registry values a host would not write", .stopsWhatItStarts)
struct RegistryValuesTests {
    @Test("an item assigned to an instance that does not exist is resharded by the leader at its periodic check, and runs at the next fire")
    func ownerUnknown() async throws {
        let cluster = try await ClusterHarness(ClusterTests.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let peer = cluster.server.connect()
        // Item 4's owner replaced by an instance nobody runs (no membership change anyone sees).
        try await peer.delete("/orders/sharding/4/instance", version: nil)
        _ = try await peer.create("/orders/sharding/4/instance", data: [UInt8](utf8: "10.9.9.9@-@999"), mode: .persistent)
        // Sharding markers change at every fire: hosts look at the assignment at their periodic
        // check (every 5 s) rather than at each change.
        cluster.advance(toSecond: 6)
        await cluster.waitForReshardingFlag("orders")
        let leaderID = try await peer.string("/orders/leader/election/instance")
        let leader = try #require(cluster.hosts.first { $0.instance.id == leaderID })
        // Said once, after the flag was written.
        let resharding = HostEvent.Kind.registryRepaired(job: "orders", repair: .reshardingForGoneOwners(items: [4], instances: ["10.9.9.9@-@999"]))
        #expect(await leader.events.waitFor { $0 == resharding })
        #expect(leader.events.count { $0 == resharding } == 1)
        let fires = cluster.hosts.map { $0.events.fireEnds("orders").count }
        cluster.advance(toSecond: 7)
        for (member, count) in zip(cluster.hosts, fires) {
            #expect(await member.events.waitForFires("orders", count: count + 1))
        }
        #expect(cluster.hosts.flatMap { cluster.items(of: $0, job: "orders", fire: 7) }.sorted() == [0, 1, 2, 3, 4, 5])
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("an instance node rewritten to name another address is written back by its host, which keeps its items")
    func instanceValueChanged() async throws {
        let cluster = try await ClusterHarness(ClusterTests.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let target = cluster.hosts[1]
        let path = "/orders/instances/\(target.instance.id)"
        let peer = cluster.server.connect()
        _ = try await peer.setData(path, data: [UInt8](utf8: "jobInstanceId: \(target.instance.id)\nserverIp: 10.9.9.9\n"), version: nil)
        #expect(await eventually { (try? await peer.string(path)) == target.instance.yaml }, "\(target.log.messages)")
        let found = "jobInstanceId: \(target.instance.id)\nserverIp: 10.9.9.9\n"
        let rewritten = HostEvent.Kind.registryRepaired(job: "orders", repair: .instanceRewritten(found: found))
        #expect(await target.events.waitFor { $0 == rewritten })
        #expect(target.events.count { $0 == rewritten } == 1)
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.items(of: target, job: "orders", fire: 2) == cluster.items(of: target, job: "orders", fire: 1))
        #expect(!cluster.items(of: target, job: "orders", fire: 2).isEmpty)
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("a server value other than ENABLED or DISABLED enables the server, as in ElasticJob, and is explained once")
    func serverValueUnusual() async throws {
        let cluster = try await ClusterHarness(ClusterTests.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let target = cluster.hosts[1]
        let peer = cluster.server.connect()
        _ = try await peer.setData("/orders/servers/\(target.instance.serverIP)", data: [UInt8](utf8: "MAINTENANCE"), version: nil)
        let explained = "a server node holds neither ENABLED nor DISABLED; taken as ENABLED, as ElasticJob takes anything but DISABLED path=/orders/servers/\(target.instance.serverIP) value='MAINTENANCE'"
        #expect(await eventually { cluster.hosts.allSatisfy { $0.lines(containing: explained).count == 1 } })
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.hosts.allSatisfy { !cluster.items(of: $0, job: "orders", fire: 2).isEmpty })
        #expect(cluster.hosts.flatMap { cluster.items(of: $0, job: "orders", fire: 2) }.sorted() == [0, 1, 2, 3, 4, 5])
        #expect(cluster.hosts.allSatisfy { $0.lines(containing: explained).count == 1 })
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("a leader node no session owns, naming no live instance, is removed, and a host is elected and shards")
    func strayLeader() async throws {
        let cluster = try await ClusterHarness(ClusterTests.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let peer = cluster.server.connect()
        // Another tool replaces the leader with a persistent node naming nobody, and asks for a
        // resharding nobody could do.
        try await peer.delete("/orders/leader/election/instance", version: nil)
        _ = try await peer.create("/orders/leader/election/instance", data: [UInt8](utf8: "10.9.9.9@-@999"), mode: .persistent)
        _ = try await peer.createIfAbsent("/orders/leader/sharding/necessary")
        #expect(await eventually {
            let leader = try? await peer.string("/orders/leader/election/instance")
            return cluster.hosts.contains { $0.instance.id == leader }
        })
        #expect(await eventually {
            cluster.hosts.flatMap { $0.events.kinds(job: "orders") }.contains(.registryRepaired(job: "orders", repair: .strayLeaderRemoved(leader: "10.9.9.9@-@999")))
        })
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.hosts.flatMap { cluster.items(of: $0, job: "orders", fire: 2) }.sorted() == [0, 1, 2, 3, 4, 5])
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("the rule: owners that are not live instances, and only those")
    func goneOwners() {
        var snapshot = JobSnapshot()
        snapshot.instances["a@-@1"] = JobInstance(id: "a@-@1", serverIP: "a")
        for (item, owner) in [(0, "a@-@1"), (1, "b@-@2"), (2, nil)] as [(Int, String?)] {
            var record = JobSnapshot.Item()
            record.owner = owner
            snapshot.items[item] = record
        }
        #expect(CoordinationRules.itemsOfGoneOwners(snapshot, total: 3) == [1: "b@-@2"])
        #expect(CoordinationRules.isEnabled("ENABLED") && CoordinationRules.isEnabled("MAINTENANCE") && CoordinationRules.isEnabled(""))
        #expect(!CoordinationRules.isEnabled("DISABLED") && !CoordinationRules.isEnabled(nil))
    }
}
