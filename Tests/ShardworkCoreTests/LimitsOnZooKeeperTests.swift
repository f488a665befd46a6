import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Testing

/// The limits are ones a real ZooKeeper carries: a job at the largest total, with the longest name
/// in the longest namespace, shards over two hosts and fires with running markers, every request
/// under ZooKeeper's 1 MB limit.
@Suite("Limits on a real ZooKeeper", .stopsWhatItStarts)
struct LimitsOnZooKeeperTests {
    @Test("the largest total with the longest names shards, reshards, marks and fires on ZooKeeper")
    func largestJob() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let namespace = String(("limits-" + UUID().uuidString).prefix(RegistryNames.maximumNamespaceBytes))
            .padding(toLength: RegistryNames.maximumNamespaceBytes, withPad: "n", startingAt: 0)
        let jobName = String(repeating: "j", count: RegistryNames.maximumJobNameBytes)
        let total = JobLimits.maximumShardingTotalCount
        let plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let yaml = """
            jobs:
              - jobName: \(jobName)
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: \(total)
                monitorExecution: true
                failover: true
                props:
                  c.wait.ms: 1
            """
        // Monotonic time moves by hand too (and the registries stamp their answers with it): a
        // resharding of 1,024 items that a loaded machine makes slow must not outlast a host's
        // real-time wait between two of the test's steps.
        let clock = ManualClock(now: HostHarness.start, monotonic: .manual)
        var hosts: [(host: ShardworkHost, log: CapturedLog, events: EventRecorder)] = []
        func join(_ number: Int) async throws {
            var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace)
            configuration.sessionTimeoutMilliseconds = 20_000
            let registry = try await ZooKeeperRegistry.connect(
                configuration, clock: clock, logger: Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() })
            let log = CapturedLog()
            let host = try await ShardworkHost(
                configuration: try HostConfigurationReader.parse(yaml), providers: providers, registry: registry, clock: clock,
                instance: JobInstance(id: "10.0.0.\(number)@-@\(number)", serverIP: "10.0.0.\(number)"), logger: log.logger(level: .info),
                processorCount: 2)
            let events = EventRecorder(host.events)
            TestScope.onEnd { await host.shutdown() }
            try await host.start()
            hosts.append((host, log, events))
        }
        /// Fires at `second` and waits until every host has; returns how many items each ran then.
        func fire(_ second: Int64) async -> [Int] {
            let fireTime = (HostHarness.start / 1000 + second) * 1000
            let before = hosts.map { host in host.log.messages.filter { $0.contains("waited 1 ms") }.count }
            let fires = hosts.map { $0.events.count { if case .fireEnded = $0 { true } else { false } } }
            clock.advance(to: fireTime)
            for ((host, log, events), fires) in zip(hosts, fires) {
                let fired = await events.waitFor(count: fires + 1, seconds: 60) { if case .fireEnded = $0 { true } else { false } }
                #expect(fired, "\(host.services.instance.id): \(log.messages.suffix(20).joined(separator: "\n"))")
                #expect(!log.messages.contains { $0.hasPrefix("error") }, "\(log.messages.filter { $0.hasPrefix("error") }.prefix(5))")
            }
            return zip(hosts, before).map { host, before in host.log.messages.filter { $0.contains("waited 1 ms") }.count - before }
        }
        try await join(1)
        try await join(2)
        var started = ContinuousClock.now
        var ran = await fire(1)
        #expect(ran.reduce(0, +) == total, "items run per host: \(ran)")
        print("limits: the first fire of \(total) items over two hosts took \(ContinuousClock.now - started) on ZooKeeper")
        // A third host: the resharding removes the whole assignment and writes a new one, in one
        // transaction, the largest request a job makes.
        try await join(3)
        // The leader flags the resharding when it sees the new instance; the next fire applies it.
        let registry = hosts[0].host.registry
        #expect(await eventually { (try? await registry.exists("/\(jobName)/leader/sharding/necessary", watch: nil)) != nil })
        started = ContinuousClock.now
        ran = await fire(2)
        #expect(ran.reduce(0, +) == total && ran.allSatisfy { $0 > 0 }, "items run per host: \(ran)")
        print("limits: the fire after a resharding over three hosts took \(ContinuousClock.now - started)")
        for (host, _, _) in hosts { await host.shutdown() }
    }
}
