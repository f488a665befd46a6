import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("A host's start on ZooKeeper", .stopsWhatItStarts, .timeLimit(.minutes(2)))
struct HostStartTests {
    @Test("the connection lost in the middle of the start's registrations: the host asks again within its session, and starts with every job registered")
    func connectionLostDuringStart() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let proxy = try TCPProxy(upstreamPort: ensemble.member(1).clientPort)
        TestScope.onEnd { proxy.close() }
        let plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        // Through the proxy a registration takes about a fifth of a second (debug build): enough
        // jobs that the start is still registering when the connection is cut.
        let total = 40
        let namespace = "start-\(UUID().uuidString.prefix(8))"
        let jobs = (0..<total).map { "  - jobName: job-\($0)\n    jobType: c-echo\n    cron: \"0 0 0 1 1 ?\"\n    shardingTotalCount: 1\n" }
        let configuration = try HostConfigurationReader.parse("""
            registry:
              zookeeper:
                serverLists: 127.0.0.1:\(proxy.port)
                namespace: \(namespace)
                sessionTimeoutMilliseconds: 10000
                baseSleepTimeMilliseconds: 100
                maxSleepTimeMilliseconds: 400
            jobs:

            """ + jobs.joined())
        guard case .zookeeper(let zookeeper) = configuration.registry else { throw TestSetupError("no ZooKeeper registry") }
        let quiet = Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() }
        let log = CapturedLog()
        let registry = try await ZooKeeperRegistry.connect(zookeeper, logger: log.logger())
        // Straight to the server, past the proxy.
        let observer = try await ZooKeeperRegistry.connect(
            ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace), logger: quiet)
        TestScope.onEnd { await observer.close() }
        let host = try await ShardworkHost(
            configuration: configuration, providers: providers, registry: registry, instance: HostHarness.instance,
            logger: log.logger(), processorCount: 2)
        TestScope.onEnd { await host.shutdown() }

        let done = Mutex(false)
        let starting = Task {
            defer { done.withLock { $0 = true } }
            try await host.start()
        }
        func registered() async -> Int { ((try? await observer.children("/", watch: nil)) ?? []).count }
        #expect(await eventually { await registered() >= 5 })
        proxy.cut()
        let atCut = await registered()
        try await Task.sleep(for: .milliseconds(500))
        proxy.restore()
        #expect(atCut < total, "the start had registered every job before the connection was cut: nothing was tried")
        let ended = await eventually(seconds: 60) { done.withLock { $0 } }
        let count = await registered()
        #expect(ended, "the start did not end; registered \(count); log:\n\(log.messages.filter { !$0.contains("trace") }.suffix(40).joined(separator: "\n"))")
        guard ended else { return }
        try await starting.value

        #expect(host.readiness().ready, "\(host.readiness().reasons)")
        var missing: [String] = []
        for index in 0..<total where (try? await observer.children("/job-\(index)/instances", watch: nil))?.count != 1 {
            missing.append("job-\(index)")
        }
        #expect(missing.isEmpty, "jobs without their instance: \(missing)")
    }

    @Test("the session expires in the middle of the start's registrations: the host registers every job again on a new session, and starts")
    func sessionExpiredDuringStart() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let proxy = try TCPProxy(upstreamPort: ensemble.member(1).clientPort)
        TestScope.onEnd { proxy.close() }
        let plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let total = 40
        let namespace = "expiry-\(UUID().uuidString.prefix(8))"
        let jobs = (0..<total).map { "  - jobName: job-\($0)\n    jobType: c-echo\n    cron: \"0 0 0 1 1 ?\"\n    shardingTotalCount: 1\n" }
        // A 2 s session, cut for 4 s: the server expires it while the start registers.
        let configuration = try HostConfigurationReader.parse("""
            registry:
              zookeeper:
                serverLists: 127.0.0.1:\(proxy.port)
                namespace: \(namespace)
                sessionTimeoutMilliseconds: 2000
                baseSleepTimeMilliseconds: 100
                maxSleepTimeMilliseconds: 400
            jobs:

            """ + jobs.joined())
        guard case .zookeeper(let zookeeper) = configuration.registry else { throw TestSetupError("no ZooKeeper registry") }
        let quiet = Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() }
        let log = CapturedLog()
        let registry = try await ZooKeeperRegistry.connect(zookeeper, logger: log.logger())
        let firstSession = registry.sessionID
        let observer = try await ZooKeeperRegistry.connect(
            ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace), logger: quiet)
        TestScope.onEnd { await observer.close() }
        let host = try await ShardworkHost(
            configuration: configuration, providers: providers, registry: registry, instance: HostHarness.instance,
            logger: log.logger(), processorCount: 2)
        TestScope.onEnd { await host.shutdown() }
        let events = EventRecorder(host.events)

        let done = Mutex(false)
        let starting = Task {
            defer { done.withLock { $0 = true } }
            try await host.start()
        }
        func registered() async -> Int { ((try? await observer.children("/", watch: nil)) ?? []).count }
        #expect(await eventually { await registered() >= 5 })
        proxy.cut()
        let atCut = await registered()
        try await Task.sleep(for: .seconds(4))
        proxy.restore()
        #expect(atCut < total, "the start had registered every job before the connection was cut: nothing was tried")
        let ended = await eventually(seconds: 60) { done.withLock { $0 } }
        #expect(ended, "the start did not end; log:\n\(log.messages.filter { !$0.contains("trace") }.suffix(40).joined(separator: "\n"))")
        guard ended else { return }
        try await starting.value

        #expect(registry.sessionID != firstSession, "the session did not expire: the test tried nothing")
        #expect(host.readiness().ready, "\(host.readiness().reasons)")
        var missing: [String] = []
        for index in 0..<total {
            let instances = (try? await observer.children("/job-\(index)/instances", watch: nil)) ?? []
            let owner = try? await observer.exists("/job-\(index)/instances/\(HostHarness.instance.id)", watch: nil)?.ephemeralOwner
            if instances.count != 1 || owner != registry.sessionID { missing.append("job-\(index)") }
        }
        #expect(missing.isEmpty, "jobs without their instance on the new session: \(missing)")
        // Each job adopted once, whatever the number of registrations.
        let adopted = events.kinds().compactMap { if case .jobAdopted(let job) = $0 { job } else { nil } }
        #expect(adopted.count == total && Set(adopted).count == total)
    }
}
