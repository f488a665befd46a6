import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("Job coordinator")
struct CoordinatorTests {
    static let a = JobInstance(id: "10.0.0.1@-@1", serverIP: "10.0.0.1")
    static let b = JobInstance(id: "10.0.0.2@-@2", serverIP: "10.0.0.2")

    func job(_ total: Int = 4) -> JobConfiguration {
        JobConfiguration(jobName: "orders", jobType: "report", cron: "0 * * * * ?", shardingTotalCount: total)
    }

    func strategy(_ name: String = "average") async throws -> ShardingStrategyInstance {
        let registry = try TestPlugins.standardRegistry()
        return try ShardingStrategyInstance(try registry.resolve(.shardingStrategy, name), setup: TestPlugins.setup(name))
    }

    @Test("the first instance leads; when its session expires, another takes over at its next election")
    func election() async throws {
        let server = EmbeddedRegistryServer()
        let sessionA = server.connect()
        let sessionB = server.connect()
        let first = JobCoordinator(registry: sessionA, job: "orders", instance: Self.a)
        let second = JobCoordinator(registry: sessionB, job: "orders", instance: Self.b)
        _ = try await first.register(job())
        _ = try await second.register(job())
        #expect(try await second.snapshot().leader == Self.a.id)
        sessionA.expire()
        #expect(try await second.snapshot().leader == nil)  // the watch dropped the cached snapshot
        try await second.electLeader()
        #expect(try await second.snapshot().leader == Self.b.id)
        #expect(try await second.snapshot().instances.keys.sorted() == [Self.b.id])
    }

