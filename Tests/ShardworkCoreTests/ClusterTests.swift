import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

/// Several hosts, each with its own session on one embedded registry server, sharing a manual
/// clock: a cluster in one process, running the same coordination code as over ZooKeeper. Its
/// monotonic time moves by hand too, so that however slowly a busy machine runs the steps between
/// two moves, no deadline of the hosts (the wait for a resharding, say) runs out on its own.
final class ClusterHarness: Sendable {
    static let start = HostHarness.start
    let clock = ManualClock(now: ClusterHarness.start, monotonic: .manual)
    /// How far the registry's clock (its nodes' creation times) runs ahead of the hosts' clock, in
    /// milliseconds.
    let registryClockAhead = Offset()

    final class Offset: Sendable {
        private let milliseconds = Atomic<Int64>(0)
        var value: Int64 {
            get { milliseconds.load(ordering: .relaxed) }
            set { milliseconds.store(newValue, ordering: .relaxed) }
        }
    }
    let server: EmbeddedRegistryServer
    let providers = ProviderRegistry()
    let plugins: TemporaryDirectory
    let yaml: String
    let hosts: [Member]

    final class Member: Sendable {
        let instance: JobInstance
        let registry: EmbeddedRegistry
        let host: ShardworkHost
        let log: CapturedLog
        /// Every event of the host, from before it starts.
        let events: EventRecorder

        init(instance: JobInstance, registry: EmbeddedRegistry, host: ShardworkHost, log: CapturedLog) {
            self.instance = instance
            self.registry = registry
            self.host = host
            self.log = log
            events = EventRecorder(host.events)
        }

        func lines(containing text: String) -> [String] { log.messages.filter { $0.contains(text) } }
    }

    init(_ yaml: String, hosts count: Int) async throws {
        self.yaml = yaml
        plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let clock = self.clock
        let ahead = registryClockAhead
        server = EmbeddedRegistryServer(clock: { clock.now() + ahead.value })
        var hosts: [Member] = []
        for number in 1...count {
            hosts.append(try await Self.member(number, yaml: yaml, server: server, providers: providers, clock: clock))
        }
        self.hosts = hosts
    }

    static func member(_ number: Int, yaml: String, server: EmbeddedRegistryServer, providers: ProviderRegistry, clock: ManualClock) async throws -> Member {
        let instance = JobInstance(id: "10.0.0.\(number)@-@\(number)", serverIP: "10.0.0.\(number)")
        let registry = server.connect()
        let log = CapturedLog()
        let host = try await ShardworkHost(
            configuration: try HostConfigurationReader.parse(yaml), providers: providers, registry: registry,
            clock: clock, instance: instance, logger: log.logger(), processorCount: 2)
        TestScope.onEnd { await host.shutdown() }
        return Member(instance: instance, registry: registry, host: host, log: log)
    }

    /// Another host with the same configuration (not started).
    func newMember(_ number: Int) async throws -> Member {
        try await Self.member(number, yaml: yaml, server: server, providers: providers, clock: clock)
    }

    func startAll() async throws {
        for member in hosts { try await member.host.start() }
    }

    func advance(toSecond seconds: Int64) {
        clock.advance(to: (Self.start / 1000 + seconds) * 1000)
    }

    /// The items each host ran for `job` at its `fire`-th fire (1-based), from its fire events.
    func items(of member: Member, job: String, fire: Int) -> [Int] {
        let fireTime = (Self.start / 1000 + Int64(fire)) * 1000
        return member.events.fireEnds(job).filter { $0.fireTime == fireTime }.flatMap { end in
            Array(repeating: end.items, count: end.runs).flatMap { $0 }
        }.sorted()
    }

    /// Waits until each host has been through `count` fires of `job`: ended, or skipped.
    func waitForFires(_ job: String, count: Int, on members: [Member]? = nil, sourceLocation: SourceLocation = #_sourceLocation) async {
        for member in members ?? hosts {
            let arrived = await member.events.waitFor(count: count) { kind in
                switch kind {
                case .fireEnded(let end): end.job == job
                case .fireSkipped(let skipped, _, _): skipped == job
                default: false
                }
            }
            #expect(arrived, "\(member.instance.id) did not fire \(job) \(count) times:\n\(member.events.kinds().map { "\($0)" }.joined(separator: "\n"))", sourceLocation: sourceLocation)
        }
    }

