import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

/// A namespace shared with ElasticJob nodes: what real ElasticJob 3.0.4 nodes wrote is read as they
/// mean it, and what Shardwork writes is what the configured ElasticJob version reads
/// (docs/migrating-from-elasticjob.md).
@Suite("Sharing a namespace with ElasticJob nodes")
struct ElasticJobCompatibilityTests {
    /// Every node two real ElasticJob-Lite 3.0.4 nodes wrote (Tests/Fixtures/elasticjob-3.0.4-registry.json).
    struct Fixture: Decodable {
        struct Node: Decodable {
            var path: String
            var value: String
            var ephemeral: Bool
        }
        var elasticjob: String
        var nodes: [Node]

        static func load() throws -> Fixture {
            try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("elasticjob-3.0.4-registry.json"))))
        }

        func value(_ path: String) -> String? { nodes.first { $0.path == path }?.value }

        /// The namespace written into a registry, node by node in the fixture's (depth-first) order.
        func write(into registry: any RegistryCenter) async throws {
            for node in nodes where node.path != "/" {
                _ = try await registry.create(node.path, data: [UInt8](utf8: node.value), mode: node.ephemeral ? .ephemeral : .persistent)
            }
        }
    }

    @Test("every configuration that ElasticJob 3.0.4 wrote reads as it means it: its executor key, a GMT time zone, strategies, handlers")
    func readsElasticJobConfigurations() throws {
        let fixture = try Fixture.load()
        #expect(fixture.elasticjob == "3.0.4")
        let type = try #require(fixture.value("/billing"))
        let billing = try ElasticJobYAML.decode(try #require(fixture.value("/billing/config")), jobType: type, job: "billing")
        #expect(billing.jobExecutorThreadPoolSizeProviderType == "SINGLE_THREAD", "3.0.4's jobExecutorServiceHandlerType")
        #expect(billing.timeZone == "GMT+08:00" && billing.cron == "0/3 * * * * ?")
        #expect(billing.jobErrorHandlerType == "LOG" && billing.label == "blue" && billing.jobShardingStrategyType == "AVG_ALLOCATION")
        #expect(billing.shardingTotalCount == 3 && billing.failover && billing.monitorExecution && !billing.misfire)
        #expect(billing.maxTimeDiffSeconds == -1 && billing.reconcileIntervalMinutes == 10)
        let orders = try ElasticJobYAML.decode(try #require(fixture.value("/orders/config")), jobType: type, job: "orders")
        #expect(orders.jobShardingStrategyType == "ODEVITY" && orders.shardingTotalCount == 4 && orders.misfire)
        #expect(orders.shardingItemParameters == "0=a,1=b,2=c,3=d" && orders.jobExecutorThreadPoolSizeProviderType == nil)
        let reports = try ElasticJobYAML.decode(try #require(fixture.value("/reports/config")), jobType: type, job: "reports")
        #expect(reports.jobShardingStrategyType == "ROUND_ROBIN" && reports.cron == "0 0 3 * * ?" && !reports.monitorExecution)
        // Its time zone is one Shardwork parses to the same offset.
        let zone = try CronExpression.timeZone(named: try #require(billing.timeZone))
        #expect(zone.secondsFromGMT() == 8 * 3600)
    }

    @Test("the whole 3.0.4 namespace reads through the operations API: statuses, items, a disabled item and server, instances, leaders")
    func readsElasticJobNamespace() async throws {
        let fixture = try Fixture.load()
        let registry = EmbeddedRegistry.standalone()
        try await fixture.write(into: registry)
        let operations = ClusterOperations(registry: registry)
        let briefs = try await operations.jobs()
        #expect(briefs.map(\.jobName) == ["billing", "orders", "reports"])
        #expect(briefs.allSatisfy { $0.jobType == "Node$LedgerJob" && $0.configurationError == nil })
        #expect(briefs.map(\.status) == [.ok, .ok, .ok])
        let orders = try await operations.job("orders")
        #expect(orders.leader == "127.0.0.13@-@26603")
        #expect(orders.items.map(\.status) == [.pending, .disabled, .pending, .pending])
        #expect(orders.items.allSatisfy { $0.instanceId == "127.0.0.13@-@26603" && $0.serverIp == "127.0.0.13" })
        #expect(orders.servers.map { "\($0.serverIp) \($0.status)" } == ["127.0.0.13 ENABLED", "127.0.0.14 DISABLED"])
        #expect(orders.instances.map(\.instanceId) == ["127.0.0.13@-@26603", "127.0.0.14@-@31274"])
        #expect(orders.instances.map(\.pid) == [26603, 31274])
        let billing = try await operations.configuration(of: "billing")
        #expect(billing.configuration?.jobExecutorThreadPoolSizeProviderType == "SINGLE_THREAD")
    }

    @Test("the executor key is written as the target reads it for a new job, and as the stored configuration spells it for a changed one",
          arguments: ElasticJobCompatibility.allCases)
    func executorKey(target: ElasticJobCompatibility) async throws {
        var job = JobConfiguration(jobName: "billing", jobType: "script", cron: "0/3 * * * * ?", shardingTotalCount: 3)
        job.jobExecutorThreadPoolSizeProviderType = "SINGLE_THREAD"
        let expected = target == .elasticJob304 ? "jobExecutorServiceHandlerType" : "jobExecutorThreadPoolSizeProviderType"
        let other = target == .elasticJob304 ? "jobExecutorThreadPoolSizeProviderType" : "jobExecutorServiceHandlerType"
        #expect(ElasticJobYAML.encode(job, executorKey: target.executorKey).contains("\n\(expected): SINGLE_THREAD\n"))

        // Added through the operations API: the target's spelling, which reads back the same.
        let registry = EmbeddedRegistry.standalone()
        let operations = ClusterOperations(registry: registry, compatibility: target)
        let added = try await operations.addJob(job, addedBy: "test")
        #expect(added.yaml.contains("\(expected): SINGLE_THREAD") && !added.yaml.contains(other))
        #expect(added.configuration?.jobExecutorThreadPoolSizeProviderType == "SINGLE_THREAD")

        // A job stored with the other spelling (by a Java node of the other version) keeps it when
        // changed, so that the nodes that read it now still do.
        var stored = try await registry.string("/billing/config") ?? ""
        stored = stored.replacingOccurrences(of: expected, with: other)
        _ = try await registry.setData("/billing/config", data: [UInt8](utf8: stored), version: nil)
        var changed = job
        changed.jobExecutorThreadPoolSizeProviderType = "CPU"
        let updated = try await operations.updateConfiguration(changed)
        #expect(updated.yaml.contains("\(other): CPU") && !updated.yaml.contains(expected), "\(updated.yaml)")
    }

    @Test("a host registering a new job writes the target's executor key; one registering over a stored configuration keeps its spelling")
    func registrationKeepsSpelling() async throws {
        let registry = EmbeddedRegistry.standalone()
        let instance = JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1")
        var job = JobConfiguration(jobName: "billing", jobType: "script", cron: "0/3 * * * * ?", shardingTotalCount: 3)
        job.jobExecutorThreadPoolSizeProviderType = "SINGLE_THREAD"
        _ = try await JobCoordinator(registry: registry, job: "billing", instance: instance, compatibility: .elasticJob304).register(job)
        #expect(try await registry.string("/billing/config")?.contains("jobExecutorServiceHandlerType: SINGLE_THREAD") == true)
        // overwrite: true with the 3.0.5 target: the stored 3.0.4 spelling stays.
        job.overwrite = true
        job.jobExecutorThreadPoolSizeProviderType = "CPU"
        _ = try await JobCoordinator(registry: registry, job: "billing", instance: instance, compatibility: .elasticJob305).register(job)
        let text = try await registry.string("/billing/config") ?? ""
        #expect(text.contains("jobExecutorServiceHandlerType: CPU") && !text.contains("jobExecutorThreadPoolSizeProviderType"), "\(text)")
    }

    @Test("time zones: GMT offsets as they are; a zone without daylight saving time as its exact offset; one with it refused, with its offset and the fix")
    func timeZones() throws {
        for target in [ElasticJobCompatibility.elasticJob304, .elasticJob305] {
            #expect(try target.storedTimeZone("GMT+08:00") == "GMT+08:00")
            #expect(try target.storedTimeZone("GMT-5") == "GMT-5")
            #expect(try target.storedTimeZone("Asia/Shanghai") == "GMT+08:00")
            #expect(try target.storedTimeZone("Asia/Kolkata") == "GMT+05:30")
            #expect(try target.storedTimeZone("UTC") == "GMT")
            #expect(try target.storedTimeZone(nil) == nil)
            // Unknown names are left to the time zone check, which suggests a name.
            #expect(try target.storedTimeZone("Asia/Shangai") == "Asia/Shangai")
            #expect(throws: TimeZoneNotReadable.self) { try target.storedTimeZone("America/New_York") }
        }
        #expect(try ElasticJobCompatibility.none.storedTimeZone("America/New_York") == "America/New_York")
        do {
            _ = try ElasticJobCompatibility.elasticJob304.storedTimeZone("Europe/Berlin", now: Date(timeIntervalSince1970: 1_800_000_000))
            Issue.record("a zone with daylight saving time was accepted")
        } catch {
            // 2027-01-15: winter time in Berlin.
            #expect(error.offsetNow == "GMT+01:00")
            #expect(error.description.contains("elasticJobCompatibility: none"))
        }
    }

    @Test("a host file on ZooKeeper: a zone with daylight saving time is refused at its line; a fixed one is stored as its offset; with none, names stay")
    func hostFileTimeZones() throws {
        func file(_ compatibility: String?, zone: String) -> String {
            """
            registry:
              zookeeper:
                serverLists: 127.0.0.1:2181
                namespace: shop
            \(compatibility.map { "    elasticJobCompatibility: \"\($0)\"\n" } ?? "")jobs:
              - jobName: billing
                jobType: script
                cron: "0 0 3 * * ?"
                timeZone: \(zone)
                shardingTotalCount: 1
            """
        }
        do {
            _ = try HostConfigurationReader.parse(file(nil, zone: "America/New_York"), file: "host.yaml")
            Issue.record("a zone with daylight saving time was accepted for ElasticJob 3.0.4 nodes")
        } catch {
            #expect(error.field == "timeZone" && error.job == "billing" && error.location?.line == 9, "\(error)")
            #expect(error.message.contains("GMT-0"))
        }
        #expect(try HostConfigurationReader.parse(file(nil, zone: "Asia/Shanghai")).jobs[0].timeZone == "GMT+08:00")
        #expect(try HostConfigurationReader.parse(file("none", zone: "America/New_York")).jobs[0].timeZone == "America/New_York")
        let parsed = try HostConfigurationReader.parse(file("3.0.5", zone: "GMT+08:00"))
        guard case .zookeeper(let zookeeper) = parsed.registry else { Issue.record("not ZooKeeper"); return }
        #expect(zookeeper.elasticJobCompatibility == .elasticJob305)
        // The embedded registry has no ElasticJob node: names stay.
        #expect(try HostConfigurationReader.parse("jobs:\n  - jobName: a\n    jobType: script\n    timeZone: America/New_York\n    shardingTotalCount: 1\n")
            .jobs[0].timeZone == "America/New_York")
        #expect(throws: HostConfigurationError.self) { try HostConfigurationReader.parse(file("3.1", zone: "GMT")) }
    }

    @Test("the operations API refuses a zone the target cannot read, naming the field")
    func operationsTimeZone() async throws {
        let operations = ClusterOperations(registry: EmbeddedRegistry.standalone(), compatibility: .elasticJob304)
        var job = JobConfiguration(jobName: "billing", jobType: "script", cron: "0 0 3 * * ?", shardingTotalCount: 1)
        job.timeZone = "Europe/Paris"
        await #expect {
            try await operations.addJob(job, addedBy: "test")
        } throws: { error in
            guard let error = error as? OperationError else { return false }
            return error.code == .invalid && error.field == "timeZone" && error.message.contains("daylight saving time")
        }
        job.timeZone = "Asia/Tokyo"
        #expect(try await operations.addJob(job, addedBy: "test").configuration?.timeZone == "GMT+09:00")
    }

    @Test("job types compare as ElasticJob's do, without regard to case; the stored spelling stays, and an update may leave the type out")
    func jobTypeNames() async throws {
        let registry = EmbeddedRegistry.standalone()
        _ = try await registry.create("/nightly", data: [UInt8](utf8: "SCRIPT"), mode: .persistent)
        let instance = JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1")
        let job = JobConfiguration(jobName: "nightly", jobType: "script", cron: "0 0 3 * * ?", shardingTotalCount: 1)
        _ = try await JobCoordinator(registry: registry, job: "nightly", instance: instance).register(job)
        #expect(try await registry.string("/nightly") == "SCRIPT", "a Java node reads the root: never rewritten")
        var other = job
        other.jobType = "http"
        await #expect(throws: JobRegistrationError.self) {
            _ = try await JobCoordinator(registry: registry, job: "nightly", instance: instance).register(other)
        }

        let operations = ClusterOperations(registry: registry)
        var changed = job
        changed.cron = "0 0 4 * * ?"
        let updated = try await operations.updateConfiguration(changed)
        #expect(updated.configuration?.jobType == "SCRIPT" && updated.configuration?.cron == "0 0 4 * * ?")
        #expect(try await operations.jobType(of: "nightly") == "SCRIPT")
        // What `job config` prints has no jobType: read for an update, it keeps the job's.
        let parsed = try HostConfigurationReader.parseJob(updated.yaml, defaultJobType: "SCRIPT")
        #expect(parsed.jobType == "SCRIPT" && parsed.cron == "0 0 4 * * ?")
    }
}