    @Test("the leader shards over the available instances in descending id order, in one transaction")
    func sharding() async throws {
        let server = EmbeddedRegistryServer()
        let leader = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a)
        let follower = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b)
        _ = try await leader.register(job(5))
        _ = try await follower.register(job(5))
        let strategy = try await strategy()
        #expect(try await follower.shardIfNecessary(try await follower.snapshot(), total: 5, strategy: strategy) == false)
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: 5, strategy: strategy))
        let snapshot = try await follower.snapshot()
        // Descending order: 10.0.0.2 first, so it gets 0, 1 and the remainder 4.
        #expect(CoordinationRules.assignedItems(snapshot, Self.b, total: 5) == [0, 1, 4])
        #expect(CoordinationRules.assignedItems(snapshot, Self.a, total: 5) == [2, 3])
        #expect(Set((0..<5).compactMap { snapshot.items[$0]?.ownerEpoch }).count == 1)
        #expect(!snapshot.reshardingNecessary)
        // Sharded once: not again until the flag is set.
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: 5, strategy: strategy) == false)
    }

    @Test("a change of instances the leader has sharded over already is not flagged again; a later one is")
    func membershipAlreadySharded() async throws {
        let server = EmbeddedRegistryServer()
        let leader = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a)
        let follower = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b)
        _ = try await leader.register(job())
        _ = try await follower.register(job())
        let strategy = try await strategy()
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: 4, strategy: strategy))
        // A look at the cluster that began before that resharding saw both instances join and ends
        // now: the assignment is made over them already.
        try await leader.setReshardingFlag(forMembership: [Self.b.id, Self.a.id])
        #expect(try await !leader.snapshot().reshardingNecessary)
        // The follower leaves: a membership the leader has not sharded over is flagged.
        let remaining = CoordinationRules.availableInstances(try await leader.snapshot()).filter { $0 != Self.b.id }
        try await leader.setReshardingFlag(forMembership: remaining)
        #expect(try await leader.snapshot().reshardingNecessary)
        // A follower's look flags nothing: only the leader flags.
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: 4, strategy: strategy))
        try await follower.setReshardingFlag(forMembership: [Self.a.id])
        #expect(try await !follower.snapshot().reshardingNecessary)
    }

    @Test("a disabled server gets no items at the next resharding, and its instance runs none")
    func disabledServer() async throws {
        let server = EmbeddedRegistryServer()
        let leader = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a)
        let other = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b)
        _ = try await leader.register(job(4))
        _ = try await other.register(job(4))
        let operator_ = server.connect()
        try await operator_.setData("/orders/servers/10.0.0.2", data: [UInt8](utf8: "DISABLED"), version: nil)
        try await leader.setReshardingFlag()
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: 4, strategy: try await strategy()))
        let snapshot = try await other.snapshot()
        #expect(CoordinationRules.availableInstances(snapshot) == [Self.a.id])
        #expect(CoordinationRules.assignedItems(snapshot, Self.a, total: 4) == [0, 1, 2, 3])
        #expect(CoordinationRules.itemsToRun(snapshot, Self.b, total: 4, failover: false, monitorExecution: false).isEmpty)
    }

    @Test("the cached snapshot follows changes made by other sessions")
    func cacheFollowsOthers() async throws {
        let server = EmbeddedRegistryServer()
        let coordinator = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a)
        _ = try await coordinator.register(job(2))
        #expect(try await coordinator.shardIfNecessary(try await coordinator.snapshot(), total: 2, strategy: try await strategy()))
        #expect(try await coordinator.snapshot().items[1]?.disabled == false)
        let operator_ = server.connect()
        try await operator_.create("/orders/sharding/1/disabled", data: [], mode: .persistent)
        #expect(try await coordinator.snapshot().items[1]?.disabled == true)
        try await operator_.setData("/orders/servers/10.0.0.1", data: [UInt8](utf8: "DISABLED"), version: nil)
        #expect(try await coordinator.snapshot().servers["10.0.0.1"] == "DISABLED")
        try await operator_.create("/orders/leader/sharding/necessary", data: [], mode: .persistent)
        #expect(try await coordinator.snapshot().reshardingNecessary)
    }

    @Test("running markers: one transaction, ephemeral without failover and gone with their session; persistent with it")
    func runningMarkers() async throws {
        let server = EmbeddedRegistryServer()
        let session = server.connect()
        let coordinator = JobCoordinator(registry: session, job: "orders", instance: Self.a)
        _ = try await coordinator.register(job(3))
        _ = try await coordinator.shardIfNecessary(try await coordinator.snapshot(), total: 3, strategy: try await strategy())
        try await coordinator.markRunning([0, 2], persistent: false)
        var snapshot = try await coordinator.snapshot()
        #expect(snapshot.items[0]?.running == Self.a.id && snapshot.items[2]?.running == Self.a.id && snapshot.items[1]?.running == nil)
        #expect(CoordinationRules.itemsToRun(snapshot, Self.a, total: 3, failover: false, monitorExecution: true) == [1])
        try await coordinator.clearRunning([0, 2])
        #expect(!CoordinationRules.hasRunningItems(try await coordinator.snapshot(), total: 3))

        try await coordinator.markRunning([1], persistent: true)
        try await coordinator.markRunning([0], persistent: false)
        session.expire()
        let observer = JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b)
        snapshot = try await observer.snapshot()
        #expect(snapshot.items[1]?.running == Self.a.id)  // persistent: survives the crash, for failover
        #expect(snapshot.items[0]?.running == nil)
    }

    @Test("a job registered under another job type is refused, both types named")
    func typeConflict() async throws {
        let server = EmbeddedRegistryServer()
        _ = try await JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a).register(job())
        var other = job()
        other.jobType = "invoice"
        await #expect {
            try await JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b).register(other)
        } throws: { error in
            "\(error)" == "job 'orders': the registry already has this job with job type 'report', but this host configures job type 'invoice'; rename one of them or change the type"
        }
    }

    @Test("the registry's configuration wins unless overwrite is set")
    func configurationPrecedence() async throws {
        let server = EmbeddedRegistryServer()
        var first = job(4)
        first.jobParameter = "first"
        _ = try await JobCoordinator(registry: server.connect(), job: "orders", instance: Self.a).register(first)
        var second = job(8)
        second.jobParameter = "second"
        let effective = try await JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b).register(second)
        #expect(effective.shardingTotalCount == 4 && effective.jobParameter == "first")
        second.overwrite = true
        let overwritten = try await JobCoordinator(registry: server.connect(), job: "orders", instance: Self.b).register(second)
        #expect(overwritten.shardingTotalCount == 8 && overwritten.jobParameter == "second")
    }
}
