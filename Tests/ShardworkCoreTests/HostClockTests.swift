import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Testing

/// The host takes all its time from the clock it is given: cron instants from its wall-clock time,
/// and the shutdown deadline and the wait for a resharding from its monotonic time. A clock whose
/// monotonic time moves only by hand shows it: nothing runs out until the test moves it.
@Suite("One injected clock", .stopsWhatItStarts)
struct HostClockTests {
    @Test("the shutdown deadline is counted on the host's clock: an hour passes when the clock says so")
    func shutdownDeadline() async throws {
        let harness = try await HostHarness("""
            host:
              shutdownTimeoutSeconds: 3600
            jobs:
              - jobName: batch
                jobType: c-wait
                cron: "0 0 0 1 1 ?"
                shardingTotalCount: 1
                monitorExecution: true
                props:
                  c.wait.ms: 20000
            """, monotonic: .manual)
        try await harness.host.start()
        try await harness.host.trigger("batch")
        #expect(await eventually { (try? await harness.registry.exists("/batch/sharding/0/running", watch: nil)) != nil })
        let host = harness.host
        let stopping = Task { await host.shutdown() }
        // The shutdown sleeps until its deadline, an hour of the host's clock away.
        #expect(await eventually { harness.clock.sleeping == 1 })
        harness.clock.advance(by: 3_600_000)
        await stopping.value
        // Asked to stop at the deadline rather than waited for: the item ran for far less than 20 s.
        await harness.waitFor("item 0 stopped after")
        #expect(harness.lines(containing: "waited 20000 ms").isEmpty)
    }

    @Test("a fire waiting for a resharding gives up after ten seconds of the host's clock, not of the machine's")
    func shardingWait() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0 0 0 1 1 ?"
                shardingTotalCount: 2
                monitorExecution: true
            """, monotonic: .manual)
        try await harness.host.start()
        try await harness.host.trigger("orders")
        await harness.waitForFires("orders")
        // Another live instance still runs item 1, and a resharding is due: the leader (this host)
        // must not shard before that item ends, and its next fire waits.
        let registry = harness.registry
        let other = "10.0.0.9@-@9"
        try await registry.create("/orders/instances/\(other)", data: Array(other.utf8), mode: .ephemeral)
        try await registry.create("/orders/sharding/1/running", data: Array(other.utf8), mode: .ephemeral)
        try await registry.create("/orders/leader/sharding/necessary", data: [], mode: .persistent)
        let runtime = try #require(harness.host.runtimes["orders"])
        try await harness.host.trigger("orders")
        #expect(await eventually { runtime.isRunning })
        // Machine time passes (the fire reads the job again at least every half second) and the
        // fire keeps waiting, as the host's clock has not moved.
        try await Task.sleep(for: .seconds(1))
        #expect(runtime.isRunning)
        #expect(harness.events.count { if case .fireSkipped = $0 { true } else { false } } == 0)

        // Ten seconds of the host's clock, again until the fire gives up: on a busy machine the
        // fire's task may start its wait only after a first move of the clock (it was seen once
        // under the full suite's load), and then waits ten seconds from there.
        let skipped = await eventually {
            harness.clock.advance(by: 10_000)
            return harness.events.count { if case .fireSkipped(job: "orders", _, reason: .shardingDidNotSettle) = $0 { true } else { false } } == 1
        }
        #expect(skipped, "\(harness.events.kinds())")
        #expect(harness.fireEnds("orders").count == 1)
        await harness.host.shutdown()
    }

    @Test("the registry's silence is measured on the host's clock: moved past the fencing limit, the host fences; the next answer lifts it")
    func fencingSilence() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let configuration = try HostConfigurationReader.parse("""
            registry:
              zookeeper:
                serverLists: \(ensemble.connectString)
                namespace: clock-\(UUID().uuidString)
                sessionTimeoutMilliseconds: 20000
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0 0 0 1 1 ?"
                shardingTotalCount: 1
            """)
        guard case .zookeeper(let zookeeper) = configuration.registry else { throw TestSetupError("no ZooKeeper registry") }
        let clock = ManualClock(now: HostHarness.start, monotonic: .manual)
        let registry = try await ZooKeeperRegistry.connect(zookeeper, clock: clock, logger: Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() })
        let host = try await ShardworkHost(
            configuration: configuration, providers: providers, registry: registry, clock: clock,
            instance: HostHarness.instance, logger: CapturedLog().logger(), processorCount: 2)
        let events = EventRecorder(host.events)
        TestScope.onEnd { await host.shutdown() }
        try await host.start()
        let fenced: @Sendable (HostEvent.Kind) -> Bool = { if case .registry(.fenced) = $0 { true } else { false } }
        let heard: @Sendable (HostEvent.Kind) -> Bool = { if case .registry(.heardAgain) = $0 { true } else { false } }

        // ZooKeeper answers all along; a second of the machine's time is no silence on this clock.
        try await Task.sleep(for: .seconds(1))
        #expect(events.count(fenced) == 0)
        // Eleven seconds of the host's clock without an answer are past half the session timeout.
        // (An answer that lands between the move and the watchdog's look is a contact after it:
        // the clock is moved again.)
        var fencedAtLast = false
        for _ in 0..<5 where !fencedAtLast {
            clock.advance(by: 11_000)
            fencedAtLast = await events.waitFor(seconds: 2, fenced)
        }
        #expect(fencedAtLast, "\(events.kinds())")
        // The next heartbeat answer is a contact at the clock's present time; the watchdog, which
        // sleeps on the clock too, looks again as it moves on.
        var heardAtLast = false
        for _ in 0..<30 where !heardAtLast {
            clock.advance(by: 300)
            heardAtLast = await events.waitFor(seconds: 1, heard)
        }
        #expect(heardAtLast, "\(events.kinds())")
        await host.shutdown()
    }
}