/// A job of an ElasticJob Java class, run by a Shardwork host that maps the class to a job type of
/// its own (`host.jobClasses`), beside a (simulated) Java node, and taken over when it stops.
@Suite("A mapped ElasticJob job class", .stopsWhatItStarts)
struct MappedJobClassTests {
    @Test("host.jobClasses maps a class to a job type; anything else in it is refused, naming the field")
    func configuration() throws {
        let parsed = try HostConfigurationReader.parse("host:\n  jobClasses:\n    com.example.OrderJob: script\njobs: []\n")
        #expect(parsed.host.jobClasses == ["com.example.OrderJob": "script"])
        #expect(parsed.host.jobType(forStored: "com.example.OrderJob") == "script" && parsed.host.jobType(forStored: "SCRIPT") == "SCRIPT")
        #expect(JobTypeName.matches("com.example.OrderJob", "SCRIPT", jobClasses: parsed.host.jobClasses))
        #expect(!JobTypeName.matches("com.example.OrderJob", "http", jobClasses: parsed.host.jobClasses))
        #expect(throws: HostConfigurationError.self) { try HostConfigurationReader.parse("host:\n  jobClasses: script\njobs: []\n") }
        #expect(throws: HostConfigurationError.self) { try HostConfigurationReader.parse("host:\n  jobClasses:\n    com.example.OrderJob: ''\njobs: []\n") }
    }

