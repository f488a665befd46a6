import Foundation
import Logging
@testable import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

/// The registries every operation is tested over: the embedded one and a real ZooKeeper server.
enum OperationsBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case embedded
    case zookeeper

    var testDescription: String { rawValue }

    /// A fresh, empty cluster on this backend: an operator's session and ClusterOperations on it.
    func cluster() async throws -> OperationsCluster {
        switch self {
        case .embedded:
            let server = EmbeddedRegistryServer()
            return try await OperationsCluster { server.connect() }
        case .zookeeper:
            let ensemble = try await SharedZooKeeper.ensemble()
            let namespace = "ops-\(UUID().uuidString.prefix(8))"
            return try await OperationsCluster {
                var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace)
                configuration.sessionTimeoutMilliseconds = 10_000
                return try await ZooKeeperRegistry.connect(configuration, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
            }
        }
    }
}

/// Sessions on one registry: the operator's, and one per coordinator that plays a host.
final class OperationsCluster: Sendable {
    private let connect: @Sendable () async throws -> any RegistryCenter
    private let sessions = Mutex<[any RegistryCenter]>([])
    let operatorSession: any RegistryCenter
    let operations: ClusterOperations
    /// What the operations logged.
    let log: CapturedLog
    static let addedAt = Date(timeIntervalSince1970: 1_800_000_000)

    init(_ connect: @escaping @Sendable () async throws -> any RegistryCenter) async throws {
        self.connect = connect
        let session = try await connect()
        sessions.withLock { $0.append(session) }
        operatorSession = session
        let log = CapturedLog()
        self.log = log
        operations = ClusterOperations(registry: session, logger: log.logger(), now: { OperationsCluster.addedAt })
    }

    func session() async throws -> any RegistryCenter {
        let session = try await connect()
        sessions.withLock { $0.append(session) }
        return session
    }

    /// A coordinator with a session of its own, registered for `job`.
    func host(_ number: Int, _ job: JobConfiguration) async throws -> JobCoordinator {
        let coordinator = JobCoordinator(registry: try await session(), job: job.jobName, instance: Self.instance(number))
        _ = try await coordinator.register(job)
        return coordinator
    }

    static func instance(_ number: Int) -> JobInstance {
        JobInstance(id: "10.0.0.\(number)@-@\(100 + number)", serverIP: "10.0.0.\(number)")
    }

    /// Shards the job as its leader does at a fire.
    func shard(_ leader: JobCoordinator, total: Int) async throws {
        let providers = try TestPlugins.standardRegistry()
        let strategy = try ShardingStrategyInstance(try providers.resolve(.shardingStrategy, "AVG_ALLOCATION"), setup: TestPlugins.setup("AVG_ALLOCATION"))
        leader.invalidateCache()
        #expect(try await leader.shardIfNecessary(try await leader.snapshot(), total: total, strategy: strategy))
    }

    func text(_ path: String) async throws -> String? { try await operatorSession.string(path) }

    func exists(_ path: String) async throws -> Bool { try await operatorSession.exists(path, watch: nil) != nil }

    /// Every path under `path`, for comparing the whole tree before and after a refused operation.
    func tree(_ path: String = "/") async throws -> [String: String] {
        var nodes: [String: String] = [:]
        var stack = [path]
        while let next = stack.popLast() {
            nodes[next] = try await operatorSession.string(next)
            for child in try await operatorSession.childrenIfPresent(next) {
                stack.append(next == "/" ? "/" + child : next + "/" + child)
            }
        }
        return nodes
    }

    func close() async {
        for session in sessions.withLock({ $0 }) { await session.close() }
    }
}

private func orders(_ total: Int = 4) -> JobConfiguration {
    var job = JobConfiguration(jobName: "orders", jobType: "report", cron: "0 * * * * ?", shardingTotalCount: total)
    job.description = "nightly orders"
    return job
}

