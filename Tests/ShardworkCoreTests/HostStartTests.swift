import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

/// A host of 200 one-item jobs on the shared ZooKeeper, reached through a proxy that a test cuts
/// while the host registers its jobs; an observer reads the namespace straight from the server.
private struct StartThroughProxy {
    static let total = 200
    let proxy: TCPProxy
    let observer: ZooKeeperRegistry
    let registry: ZooKeeperRegistry
    let host: ShardworkHost
    let log = CapturedLog()

    init(sessionTimeoutMilliseconds: Int) async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let proxy = try TCPProxy(upstreamPort: ensemble.member(1).clientPort)
        self.proxy = proxy
        TestScope.onEnd { proxy.close() }
        let plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        // Enough jobs that the start is still registering when the connection is cut (a few
        // milliseconds each through the proxy, which relays without Nagle's delay).
        let namespace = "start-\(UUID().uuidString.prefix(8))"
        let jobs = (0..<Self.total).map { "  - jobName: job-\($0)\n    jobType: c-echo\n    cron: \"0 0 0 1 1 ?\"\n    shardingTotalCount: 1\n" }
        let configuration = try HostConfigurationReader.parse("""
            registry:
              zookeeper:
                serverLists: 127.0.0.1:\(proxy.port)
                namespace: \(namespace)
                sessionTimeoutMilliseconds: \(sessionTimeoutMilliseconds)
                baseSleepTimeMilliseconds: 100
                maxSleepTimeMilliseconds: 400
            jobs:

            """ + jobs.joined())
        guard case .zookeeper(let zookeeper) = configuration.registry else { throw TestSetupError("no ZooKeeper registry") }
        registry = try await ZooKeeperRegistry.connect(zookeeper, logger: log.logger())
        let observer = try await ZooKeeperRegistry.connect(
            ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace),
            logger: Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() })
        self.observer = observer
        TestScope.onEnd { await observer.close() }
        let host = try await ShardworkHost(
            configuration: configuration, providers: providers, registry: registry, instance: HostHarness.instance,
            logger: log.logger(), processorCount: 2)
        self.host = host
        TestScope.onEnd { await host.shutdown() }
    }

    /// How many jobs the namespace holds.
    func registered() async -> Int { ((try? await observer.children("/", watch: nil)) ?? []).count }

    /// Starts the host, cuts the connection for `cut` once a few jobs are registered, and waits for
    /// the start to end; `false` (with the failure recorded) when it did not.
    func startCutting(for cut: Duration) async throws -> Bool {
        let done = Mutex(false)
        let starting = Task {
            defer { done.withLock { $0 = true } }
            try await host.start()
        }
        #expect(await eventually { await registered() >= 5 })
        proxy.cut()
        let atCut = await registered()
        try await Task.sleep(for: cut)
        proxy.restore()
        #expect(atCut < Self.total, "the start had registered every job before the connection was cut: nothing was tried")
        let ended = await eventually(seconds: 60) { done.withLock { $0 } }
        let count = await registered()
        #expect(ended, "the start did not end; registered \(count); log:\n\(log.messages.filter { !$0.contains("trace") }.suffix(40).joined(separator: "\n"))")
        guard ended else { return false }
        try await starting.value
        return true
    }

    /// Jobs whose instance node is missing, or (with `session`) not of that session.
    func jobsWithoutInstance(session: Int64? = nil) async -> [String] {
        var missing: [String] = []
        for index in 0..<Self.total {
            let instances = (try? await observer.children("/job-\(index)/instances", watch: nil)) ?? []
            let owner = try? await observer.exists("/job-\(index)/instances/\(HostHarness.instance.id)", watch: nil)?.ephemeralOwner
            if instances.count != 1 || (session != nil && owner != session) { missing.append("job-\(index)") }
        }
        return missing
    }
}

@Suite("A host's start on ZooKeeper", .stopsWhatItStarts, .timeLimit(.minutes(2)))
struct HostStartTests {
    @Test("the connection lost in the middle of the start's registrations: the host asks again within its session, and starts with every job registered")
    func connectionLostDuringStart() async throws {
        let start = try await StartThroughProxy(sessionTimeoutMilliseconds: 10_000)
        guard try await start.startCutting(for: .milliseconds(500)) else { return }
        #expect(start.host.readiness().ready, "\(start.host.readiness().reasons)")
        let missing = await start.jobsWithoutInstance()
        #expect(missing.isEmpty, "jobs without their instance: \(missing)")
    }

    @Test("the session expires in the middle of the start's registrations: the host registers every job again on a new session, and starts")
    func sessionExpiredDuringStart() async throws {
        // A 2 s session, cut for 4 s: the server expires it while the start registers.
        let start = try await StartThroughProxy(sessionTimeoutMilliseconds: 2000)
        let firstSession = start.registry.sessionID
        let events = EventRecorder(start.host.events)
        guard try await start.startCutting(for: .seconds(4)) else { return }

        #expect(start.registry.sessionID != firstSession, "the session did not expire: the test tried nothing")
        #expect(start.host.readiness().ready, "\(start.host.readiness().reasons)")
        let missing = await start.jobsWithoutInstance(session: start.registry.sessionID)
        #expect(missing.isEmpty, "jobs without their instance on the new session: \(missing)")
        // Each job adopted once, whatever the number of registrations (the recorder reads the
        // host's events on a task of its own: waited for).
        _ = await events.waitFor(count: StartThroughProxy.total) { if case .jobAdopted = $0 { true } else { false } }
        let adopted = events.kinds().compactMap { if case .jobAdopted(let job) = $0 { job } else { nil } }
        #expect(adopted.count == StartThroughProxy.total && Set(adopted).count == StartThroughProxy.total)
    }
}