    @Test("a host that maps the class runs its share of the Java job beside the Java node, and every item once the Java node stops; the root keeps the class")
    func runsBesideJavaNode() async throws {
        let cluster = try await ClusterHarness("host:\n  jobClasses:\n    com.example.OrderJob: c-echo\njobs: []\n", hosts: 1)
        // What an ElasticJob node writes for its job (Tests/Fixtures/elasticjob-3.0.4-registry.json).
        let java = cluster.server.connect()
        let javaID = "10.0.0.9@-@99"
        _ = try await java.create("/orders", data: [UInt8](utf8: "com.example.OrderJob"), mode: .persistent)
        _ = try await java.create("/orders/config", data: [UInt8](utf8: """
            cron: '* * * * * ?'
            description: ''
            disabled: false
            failover: false
            jobName: orders
            jobParameter: ''
            maxTimeDiffSeconds: -1
            misfire: true
            monitorExecution: true
            overwrite: false
            reconcileIntervalMinutes: 10
            shardingItemParameters: ''
            shardingTotalCount: 4
            staticSharding: false

            """), mode: .persistent)
        _ = try await java.create("/orders/instances", data: [], mode: .persistent)
        _ = try await java.create("/orders/instances/\(javaID)", data: [UInt8](utf8: "jobInstanceId: \(javaID)\nserverIp: 10.0.0.9\n"), mode: .ephemeral)
        _ = try await java.create("/orders/servers", data: [], mode: .persistent)
        _ = try await java.create("/orders/servers/10.0.0.9", data: [UInt8](utf8: "ENABLED"), mode: .persistent)
        try await cluster.startAll()
        let member = cluster.hosts[0]
        #expect(await eventually { member.host.isActive("orders") }, "\(member.events.kinds())")
        cluster.advance(toSecond: 1)
        await cluster.waitForFires("orders", count: 1)
        // ElasticJob's descending instance order: the Java node (10.0.0.9) first.
        #expect(cluster.items(of: member, job: "orders", fire: 1) == [2, 3])
        #expect(try await java.string("/orders") == "com.example.OrderJob")

        await java.close()
        await cluster.waitForReshardingFlag("orders")
        cluster.advance(toSecond: 2)
        await cluster.waitForFires("orders", count: 2)
        #expect(cluster.items(of: member, job: "orders", fire: 2) == [0, 1, 2, 3])
        let peer = cluster.server.connect()
        #expect(try await peer.string("/orders") == "com.example.OrderJob", "the root keeps the class")
        await peer.close()
        await cluster.shutdownAll()
    }