/// Runs `body` and returns the operation error it throws (or records that it threw none).
private func refusal(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> OperationError? {
    do {
        try await body()
        Issue.record("expected an OperationError, the operation succeeded", sourceLocation: sourceLocation)
    } catch let error as OperationError {
        return error
    } catch {
        Issue.record("expected an OperationError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("Cluster operations", .stopsWhatItStarts)
struct ClusterOperationsTests {
    // MARK: Status rules, without a registry

    @Test("ElasticJob's job status rules, in its order")
    func jobStatusRules() {
        var snapshot = JobSnapshot()
        #expect(JobBrief.Status.of(snapshot) == .crashed)
        snapshot.instances["a@-@1"] = JobInstance(id: "a@-@1", serverIP: "a")
        // No server node at all counts as all disabled, as in ElasticJob.
        #expect(JobBrief.Status.of(snapshot) == .disabled)
        snapshot.servers = ["a": "DISABLED", "b": "DISABLED"]
        #expect(JobBrief.Status.of(snapshot) == .disabled)
        snapshot.servers["a"] = "ENABLED"
        // No item has an owner.
        #expect(JobBrief.Status.of(snapshot) == .shardingFlag)
        var owned = JobSnapshot.Item()
        owned.owner = "a@-@1"
        var empty = JobSnapshot.Item()
        empty.owner = ""
        snapshot.items = [0: owned, 1: empty, 2: JobSnapshot.Item()]
        #expect(JobBrief.Status.of(snapshot) == .ok)
        var gone = JobSnapshot.Item()
        gone.owner = "b@-@2"
        snapshot.items[3] = gone
        #expect(JobBrief.Status.of(snapshot) == .shardingFlag)
    }

    @Test("ElasticJob's item status rules: disabled, then running, then an owner that is gone, else pending")
    func itemStatusRules() {
        var snapshot = JobSnapshot()
        snapshot.instances["a@-@1"] = JobInstance(id: "a@-@1", serverIP: "a")
        var item = JobSnapshot.Item()
        #expect(ShardingInfo.Status.of(nil, in: snapshot) == .shardingFlag)
        #expect(ShardingInfo.Status.of(item, in: snapshot) == .shardingFlag)
        item.owner = "a@-@1"
        #expect(ShardingInfo.Status.of(item, in: snapshot) == .pending)
        item.owner = "b@-@2"
        #expect(ShardingInfo.Status.of(item, in: snapshot) == .shardingFlag)
        item.running = "b@-@2"
        #expect(ShardingInfo.Status.of(item, in: snapshot) == .running)
        item.disabled = true
        #expect(ShardingInfo.Status.of(item, in: snapshot) == .disabled)
    }

    @Test("errors map to HTTP statuses and encode as JSON naming the job and the field")
    func errorModel() throws {
        let error = OperationError(.invalid, job: "orders", field: "item", message: "9 is not an item")
        #expect(error.httpStatus == 422)
        #expect(OperationError(.notFound, job: nil, message: "").httpStatus == 404)
        #expect(OperationError(.conflict, job: nil, message: "").httpStatus == 409)
        #expect(OperationError(.registryFailure, job: nil, message: "").httpStatus == 503)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = String(decoding: try encoder.encode(error), as: UTF8.self)
        #expect(json == #"{"code":"invalid","field":"item","job":"orders","message":"9 is not an item"}"#)
        #expect(error.description == "job 'orders': item: 9 is not an item")
    }

    @Test("a configuration as JSON has ElasticJob's field names and reads back the same; absent fields take the YAML defaults")
    func configurationJSON() throws {
        var job = orders()
        job.timeZone = "Asia/Shanghai"
        job.monitorExecution = true
        job.failover = true
        job.props = JobProperties([(key: "a", value: "1"), (key: "b", value: "2")])
        job.jobListenerTypes = ["log"]
        let data = try JSONEncoder().encode(job)
        #expect(try JSONDecoder().decode(JobConfiguration.self, from: data) == job)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["shardingTotalCount"] as? Int == 4)
        #expect(object["props"] as? [String: String] == ["a": "1", "b": "2"])

        let minimal = try JSONDecoder().decode(
            JobConfiguration.self, from: Data(#"{"jobName":"x","jobType":"t","shardingTotalCount":2}"#.utf8))
        #expect(minimal == JobConfiguration(jobName: "x", jobType: "t", cron: nil, shardingTotalCount: 2))
    }

    // MARK: Statistics

    @Test("jobs: every job with a configuration, sorted, with ElasticJob's status as the cluster changes", arguments: OperationsBackend.allCases)
    func jobsAndStatus(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        #expect(try await cluster.operations.jobs() == [])

        let first = try await cluster.host(1, orders())
        let second = try await cluster.host(2, orders())
        // A node without a configuration is not a job.
        try await cluster.operatorSession.create("/stray", data: [], mode: .persistent)
        var report = JobConfiguration(jobName: "audit", jobType: "report", cron: nil, shardingTotalCount: 2)
        report.description = "one-off"
        try await cluster.operations.addJob(report, addedBy: "alice")

        var jobs = try await cluster.operations.jobs()
        #expect(jobs.map(\.jobName) == ["audit", "orders"])
        #expect(jobs[0] == JobBrief(
            jobName: "audit", jobType: "report", description: "one-off", cron: nil, instanceCount: 0,
            shardingTotalCount: 2, status: .crashed, dynamic: true, incapableInstances: []))
        #expect(jobs[1] == JobBrief(
            jobName: "orders", jobType: "report", description: "nightly orders", cron: "0 * * * * ?", instanceCount: 2,
            shardingTotalCount: 4, status: .shardingFlag, dynamic: false, incapableInstances: []))

        try await cluster.shard(first, total: 4)
        #expect(try await cluster.operations.job("orders").brief.status == .ok)

        try await cluster.operations.disable(job: "orders", server: nil)
        #expect(try await cluster.operations.job("orders").brief.status == .disabled)
        try await cluster.operations.enable(job: "orders", server: "10.0.0.2")
        #expect(try await cluster.operations.job("orders").brief.status == .ok)

        // An owner leaves: its items wait for a resharding.
        await second.unregister()
        jobs = try await cluster.operations.jobs()
        #expect(jobs[1].status == .shardingFlag)
        #expect(jobs[1].instanceCount == 1)
        await first.unregister()
        #expect(try await cluster.operations.job("orders").brief.status == .crashed)
        await cluster.close()
    }

    @Test("job: leader, flag, every item's owner, markers and epoch, instances, servers and incapable instances", arguments: OperationsBackend.allCases)
    func jobDetails(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        var job = orders()
        job.monitorExecution = true
        job.failover = true
        let first = try await cluster.host(1, job)
        let second = try await cluster.host(2, job)
        #expect(try await cluster.operations.job("orders").reshardingNecessary)
        try await cluster.shard(first, total: 4)
        // Markers as hosts write them: a fire's running markers, a misfire, a disabled item, and a
        // failover of item 3 (of 10.0.0.2) taken over by 10.0.0.1, while item 2 waits for a taker.
        first.invalidateCache()
        try await second.markRunning([0], persistent: true)
        try await second.setMisfire([0])
        try await cluster.operations.disableItem(job: "orders", item: 1)
        let registry = cluster.operatorSession
        let one = OperationsCluster.instance(1).id
        let two = OperationsCluster.instance(2).id
        try await registry.create("/orders/sharding/3/failover", data: [UInt8](utf8: one), mode: .persistent)
        try await registry.create("/orders/sharding/3/failovering", data: [UInt8](utf8: one), mode: .persistent)
        try await registry.ensurePath("/orders/leader/failover/items/2")
        let incapableSession = try await cluster.session()
        try await incapableSession.create("/orders/incapable", data: [], mode: .persistent)
        try await incapableSession.create(
            "/orders/incapable/10.0.0.3@-@103", data: [UInt8](utf8: "job type 'report' is not loaded"), mode: .ephemeral)

        let status = try await cluster.operations.job("orders")
        #expect(status.leader == one)
        #expect(!status.reshardingNecessary)
        #expect(status.brief.incapableInstances == ["10.0.0.3@-@103"])
        #expect(status.incapable == [IncapableInstance(instanceId: "10.0.0.3@-@103", reason: "job type 'report' is not loaded")])
        #expect(status.instances == [
            InstanceInfo(instanceId: one, serverIp: "10.0.0.1", pid: 101),
            InstanceInfo(instanceId: two, serverIp: "10.0.0.2", pid: 102),
        ])
        #expect(status.servers == [ServerInfo(serverIp: "10.0.0.1", status: "ENABLED"), ServerInfo(serverIp: "10.0.0.2", status: "ENABLED")])
        #expect(status.addedBy == nil)

        func epoch(_ path: String) async throws -> UInt64? {
            try await registry.exists(path, watch: nil).map { UInt64(bitPattern: $0.createdTransaction) }
        }
        // AVG_ALLOCATION over [10.0.0.2, 10.0.0.1] (descending): 0 and 1 to .2, 2 and 3 to .1.
        #expect(status.items.map(\.instanceId) == [two, two, one, one])
        #expect(status.items.map(\.status) == [.running, .disabled, .pending, .pending])
        #expect(status.items[0] == ShardingInfo(
            item: 0, instanceId: two, serverIp: "10.0.0.2", status: .running, failover: false, failoverInstanceId: nil,
            runningInstanceId: two, misfire: true, failoveringInstanceId: nil, epoch: try await epoch("/orders/sharding/0/instance"),
            queuedForFailover: false))
        #expect(status.items[2].queuedForFailover)
        #expect(status.items[3].failover)
        #expect(status.items[3].failoverInstanceId == one)
        #expect(status.items[3].failoveringInstanceId == one)
        // A failover claim's epoch replaces the assignment's.
        #expect(status.items[3].epoch == (try await epoch("/orders/sharding/3/failovering")))
        #expect(status.items[3].epoch != (try await epoch("/orders/sharding/3/instance")))

        // The owner of 0 and 1 goes: item 0 still runs (its marker is persistent), 1 stays disabled.
        await second.unregister()
        let after = try await cluster.operations.job("orders")
        #expect(after.items.map(\.status) == [.running, .disabled, .pending, .pending])
        #expect(after.items[1].serverIp == nil)
        try await cluster.operations.enableItem(job: "orders", item: 1)
        #expect(try await cluster.operations.job("orders").items[1].status == .shardingFlag)

        // The whole model survives its JSON.
        let decoded = try JSONDecoder().decode(JobStatus.self, from: try JSONEncoder().encode(status))
        #expect(decoded == status)
        #expect(await refusal { _ = try await cluster.operations.job("nope") }?.code == .notFound)
        await cluster.close()
    }

    @Test("a job whose stored configuration is garbage is still listed, with the reason", arguments: OperationsBackend.allCases)
    func garbageConfiguration(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        try await cluster.operatorSession.setData("/orders/config", data: [UInt8](utf8: "shardingTotalCount: [oops\n"), version: nil)
        let brief = try #require(try await cluster.operations.jobs().first)
        #expect(brief.shardingTotalCount == 0)
        #expect(brief.configurationError?.contains("/orders/config") == true)
        #expect(try await cluster.operations.job("orders").items == [])
        let stored = try await cluster.operations.configuration(of: "orders")
        #expect(stored.configuration == nil)
        #expect(stored.yaml == "shardingTotalCount: [oops\n")
        // Items cannot be checked against a total nobody can read.
        #expect(await refusal { try await cluster.operations.disableItem(job: "orders", item: 0) }?.code == .conflict)
        // An update repairs it.
        try await cluster.operations.updateConfiguration(orders(), expectedVersion: stored.version)
        #expect(try await cluster.operations.configuration(of: "orders").configuration == orders())
        await cluster.close()
    }

    @Test("servers: every server over all jobs, its jobs, disabled jobs and instances, sorted by IP", arguments: OperationsBackend.allCases)
    func servers(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        #expect(try await cluster.operations.servers() == [])
        var audit = orders()
        audit.jobName = "audit"
        _ = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        _ = try await cluster.host(2, audit)
        try await cluster.operations.disable(job: "audit", server: "10.0.0.2")
        // Someone wrote the status in lower case: ElasticJob counts it as disabled all the same.
        try await cluster.operatorSession.setData("/orders/servers/10.0.0.1", data: [UInt8](utf8: "disabled"), version: nil)
        let servers = try await cluster.operations.servers()
        #expect(servers == [
            ServerBrief(serverIp: "10.0.0.1", jobNames: ["orders"], instances: ["10.0.0.1@-@101"], disabledJobsNum: 1),
            ServerBrief(serverIp: "10.0.0.2", jobNames: ["audit", "orders"], instances: ["10.0.0.2@-@102"], disabledJobsNum: 1),
        ])
        #expect(servers[1].jobsNum == 2)
        #expect(servers[1].instancesNum == 1)
        await cluster.close()
    }

    // MARK: Operating

    @Test("trigger: one request per live instance; requests for instances that are gone are removed", arguments: OperationsBackend.allCases)
    func trigger(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        try await cluster.operatorSession.create("/orders/trigger/10.0.0.9@-@109", data: [], mode: .persistent)
        let asked = try await cluster.operations.trigger(job: "orders")
        #expect(asked == ["10.0.0.1@-@101", "10.0.0.2@-@102"])
        #expect(try await cluster.operatorSession.children("/orders/trigger", watch: nil).sorted() == asked)
        // Again while the requests wait: still one each.
        try await cluster.operations.trigger(job: "orders")
        #expect(try await cluster.operatorSession.children("/orders/trigger", watch: nil).sorted() == asked)
        #expect(await refusal { try await cluster.operations.trigger(job: "nope") }?.code == .notFound)
        #expect(await refusal { try await cluster.operations.trigger(job: "a/b") }?.field == "job")
        await cluster.close()
    }

    @Test("disable and enable: a job's server, all of a job's servers, a server in every job", arguments: OperationsBackend.allCases)
    func disableEnable(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        var audit = orders()
        audit.jobName = "audit"
        _ = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        _ = try await cluster.host(1, audit)
        let ops = cluster.operations
        func status(_ job: String, _ ip: String) async throws -> String? { try await cluster.text("/\(job)/servers/\(ip)") }

        #expect(try await ops.disable(job: "orders", server: "10.0.0.1") == [ServerStatusChange(jobName: "orders", serverIp: "10.0.0.1", status: "DISABLED")])
        #expect(try await status("orders", "10.0.0.1") == "DISABLED")
        #expect(try await status("orders", "10.0.0.2") == "ENABLED")
        #expect(try await status("audit", "10.0.0.1") == "ENABLED")

        #expect(try await ops.disable(job: "orders", server: nil).map(\.serverIp) == ["10.0.0.1", "10.0.0.2"])
        #expect(try await status("orders", "10.0.0.2") == "DISABLED")

        let changes = try await ops.enable(job: nil, server: "10.0.0.1")
        #expect(changes.map(\.jobName) == ["audit", "orders"])
        #expect(try await status("orders", "10.0.0.1") == "ENABLED")
        #expect(try await status("orders", "10.0.0.2") == "DISABLED")
        #expect(try await status("audit", "10.0.0.1") == "ENABLED")

        // As ElasticJob: a server of a job can be disabled before its host ever joins.
        try await ops.disable(job: "audit", server: "10.0.0.7")
        #expect(try await status("audit", "10.0.0.7") == "DISABLED")

        let before = try await cluster.tree()
        let neither = await refusal { _ = try await ops.disable(job: nil, server: nil) }
        #expect(neither?.code == .invalid)
        #expect(neither?.message.contains("give a job, a server or both") == true)
        #expect(await refusal { _ = try await ops.enable(job: nil, server: "10.9.9.9") }?.code == .notFound)
        #expect(await refusal { _ = try await ops.disable(job: "nope", server: "10.0.0.1") }?.code == .notFound)
        #expect(await refusal { _ = try await ops.disable(job: "nope", server: nil) }?.code == .notFound)
        #expect(try await cluster.tree() == before)
        await cluster.close()
    }

    @Test("disable and enable an item; items outside 0..<shardingTotalCount are refused, naming the range", arguments: OperationsBackend.allCases)
    func items(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        // Before the first sharding, the item's node is made for the marker.
        try await cluster.operations.disableItem(job: "orders", item: 3)
        #expect(try await cluster.exists("/orders/sharding/3/disabled"))
        try await cluster.operations.disableItem(job: "orders", item: 3)
        try await cluster.operations.enableItem(job: "orders", item: 3)
        #expect(try await !cluster.exists("/orders/sharding/3/disabled"))
        try await cluster.operations.enableItem(job: "orders", item: 3)

        let before = try await cluster.tree()
        for item in [-1, 4] {
            let error = await refusal { try await cluster.operations.disableItem(job: "orders", item: item) }
            #expect(error?.code == .invalid)
            #expect(error?.field == "item")
            #expect(error?.job == "orders")
            #expect(error?.message.contains("0..<4") == true)
            #expect(await refusal { try await cluster.operations.enableItem(job: "orders", item: item) }?.field == "item")
        }
        #expect(await refusal { try await cluster.operations.disableItem(job: "nope", item: 0) }?.code == .notFound)
        #expect(try await cluster.tree() == before)
        await cluster.close()
    }

    @Test("shutdown: each selected live instance, by job, server or instance, gets a command node and loses its instance node (ElasticJob's way)", arguments: OperationsBackend.allCases)
    func shutdown(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        var audit = orders()
        audit.jobName = "audit"
        _ = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        _ = try await cluster.host(2, audit)
        let ops = cluster.operations
        let one = OperationsCluster.instance(1).id
        let two = OperationsCluster.instance(2).id

        #expect(try await ops.shutdown(job: nil, server: "10.0.0.2", instance: nil) == [
            ShutdownRequest(jobName: "audit", instanceId: two), ShutdownRequest(jobName: "orders", instanceId: two),
        ])
        #expect(try await cluster.operatorSession.children("/orders/shutdown", watch: nil) == [two])
        #expect(try await cluster.operatorSession.children("/audit/shutdown", watch: nil) == [two])
        let ordersTwo = try await cluster.exists("/orders/instances/\(two)")
        let auditTwo = try await cluster.exists("/audit/instances/\(two)")
        #expect(!ordersTwo && !auditTwo)
        #expect(try await cluster.exists("/orders/instances/\(one)"))

        #expect(try await ops.shutdown(job: "orders", server: nil, instance: one) == [ShutdownRequest(jobName: "orders", instanceId: one)])
        #expect(try await cluster.operatorSession.children("/orders/shutdown", watch: nil).sorted() == [one, two])
        // Asked already: no live instance is left to ask.
        #expect(try await ops.shutdown(job: "orders", server: nil, instance: nil).isEmpty)
        #expect(await refusal { _ = try await ops.shutdown(job: "orders", server: "10.0.0.1", instance: nil) }?.code == .notFound)

        let before = try await cluster.tree()
        #expect(await refusal { _ = try await ops.shutdown(job: nil, server: nil, instance: nil) }?.code == .invalid)
        #expect(await refusal { _ = try await ops.shutdown(job: "nope", server: nil, instance: nil) }?.code == .notFound)
        #expect(await refusal { _ = try await ops.shutdown(job: nil, server: nil, instance: "10.9.9.9@-@1") }?.code == .notFound)
        #expect(await refusal { _ = try await ops.shutdown(job: "audit", server: "10.0.0.1", instance: nil) }?.code == .notFound)
        #expect(try await cluster.tree() == before)
        await cluster.close()
    }

    @Test("removeJob deletes the whole job subtree, live instance nodes included, and returns what it removed", arguments: OperationsBackend.allCases)
    func removeJob(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        var audit = orders()
        audit.jobName = "audit"
        let leader = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        _ = try await cluster.host(1, audit)
        try await cluster.shard(leader, total: 4)
        let dump = try await cluster.operations.dump(job: "orders")
        let removed = try await cluster.operations.removeJob("orders")
        #expect(removed == dump)
        #expect(removed.contains(DumpEntry(path: "/orders/instances/10.0.0.2@-@102", value: OperationsCluster.instance(2).yaml)))
        #expect(try await !cluster.exists("/orders"))
        #expect(try await cluster.operations.jobs().map(\.jobName) == ["audit"])
        #expect(await refusal { _ = try await cluster.operations.removeJob("orders") }?.code == .notFound)
        await cluster.close()
    }

    @Test("a job too large for one transaction is removed whole too, its configuration first", arguments: OperationsBackend.allCases)
    func removeLargeJob(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        let leader = try await cluster.host(1, orders())
        try await cluster.shard(leader, total: JobLimits.maximumShardingTotalCount)  // about 2,060 nodes
        let dump = try await cluster.operations.dump(job: "orders")
        #expect(dump.count > 2_000)
        let removed = try await cluster.operations.removeJob("orders")
        #expect(removed == dump)
        #expect(try await !cluster.exists("/orders"))
        #expect(try await cluster.operations.jobs().isEmpty)
        await cluster.close()
    }

    // MARK: Configuration

    @Test("configuration: the decoded configuration, the stored YAML and its version", arguments: OperationsBackend.allCases)
    func configuration(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        let stored = try await cluster.operations.configuration(of: "orders")
        #expect(stored.configuration == orders())
        #expect(stored.yaml == ElasticJobYAML.encode(orders()))
        #expect(stored.version == (try await cluster.operatorSession.exists("/orders/config", watch: nil))?.version)
        #expect(await refusal { _ = try await cluster.operations.configuration(of: "nope") }?.code == .notFound)
        await cluster.close()
    }

    @Test("updateConfiguration writes against the version read or given; a stale version is a conflict", arguments: OperationsBackend.allCases)
    func update(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        let ops = cluster.operations
        let stored = try await ops.configuration(of: "orders")
        var changed = orders(8)
        changed.cron = "0 0 * * * ?"
        let updated = try await ops.updateConfiguration(changed, expectedVersion: stored.version)
        #expect(updated.version == stored.version + 1)
        #expect(updated.configuration == changed)
        #expect(try await cluster.text("/orders/config") == ElasticJobYAML.encode(changed))

        // Based on the old version: refused, nothing written.
        var late = orders(2)
        late.description = "late"
        let conflict = await refusal { _ = try await ops.updateConfiguration(late, expectedVersion: stored.version) }
        #expect(conflict?.code == .conflict)
        #expect(conflict?.httpStatus == 409)
        #expect(conflict?.message.contains("version \(stored.version)") == true)
        #expect(try await ops.configuration(of: "orders").configuration == changed)

        // Without a version: the version read now.
        let latest = try await ops.updateConfiguration(late)
        #expect(latest.version == updated.version + 1)
        await cluster.close()
    }

    @Test("two updates based on the same version: one is written, the other is a conflict, none is lost silently", arguments: OperationsBackend.allCases)
    func concurrentUpdates(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        let version = try await cluster.operations.configuration(of: "orders").version
        // Each editor has its own session, as two operators would.
        let editors = [
            ClusterOperations(registry: try await cluster.session(), logger: cluster.log.logger()),
            ClusterOperations(registry: try await cluster.session(), logger: cluster.log.logger()),
        ]
        let results = await withTaskGroup(of: (Int, Result<StoredJobConfiguration, OperationError>).self) { group in
            for (index, editor) in editors.enumerated() {
                group.addTask {
                    var job = orders()
                    job.description = "editor \(index)"
                    do throws(OperationError) {
                        return (index, .success(try await editor.updateConfiguration(job, expectedVersion: version)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let winners = results.filter { if case .success = $0.value { true } else { false } }
        #expect(winners.count == 1)
        let winner = try #require(winners.first?.key)
        if case .failure(let error) = results[1 - winner] { #expect(error.code == .conflict) }
        #expect(try await cluster.operations.configuration(of: "orders").configuration?.description == "editor \(winner)")
        await cluster.close()
    }

    @Test("updates are checked by the reader's code: the job, its type, the total, cron and zone, failover", arguments: OperationsBackend.allCases)
    func invalidUpdates(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        let before = try await cluster.tree()
        var unknown = orders()
        unknown.jobName = "nope"
        var retyped = orders()
        retyped.jobType = "script"
        var badCron = orders()
        badCron.cron = "61 * * * * ?"
        var badZone = orders()
        badZone.timeZone = "Mars/Olympus"
        var failover = orders()
        failover.failover = true
        var badParameters = orders()
        badParameters.shardingItemParameters = "0=a,x=b"
        let cases: [(JobConfiguration, OperationError.Code, String?)] = [
            (unknown, .notFound, nil),
            (retyped, .invalid, "jobType"),
            (orders(0), .invalid, "shardingTotalCount"),
            (orders(-3), .invalid, "shardingTotalCount"),
            (badCron, .invalid, "cron"),
            (badZone, .invalid, "timeZone"),
            (failover, .invalid, "failover"),
            (badParameters, .invalid, "shardingItemParameters"),
        ]
        for (configuration, code, field) in cases {
            let error = await refusal { _ = try await cluster.operations.updateConfiguration(configuration) }
            #expect(error?.code == code, "\(configuration)")
            #expect(error?.field == field)
            #expect(error?.job == configuration.jobName)
        }
        let total = await refusal { _ = try await cluster.operations.updateConfiguration(orders(0)) }
        #expect(total?.message.contains("must be at least 1") == true)
        let type = await refusal { _ = try await cluster.operations.updateConfiguration(retyped) }
        #expect(type?.message.contains("'report'") == true)
        #expect(try await cluster.tree() == before)
        await cluster.close()
    }

    @Test("addJob writes the job's type, configuration and dynamic marker in one transaction", arguments: OperationsBackend.allCases)
    func addJob(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        let stored = try await cluster.operations.addJob(orders(), addedBy: "alice")
        #expect(stored == StoredJobConfiguration(configuration: orders(), yaml: ElasticJobYAML.encode(orders()), version: 0))
        #expect(try await cluster.text("/orders") == "report")
        #expect(try await cluster.text("/orders/config") == ElasticJobYAML.encode(orders()))
        let marker = try #require(try await cluster.text("/orders/dynamic"))
        #expect(marker == #"{"addedAt":"2027-01-15T08:00:00Z","addedBy":"alice"}"#)
        #expect(try await cluster.operations.job("orders").addedBy == DynamicJobRecord(addedBy: "alice", addedAt: "2027-01-15T08:00:00Z"))
        #expect(try await cluster.operations.jobs().map(\.dynamic) == [true])

        // A host that runs it registers under the same type and keeps the registry's configuration.
        var local = orders(2)
        local.description = "the host's"
        let coordinator = JobCoordinator(registry: try await cluster.session(), job: "orders", instance: OperationsCluster.instance(1))
        #expect(try await coordinator.register(local) == orders())

        let before = try await cluster.tree()
        let exists = await refusal { _ = try await cluster.operations.addJob(orders(), addedBy: "bob") }
        #expect(exists?.code == .conflict)
        #expect(exists?.message.contains("'orders' exists already") == true)
        var invalid = orders(0)
        invalid.jobName = "fresh"
        #expect(await refusal { _ = try await cluster.operations.addJob(invalid, addedBy: "bob") }?.field == "shardingTotalCount")
        var unnamed = orders()
        unnamed.jobName = "fresh"
        #expect(await refusal { _ = try await cluster.operations.addJob(unnamed, addedBy: " ") }?.field == "addedBy")
        unnamed.jobName = ""
        #expect(await refusal { _ = try await cluster.operations.addJob(unnamed, addedBy: "bob") }?.field == "jobName")
        #expect(try await cluster.tree() == before)

        // A job node without a configuration (an interrupted registration) is taken over.
        try await cluster.operatorSession.create("/leftover", data: [], mode: .persistent)
        var leftover = orders()
        leftover.jobName = "leftover"
        try await cluster.operations.addJob(leftover, addedBy: "bob")
        #expect(try await cluster.text("/leftover") == "report")
        #expect(try await cluster.operations.configuration(of: "leftover").configuration == leftover)
        await cluster.close()
    }

    @Test("dump: every node under the job, depth first in path order, with its value", arguments: OperationsBackend.allCases)
    func dump(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        let host = try await cluster.host(1, orders(2))
        try await cluster.shard(host, total: 2)
        let dump = try await cluster.operations.dump(job: "orders")
        let one = OperationsCluster.instance(1).id
        #expect(dump.first == DumpEntry(path: "/orders", value: "report"))
        #expect(dump.map(\.path) == dump.map(\.path).sorted { $0.split(separator: "/").lexicographicallyPrecedes($1.split(separator: "/")) })
        #expect(dump.contains(DumpEntry(path: "/orders/config", value: ElasticJobYAML.encode(orders(2)))))
        #expect(dump.contains(DumpEntry(path: "/orders/sharding/1/instance", value: one)))
        #expect(dump.contains(DumpEntry(path: "/orders/leader/election/instance", value: one)))
        #expect(dump.map(\.path).filter { $0.hasPrefix("/orders/sharding") } == [
            "/orders/sharding", "/orders/sharding/0", "/orders/sharding/0/instance", "/orders/sharding/1", "/orders/sharding/1/instance",
        ])
        #expect(Set(dump.map(\.path)) == Set(try await cluster.tree("/orders").keys))
        #expect(await refusal { _ = try await cluster.operations.dump(job: "nope") }?.code == .notFound)
        await cluster.close()
    }

    @Test("a registry that cannot be reached is a registry failure (503), naming what was being done", arguments: OperationsBackend.allCases)
    func registryFailure(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        await cluster.operatorSession.close()
        let error = await refusal { _ = try await cluster.operations.jobs() }
        #expect(error?.code == .registryFailure)
        #expect(error?.httpStatus == 503)
        #expect(error?.message.contains("listing the jobs") == true)
        #expect(await refusal { _ = try await cluster.operations.trigger(job: "orders") }?.code == .registryFailure)
        await cluster.close()
    }

    // MARK: Real hosts

    @Test("real hosts act on the operations: a trigger runs the job on each, a shutdown stops it on one")
    func hostsReact() async throws {
        let cluster = try await ClusterHarness("""
            jobs:
              - jobName: report
                jobType: c-echo
                shardingTotalCount: 4
            """, hosts: 2)
        try await cluster.startAll()
        let operations = ClusterOperations(registry: cluster.server.connect(), logger: CapturedLog().logger())
        #expect(try await operations.trigger(job: "report").count == 2)
        await cluster.waitForFires("report", count: 1)
        #expect(cluster.hosts.flatMap { $0.lines(containing: "echo report item ") }.count == 4)

        let target = cluster.hosts[1]
        #expect(try await operations.shutdown(job: "report", server: nil, instance: target.instance.id).count == 1)
        #expect(await eventually { !target.host.isActive("report") })
        #expect(cluster.hosts[0].host.isActive("report"))
        #expect(await eventually { (try? await operations.job("report").brief.instanceCount) == 1 })
        await cluster.shutdownAll()
    }
}

/// A registry that lets a test change the tree between an operation's reads and its transaction,
/// as a concurrent writer would: `beforeMulti` runs before each `multi` is forwarded.
private final class InterleavingRegistry: RegistryCenter {
    let base: any RegistryCenter
    private let hook: Mutex<(@Sendable (Int) async throws -> Void)?> = Mutex(nil)
    private let multis = Mutex(0)

    init(_ base: any RegistryCenter) { self.base = base }

    /// `body` gets the number of the transaction about to be sent (from 1).
    func beforeMulti(_ body: @escaping @Sendable (Int) async throws -> Void) { hook.withLock { $0 = body } }

    var transactions: Int { multis.withLock { $0 } }

    func create(_ path: String, data: [UInt8], mode: CreateMode) async throws(RegistryError) -> String {
        try await base.create(path, data: data, mode: mode)
    }
    func delete(_ path: String, version: Int32?) async throws(RegistryError) { try await base.delete(path, version: version) }
    func setData(_ path: String, data: [UInt8], version: Int32?) async throws(RegistryError) -> NodeStat {
        try await base.setData(path, data: data, version: version)
    }
    func data(_ path: String, watch: Watcher?) async throws(RegistryError) -> (data: [UInt8], stat: NodeStat) {
        try await base.data(path, watch: watch)
    }
    func exists(_ path: String, watch: Watcher?) async throws(RegistryError) -> NodeStat? { try await base.exists(path, watch: watch) }
    func children(_ path: String, watch: Watcher?) async throws(RegistryError) -> [String] { try await base.children(path, watch: watch) }
    func multi(_ operations: [RegistryOperation]) async throws(RegistryError) -> [RegistryOperationResult] {
        let number = multis.withLock { count in
            count += 1
            return count
        }
        if let hook = hook.withLock({ $0 }) {
            do {
                try await hook(number)
            } catch {
                throw RegistryError(.other("the test's hook failed: \(error)"))
            }
        }
        return try await base.multi(operations)
    }
    var sessionID: Int64? { base.sessionID }
    func sessionStates() -> AsyncStream<SessionState> { base.sessionStates() }
    func close() async { await base.close() }
}

@Suite("Cluster operations under concurrent writers", .stopsWhatItStarts)
struct ClusterOperationsRaceTests {
    @Test("a write beaten by a concurrent change is planned again from a fresh read, and applied whole", arguments: OperationsBackend.allCases)
    func replanned(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        _ = try await cluster.host(2, orders())
        let registry = InterleavingRegistry(cluster.operatorSession)
        let operations = ClusterOperations(registry: registry, logger: cluster.log.logger())
        let writer = try await cluster.session()

        // Another operator changes a server node between the read and the write.
        registry.beforeMulti { number in
            if number == 1 { try await writer.setData("/orders/servers/10.0.0.2", data: [UInt8](utf8: "ENABLED"), version: nil) }
        }
        #expect(try await operations.disable(job: "orders", server: nil).count == 2)
        #expect(registry.transactions == 2)
        #expect(try await cluster.text("/orders/servers/10.0.0.1") == "DISABLED")
        #expect(try await cluster.text("/orders/servers/10.0.0.2") == "DISABLED")

        // A host writes a node under the job while it is being removed: it goes too.
        registry.beforeMulti { number in
            if number == 3 { try await writer.create("/orders/trigger/10.0.0.1@-@101", data: [], mode: .persistent) }
        }
        let removed = try await operations.removeJob("orders")
        #expect(registry.transactions == 4)
        #expect(removed.contains { $0.path == "/orders/trigger/10.0.0.1@-@101" })
        #expect(try await !cluster.exists("/orders"))
        await cluster.close()
    }

    @Test("a job that keeps changing under a write is a conflict after a few attempts, with nothing written", arguments: OperationsBackend.allCases)
    func keepsChanging(_ backend: OperationsBackend) async throws {
        let cluster = try await backend.cluster()
        _ = try await cluster.host(1, orders())
        let registry = InterleavingRegistry(cluster.operatorSession)
        let operations = ClusterOperations(registry: registry, logger: cluster.log.logger())
        let writer = try await cluster.session()
        registry.beforeMulti { _ in
            try await writer.setData("/orders/config", data: [UInt8](utf8: ElasticJobYAML.encode(orders())), version: nil)
        }
        let before = try await cluster.tree("/orders/sharding")
        let error = await refusal { try await operations.disableItem(job: "orders", item: 2) }
        #expect(error?.code == .conflict)
        #expect(error?.httpStatus == 409)
        #expect(registry.transactions == ClusterOperations.attempts)
        #expect(try await cluster.tree("/orders/sharding") == before)
        await cluster.close()
    }
}

