import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

/// Jobs removed, re-added and expired around a running host; the worker pool under a busy thread.
@Suite("Jobs that come and go", .stopsWhatItStarts)
struct JobLifecycleTests {
    /// One job of two items, firing every second.
    static let orders = """
        jobs:
          - jobName: orders
            jobType: c-echo
            cron: "* * * * * ?"
            shardingTotalCount: 2
        """

    @Test("a removed job's runtime is freed, whether a fire of it was armed or not", arguments: [false, true])
    func retiredRuntimeFreed(armed: Bool) async throws {
        let cluster = try await ClusterHarness(Self.orders, hosts: 1)
        try await cluster.startAll()
        let member = cluster.hosts[0]
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        weak var weakRuntime: JobRuntime?
        do {
            let runtime = try #require(member.host.runtimes["orders"])
            weakRuntime = runtime
            if armed {
                cluster.clock.advance(to: (ClusterHarness.start / 1000 + 2) * 1000 - 100)
                #expect(await eventually { runtime.armedDeadline != nil })
            }
        }
        let ops = ClusterOperations(registry: cluster.server.connect(), logger: CapturedLog().logger())
        try await ops.removeJob("orders")
        #expect(await eventually { member.host.runtimes["orders"] == nil })
        try await Task.sleep(for: .milliseconds(300))
        #expect(weakRuntime == nil, "the retired runtime is still alive (armed: \(armed))")
        await cluster.shutdownAll()
    }

    @Test("a job removed and added again while a host is disconnected runs on that host again")
    func removedAndReAdded() async throws {
        let cluster = try await ClusterHarness(Self.orders, hosts: 1)
        try await cluster.startAll()
        let member = cluster.hosts[0]
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        #expect(cluster.items(of: member, job: "orders", fire: 1) == [0, 1])
        let ops = ClusterOperations(registry: cluster.server.connect(), logger: CapturedLog().logger())
        let stored = try await ops.configuration(of: "orders")
        member.registry.disconnect()
        try await ops.removeJob("orders")
        try await ops.addJob(try #require(stored.configuration), addedBy: "review")
        member.registry.reconnect()
        try await Task.sleep(for: .milliseconds(500))
        for second in Int64(2)...8 {
            cluster.advance(toSecond: second)
            try await Task.sleep(for: .milliseconds(300))
        }
        let ranAgain = (2...8).contains { !cluster.items(of: member, job: "orders", fire: $0).isEmpty }
        #expect(ranAgain, "never ran again:\n\(member.log.messages.suffix(40).joined(separator: "\n"))")
        let instances = (try? await ops.job("orders"))?.instances.map(\.instanceId) ?? []
        #expect(instances == [member.host.services.instance.id], "the host registered again in the new job")
        await cluster.shutdownAll()
    }

    @Test("a job shut down on a host by a command stays off there; removed from the cluster and added again, it runs there again")
    func shutDownThenReAdded() async throws {
        let cluster = try await ClusterHarness(Self.orders, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let target = cluster.hosts[1]
        try await cluster.hosts[0].host.requestShutdown("orders", instance: target.instance.id)
        #expect(await eventually { !target.host.isActive("orders") })
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2, on: [cluster.hosts[0]])
        #expect(cluster.items(of: target, job: "orders", fire: 2).isEmpty, "off on the host it was shut down on")

        let ops = ClusterOperations(registry: cluster.server.connect(), logger: CapturedLog().logger())
        let stored = try await ops.configuration(of: "orders")
        try await ops.removeJob("orders")
        #expect(await eventually { target.host.runtimes["orders"] == nil }, "\(target.log.messages.suffix(10))")
        try await ops.addJob(try #require(stored.configuration), addedBy: "test")
        #expect(await eventually { target.host.isActive("orders") }, "\(target.log.messages.suffix(10))")
        for second in Int64(3)...8 {
            cluster.advance(toSecond: second)
            try await Task.sleep(for: .milliseconds(300))
        }
        let ranAgain = (3...8).contains { !cluster.items(of: target, job: "orders", fire: $0).isEmpty }
        #expect(ranAgain, "never ran again:\n\(target.log.messages.suffix(30).joined(separator: "\n"))")
        await cluster.shutdownAll()
    }

    @Test("a job removed while the host's session was expired is not brought back by the re-registration")
    func removedDuringExpiry() async throws {
        let cluster = try await ClusterHarness(Self.orders, hosts: 1)
        try await cluster.startAll()
        let member = cluster.hosts[0]
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let ops = ClusterOperations(registry: cluster.server.connect(), logger: CapturedLog().logger())
        member.registry.expire()
        try await Task.sleep(for: .milliseconds(200))
        try await ops.removeJob("orders")
        member.registry.renewSession()
        try await Task.sleep(for: .milliseconds(1500))
        let dump = (try? await ops.dump(job: "orders"))?.map(\.path) ?? []
        #expect(dump.isEmpty, "removed job is back: \(dump)\n\(member.log.messages.suffix(15).joined(separator: "\n"))")
        await cluster.shutdownAll()
    }
}