    /// Waits until the resharding flag of `job` is set (membership changes are noticed through watches).
    func waitForReshardingFlag(_ job: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        let peer = server.connect()
        let flagged = await eventually { (try? await peer.exists("/\(job)/leader/sharding/necessary", watch: nil)) != nil }
        #expect(flagged, "the resharding flag of \(job) was not set", sourceLocation: sourceLocation)
        await peer.close()
    }

    func shutdownAll() async {
        for member in hosts { await member.host.shutdown() }
    }
}

@Suite("Cluster coordination", .stopsWhatItStarts)
struct ClusterTests {
    static let job = """
        jobs:
          - jobName: orders
            jobType: c-echo
            cron: "* * * * * ?"
            shardingTotalCount: 6
        """

    @Test("three hosts split a job's items as the strategy says, in ElasticJob's descending instance order")
    func split() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 3)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        #expect(cluster.items(of: cluster.hosts[2], job: "orders", fire: 1) == [0, 1])
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 1) == [2, 3])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 1) == [4, 5])
        await cluster.shutdownAll()
    }

    @Test("a host leaving and a host joining each cause a resharding at the next fire")
    func membership() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 3)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        await cluster.hosts[2].host.shutdown()
        // The leader learns of the change through a watch; on a busy machine that can come after the
        // next second has already been reached.
        await cluster.waitForReshardingFlag("orders")
        let remaining = Array(cluster.hosts[0...1])
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2, on: remaining)
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 2) == [0, 1, 2])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [3, 4, 5])

        let newcomer = try await cluster.newMember(4)
        try await newcomer.host.start()
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 3)
        await cluster.waitForFires("orders", count: 3, on: remaining)
        await cluster.waitForFires("orders", count: 1, on: [newcomer])
        #expect(cluster.items(of: newcomer, job: "orders", fire: 3) == [0, 1], "\(newcomer.events.kinds())")
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 3) == [2, 3], "\(cluster.hosts[1].events.kinds())")
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 3) == [4, 5], "\(cluster.hosts[0].events.kinds())")
        await newcomer.host.shutdown()
        for member in remaining { await member.host.shutdown() }
    }

    @Test("a membership change flagged after an instant (by the registry's clock) is for the next fire: the instant runs under the assignment in force at it, never under two")
    func flagAfterInstant() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 3)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        #expect(cluster.items(of: cluster.hosts[2], job: "orders", fire: 1) == [0, 1])
        // Host 3 leaves; the registry dates the flag half a second after :02, as when a host that
        // ran :02 leaves and the others fire :02 late.
        cluster.registryClockAhead.value = 1_500
        await cluster.hosts[2].host.shutdown()
        await cluster.waitForReshardingFlag("orders")
        cluster.registryClockAhead.value = 0
        let remaining = Array(cluster.hosts[0...1])
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2, on: remaining)
        // :02 as assigned at :02: the items of the host that left wait; nobody runs them twice.
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 2) == [2, 3])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [4, 5])
        func shardings() -> Int { remaining.map { $0.events.count { if case .sharded = $0 { true } else { false } } }.reduce(0, +) }
        let before = shardings()
        cluster.advance(toSecond: 3)
        await cluster.waitForFires("orders", count: 3, on: remaining)
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 3) == [0, 1, 2])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 3) == [3, 4, 5])
        #expect(shardings() == before + 1, "resharded at :03, once")
        for member in remaining { await member.host.shutdown() }
    }

    @Test("a disabled server gets no items at the next fire, and a disabled leader steps down")
    func disabledServer() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let operatorSession = cluster.server.connect()
        let leader = try #require(try await operatorSession.string("/orders/leader/election/instance"))
        let leaderIP = String(leader.split(separator: "@").first ?? "")
        try await operatorSession.setData("/orders/servers/\(leaderIP)", data: [UInt8](utf8: "DISABLED"), version: nil)
        let other = cluster.hosts.first { $0.instance.id != leader }!
        let disabled = cluster.hosts.first { $0.instance.id == leader }!
        #expect(await eventually { (try? await operatorSession.string("/orders/leader/election/instance")) == other.instance.id })
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.items(of: other, job: "orders", fire: 2) == [0, 1, 2, 3, 4, 5])
        #expect(cluster.items(of: disabled, job: "orders", fire: 2).isEmpty)
        #expect(disabled.events.kinds(job: "orders").filter { $0 == .leaderResigned(job: "orders") }.count == 1)
        #expect(other.events.kinds(job: "orders").contains(.leaderElected(job: "orders")))
        await cluster.shutdownAll()
    }

    @Test("trigger runs the job once on every instance, each with its own items")
    func triggerAll() async throws {
        let cluster = try await ClusterHarness("""
            jobs:
              - jobName: report
                jobType: c-echo
                shardingTotalCount: 4
            """, hosts: 2)
        try await cluster.startAll()
        try await cluster.hosts[0].host.trigger("report")
        await cluster.waitForFires("report", count: 1)
        let all = cluster.hosts.flatMap { $0.lines(containing: "echo report item ") }
        #expect(all.count == 4)
        #expect(cluster.hosts.allSatisfy { $0.events.fireEnds("report").map(\.source) == [.trigger] })
        await cluster.shutdownAll()
    }

    @Test("a shutdown command stops the job on that instance only; the others take its items")
    func remoteShutdown() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let target = cluster.hosts[1]
        try await cluster.hosts[0].host.requestShutdown("orders", instance: target.instance.id)
        #expect(await eventually { !target.host.isActive("orders") })
        let peer = cluster.server.connect()
        #expect(await eventually { (try? await peer.exists("/orders/instances/\(target.instance.id)", watch: nil)) == .some(nil) })
        #expect(try await peer.exists("/orders/shutdown/\(target.instance.id)", watch: nil) == nil)
        // The leader flags the resharding once it sees the instance gone; the next fire applies it.
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2, on: [cluster.hosts[0]])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [0, 1, 2, 3, 4, 5])
        #expect(cluster.items(of: target, job: "orders", fire: 2).isEmpty)
        #expect(await target.events.waitFor { if case .jobStopped = $0 { true } else { false } })
        #expect(target.events.kinds(job: "orders").filter { if case .jobStopped = $0 { true } else { false } } == [
            .jobStopped(job: "orders", reason: "shut down by a command"),
        ])
        await cluster.shutdownAll()
    }

    @Test("an instance node deleted by another client while the host's session lives is ElasticJob's shutdown: the job stops there, the others take its items")
    func instanceNodeDeleted() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let target = cluster.hosts[1]
        let peer = cluster.server.connect()
        // What ElasticJob's JobOperateAPI.shutdown does.
        try await peer.delete("/orders/instances/\(target.instance.id)", version: nil)
        #expect(await target.events.waitFor {
            $0 == .jobStopped(job: "orders", reason: "shut down: its instance node was deleted by another client (ElasticJob's shutdown)")
        })
        #expect(!target.host.isActive("orders"))
        #expect(try await peer.exists("/orders/instances/\(target.instance.id)", watch: nil) == nil, "not written again")
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2, on: [cluster.hosts[0]])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [0, 1, 2, 3, 4, 5])
        #expect(target.events.fireEnds("orders").count == 1, "the stopped host fired no more")
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("session expiry is not a shutdown: no item starts without a session, and with a new one the host registers again and fires")
    func sessionExpiry() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let victim = cluster.hosts[1]
        victim.registry.expire()
        let peer = cluster.server.connect()
        #expect(try await peer.exists("/orders/instances/\(victim.instance.id)", watch: nil) == nil)
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(victim.events.kinds(job: "orders").filter { if case .fireSkipped = $0 { true } else { false } } == [
            .fireSkipped(job: "orders", fireTime: (ClusterHarness.start / 1000 + 2) * 1000, reason: .registryUnavailable),
        ])
        #expect(victim.events.kinds().contains(.registry(.sessionExpired)))
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [0, 1, 2, 3, 4, 5])

        victim.registry.renewSession()
        // Registered again, and items may start on it: the new session's event says both.
        #expect(await victim.events.waitFor { if case .registry(.sessionRenewed) = $0 { true } else { false } })
        #expect(try await peer.exists("/orders/instances/\(victim.instance.id)", watch: nil) != nil)
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 3)
        await cluster.waitForFires("orders", count: 3)
        #expect(cluster.items(of: victim, job: "orders", fire: 3) == [0, 1, 2], "\(victim.events.kinds())")
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 3) == [3, 4, 5])
        #expect(victim.events.kinds().count { if case .registry(.sessionRenewed) = $0 { true } else { false } } == 1)
        await cluster.shutdownAll()
    }

    @Test("a new configuration in the registry is applied by every host: more items reshard, a new cron reschedules")
    func configurationChange() async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        let peer = cluster.server.connect()
        var changed = JobConfiguration(jobName: "orders", jobType: "c-echo", cron: "*/2 * * * * ?", shardingTotalCount: 4)
        changed.reconcileIntervalMinutes = 0
        try await peer.setData("/orders/config", data: [UInt8](utf8: ElasticJobYAML.encode(changed)), version: nil)
        for member in cluster.hosts {
            #expect(await member.events.waitFor { if case .configurationApplied(job: "orders", _) = $0 { true } else { false } })
        }
        await cluster.waitForReshardingFlag("orders")
        // Every 2 seconds now, with 4 items: a fire at second 2, none at 3, one at 4.
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 2) == [0, 1])
        #expect(cluster.items(of: cluster.hosts[0], job: "orders", fire: 2) == [2, 3])
        cluster.advance(toSecond: 3)
        cluster.advance(toSecond: 4)
        await cluster.waitForFires("orders", count: 3)
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 3).isEmpty)
        #expect(cluster.items(of: cluster.hosts[1], job: "orders", fire: 4) == [0, 1])
        await cluster.shutdownAll()
    }

    @Test("a config node a host cannot use (garbage, 1,000,000 items, another job's name) sets the job aside on every host, with the node and the reason; a good one takes it up at once",
          arguments: [
            ("jobName: orders\nshardingTotalCount: [oops\n", "invalid YAML"),
            ("jobName: orders\nshardingTotalCount: 1000000\n", "shardingTotalCount: must be at most 1024, got 1000000"),
            ("jobName: payments\nshardingTotalCount: 6\n", "names job 'payments', but it is the configuration of 'orders'"),
          ])
    func unusableConfiguration(value: String, reason: String) async throws {
        let cluster = try await ClusterHarness(Self.job, hosts: 2)
        try await cluster.startAll()
        let peer = cluster.server.connect()
        try await peer.setData("/orders/config", data: [UInt8](utf8: value), version: nil)
        for member in cluster.hosts {
            #expect(await eventually { member.host.incapableJobs["orders"]?.contains(reason) == true }, "\(member.log.messages)")
            let recorded = await eventually { (try? await peer.string("/orders/incapable/\(member.instance.id)"))?.contains("/orders/config") == true }
            #expect(recorded)
            #expect(member.host.runtimes["orders"] == nil)
            #expect(await member.events.waitFor { if case .jobSetAside(job: "orders", _) = $0 { true } else { false } })
            #expect(member.events.kinds(job: "orders").count { if case .jobSetAside = $0 { true } else { false } } == 1)
        }
        #expect(await eventually { (try? await peer.children("/orders/instances", watch: nil))?.isEmpty == true })
        // Nobody leads or shards a job nobody runs.
        #expect(try await peer.exists("/orders/leader/election/instance", watch: nil) == nil)

        var good = JobConfiguration(jobName: "orders", jobType: "c-echo", cron: "* * * * * ?", shardingTotalCount: 4)
        good.description = "fixed"
        try await peer.setData("/orders/config", data: [UInt8](utf8: ElasticJobYAML.encode(good)), version: nil)
        for member in cluster.hosts {
            #expect(await eventually { member.host.runtimes["orders"]?.job.configuration.shardingTotalCount == 4 }, "\(member.log.messages)")
            #expect(await eventually { member.host.incapableJobs["orders"] == nil })
            let cleared = await eventually { (try? await peer.exists("/orders/incapable/\(member.instance.id)", watch: nil)) == .some(nil) }
            #expect(cleared)
        }
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        #expect(cluster.hosts.flatMap { cluster.items(of: $0, job: "orders", fire: 1) }.sorted() == [0, 1, 2, 3])
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("the leader does not wait for a running marker of an instance that is gone")
    func staleRunningMarker() async throws {
        let cluster = try await ClusterHarness("""
            jobs:
              - jobName: watched
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                monitorExecution: true
            """, hosts: 1)
        let peer = cluster.server.connect()
        try await peer.ensurePath("/watched/sharding/1")
        try await peer.create("/watched/sharding/1/running", data: [UInt8](utf8: "10.9.9.9@-@99"), mode: .persistent)
        try await cluster.startAll()
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("watched", count: 1)
        let member = cluster.hosts[0]
        #expect(try await peer.string("/watched/sharding/0/instance") == member.instance.id)
        #expect(cluster.items(of: member, job: "watched", fire: 1) == [0])
        await cluster.shutdownAll()
    }
}