    @Test("without the mapping, a host leaves the Java job alone, and one that configures its name with another type is refused, told how to map it")
    func unmapped() async throws {
        let registry = EmbeddedRegistry.standalone()
        _ = try await registry.create("/orders", data: [UInt8](utf8: "com.example.OrderJob"), mode: .persistent)
        let job = JobConfiguration(jobName: "orders", jobType: "script", cron: "0 0 3 * * ?", shardingTotalCount: 1)
        let coordinator = JobCoordinator(registry: registry, job: "orders", instance: JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1"))
        await #expect {
            _ = try await coordinator.register(job)
        } throws: { error in
            "\(error)".contains("host.jobClasses") && "\(error)".contains("com.example.OrderJob")
        }
        let mapped = JobCoordinator(
            registry: registry, job: "orders", instance: JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1"),
            jobClasses: ["com.example.OrderJob": "script"])
        _ = try await mapped.register(job)
        #expect(try await registry.string("/orders") == "com.example.OrderJob")
    }
}

extension ElasticJobCompatibilityTests {
    @Test("written for ElasticJob 3.0.4, each configuration ElasticJob 3.0.4 wrote comes out as it wrote it, byte for byte")
    func writesAsElasticJobWrites() throws {
        let fixture = try Fixture.load()
        for job in ["billing", "orders", "reports"] {
            let text = try #require(fixture.value("/\(job)/config"))
            let decoded = try ElasticJobYAML.decode(text, jobType: "Node$LedgerJob", job: job)
            #expect(ElasticJobYAML.encode(decoded, executorKey: ElasticJobCompatibility.elasticJob304.executorKey) == text, "\(job)")
        }
    }
}

extension ElasticJobCompatibilityTests {
    @Test("a new job's root holds ElasticJob's spelling of its type names for an ElasticJob target (its nodes compare them letter for letter), the name as given otherwise")
    func storedTypeNames() async throws {
        for (target, expected) in [(ElasticJobCompatibility.elasticJob304, "SCRIPT"), (.elasticJob305, "SCRIPT"), (.none, "script")] {
            let registry = EmbeddedRegistry.standalone()
            let job = JobConfiguration(jobName: "nightly", jobType: "script", cron: "0 0 3 * * ?", shardingTotalCount: 1)
            _ = try await JobCoordinator(
                registry: registry, job: "nightly", instance: JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1"), compatibility: target
            ).register(job)
            #expect(try await registry.string("/nightly") == expected, "\(target)")
            var added = job
            added.jobName = "hourly"
            _ = try await ClusterOperations(registry: registry, compatibility: target).addJob(added, addedBy: "test")
            #expect(try await registry.string("/hourly") == expected, "\(target)")
        }
        #expect(ElasticJobCompatibility.elasticJob304.storedJobType("HTTP") == "HTTP")
        #expect(ElasticJobCompatibility.elasticJob304.storedJobType("log-item") == "log-item")
    }
}
