import Foundation
import MetricsTestKit
@testable import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("Host metrics", .stopsWhatItStarts)
struct HostMetricsTests {
    /// The labels any metric may carry: a job's name and small fixed sets (docs/metrics.md).
    static let allowedLabels: Set<String> = [
        "job_name", "source", "outcome", "kept", "reason", "change", "kind", "result", "event", "version", "abi", "toolchain",
        "route", "method", "status",
    ]

    @Test("fires, items, durations, start lag, leadership and resharding move as the ledger of fires says; the next-fire gauge follows the fires")
    func ledger() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
            """)
        let factory = TestMetrics()
        let metrics = HostMetrics(host: harness.host, build: .init(version: "9.9.9"), factory: factory)
        let subscription = metrics.subscribe()
        let recording = Task { await metrics.run(subscription) }
        metrics.sample()
        #expect(try factory.expectGauge(MetricNames.ready).lastValue == 0, "not registered yet")
        try await harness.host.start()
        for second in 1...4 {
            harness.advance(toSecond: Int64(second))
            await harness.waitForFires("orders", count: second)
        }
        // The next-fire gauge points at the second after the last fire, once its events are in.
        let lastFire = try #require(harness.fireEnds("orders").last?.fireTime)
        let pointsNext = await eventually {
            metrics.sample()
            return (try? factory.expectGauge(MetricNames.nextFire, [("job_name", "orders")]).lastValue) == Double(lastFire + 1000) / 1000
        }
        #expect(pointsNext)
        await harness.host.shutdown()
        await recording.value

        let ends = harness.fireEnds("orders")
        #expect(ends.count == 4)
        let failedFires = ends.filter { !$0.succeeded }.count
        let outcomes = ends.flatMap { $0.outcomes.values }
        let job = [("job_name", "orders")]
        #expect(try factory.expectCounter(MetricNames.fires, job + [("source", "schedule"), ("outcome", "failed")]).totalValue == Int64(failedFires))
        #expect(factory.counterTotal(label: MetricNames.fires) == Int64(ends.count))
        #expect(try factory.expectCounter(MetricNames.items, job + [("outcome", "succeeded")]).totalValue == Int64(outcomes.filter(\.succeeded).count))
        #expect(try factory.expectCounter(MetricNames.items, job + [("outcome", "failed")]).totalValue == Int64(outcomes.filter { !$0.succeeded }.count))
        #expect(try factory.expectTimer(MetricNames.itemDuration, job).values.count == outcomes.count)
        // The manual clock stands still while items run: every lag is 0.
        #expect(try factory.expectTimer(MetricNames.startLag, job).values == Array(repeating: 0, count: ends.count))
        #expect(try factory.expectCounter(MetricNames.leaderChanges, job + [("change", "elected")]).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.resharding, job).totalValue == 1)
        #expect(try factory.expectTimer(MetricNames.reshardingDuration, job).values.count == 1)
        // No misfire, no misfire series: a job's series appear as they are first needed.
        #expect(factory.counters(label: MetricNames.misfires).isEmpty)
        #expect(try factory.expectGauge(MetricNames.buildInfo, [("version", "9.9.9"), ("abi", "\(PluginABI.major).\(PluginABI.minor)"), ("toolchain", HostMetrics.Build.toolchain)]).lastValue == 1)
        #expect(try factory.expectGauge(MetricNames.jobs).lastValue == 1)
        for key in factory.counters.map(\.dimensions) + factory.timers.map(\.dimensions) + factory.recorders.map(\.dimensions) {
            #expect(Set(key.map(\.0)).isSubset(of: Self.allowedLabels), "labels \(key)")
        }
        #expect(factory.counterTotal(label: MetricNames.eventsLost) == 0)
    }

    @Test("misfires, missed and skipped fires, failover, fencing, registry changes and plugins are counted by kind; gauges read the host")
    func everyKind() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0 0 * * * ?"
                shardingTotalCount: 2
            """)
        let factory = TestMetrics()
        let metrics = HostMetrics(host: harness.host, build: .init(version: "1"), factory: factory)
        let now = HostHarness.start
        let kinds: [HostEvent.Kind] = [
            .misfire(job: "orders", fireTime: now, kept: true), .misfire(job: "orders", fireTime: now, kept: false),
            .missedFire(job: "orders", fireTime: now, lateMilliseconds: 3_000), .missedFire(job: "orders", fireTime: now + 1, lateMilliseconds: 2_000),
            .fireSkipped(job: "orders", fireTime: now, reason: .registryUnavailable), .fireSkipped(job: "orders", fireTime: now, reason: .registryFailed("x")),
            .failoverQueued(job: "orders", items: [0, 1]), .failoverTaken(job: "orders", item: 0, epoch: 3),
            .itemsFenced(job: "orders", items: [0, 1], requeued: true), .leaderResigned(job: "orders"),
            .registry(.connectionLost), .registry(.connectionRestored(session: 1)), .registry(.sessionExpired),
            .registry(.sessionRenewed(session: 2)), .registry(.fenced(reason: "silent")), .registry(.heardAgain),
            .pluginLoaded(name: "p", version: "1", generation: 2, file: "/x.so"), .pluginRefused(file: "/y.so", reason: "no"),
        ]
        for kind in kinds { metrics.record(HostEvent(time: now, kind: kind)) }
        let job = [("job_name", "orders")]
        #expect(try factory.expectCounter(MetricNames.misfires, job + [("kept", "true")]).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.misfires, job + [("kept", "false")]).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.missedFires, job).totalValue == 2)
        #expect(try factory.expectCounter(MetricNames.firesSkipped, job + [("reason", "registry_unavailable")]).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.firesSkipped, job + [("reason", "registry_failed")]).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.failoverQueued, job).totalValue == 2)
        #expect(try factory.expectCounter(MetricNames.failoverTaken, job).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.itemsFenced, job).totalValue == 2)
        #expect(try factory.expectCounter(MetricNames.leaderChanges, job + [("change", "resigned")]).totalValue == 1)
        for event in ["connection_lost", "connection_restored", "session_expired", "session_renewed", "fenced", "heard_again"] {
            #expect(try factory.expectCounter(MetricNames.registryEvents, [("event", event)]).totalValue == 1, "\(event)")
        }
        #expect(try factory.expectCounter(MetricNames.registryEvents, [("event", "namespace_restored")]).totalValue == 0)
        #expect(try factory.expectCounter(MetricNames.pluginGenerationsLoaded).totalValue == 1)
        #expect(try factory.expectCounter(MetricNames.pluginFilesRefused).totalValue == 1)

        // The last instant handled was `now + 1` (a missed fire): the next is the top of the hour after.
        metrics.sample()
        let hour: Int64 = 3_600_000
        #expect(try factory.expectGauge(MetricNames.nextFire, job).lastValue == Double(((now + 1) / hour + 1) * hour) / 1000)
        #expect(try factory.expectGauge(MetricNames.ready).lastValue == 0)
        try await harness.host.start()
        metrics.sample()
        #expect(try factory.expectGauge(MetricNames.ready).lastValue == 1)
        #expect(try factory.expectGauge(MetricNames.registryConnected).lastValue == 1)
        #expect(try factory.expectGauge(MetricNames.fenced).lastValue == 0)
        #expect(try factory.expectGauge(MetricNames.jobs).lastValue == 1)
        #expect(try factory.expectGauge(MetricNames.workerQueueLength).lastValue == 0)
        #expect(try factory.expectGauge(MetricNames.pluginGenerations).lastValue ?? 0 >= 2)
        // A job removed from the host loses its next-fire series.
        metrics.record(HostEvent(time: now, kind: .jobStopped(job: "orders", reason: "removed")))
        #expect(factory.recorders(label: MetricNames.nextFire).isEmpty)
    }

    @Test("readiness: not before the jobs are registered, then ready; fenced or stopping is not ready, with the reason")
    func readiness() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0 0 * * * ?"
                shardingTotalCount: 1
            """)
        #expect(!harness.host.readiness().ready && harness.host.readiness().reasons == ["the host has not registered its jobs yet"])
        try await harness.host.start()
        #expect(harness.host.readiness().ready && harness.host.readiness().jobs == 1)
        harness.host.services.fenced.store(true, ordering: .releasing)
        #expect(!harness.host.readiness().ready && harness.host.readiness().fenced)
        harness.host.services.fenced.store(false, ordering: .releasing)
        harness.host.services.registryConnected.store(false, ordering: .releasing)
        #expect(harness.host.readiness().reasons == ["the registry session is down"])
        harness.host.services.registryConnected.store(true, ordering: .releasing)
        await harness.host.shutdown()
        #expect(harness.host.readiness().reasons == ["the host is stopping"])
        let json = String(decoding: try JSONEncoder().encode(harness.host.readiness()), as: UTF8.self)
        #expect(json.contains("\"ready\":false"))
    }

    @Test("registry requests are counted by kind and result and timed by kind")
    func registryRequests() {
        let factory = TestMetrics()
        let metrics = RegistryRequestMetrics(factory: factory)
        metrics.record(.get, .ok, elapsed: .milliseconds(2))
        metrics.record(.get, .refused, elapsed: .milliseconds(1))
        metrics.record(.multi, .unanswered, elapsed: .seconds(10))
        #expect(factory.counterTotal(label: MetricNames.registryRequests, dimensions: [("kind", "get"), ("result", "ok")]) == 1)
        #expect(factory.counterTotal(label: MetricNames.registryRequests, dimensions: [("kind", "get"), ("result", "refused")]) == 1)
        #expect(factory.counterTotal(label: MetricNames.registryRequests, dimensions: [("kind", "multi"), ("result", "unanswered")]) == 1)
        #expect((try? factory.expectTimer(MetricNames.registryRequestDuration, [("kind", "get")]).values) == [2_000_000, 1_000_000])
    }

    @Test("docs/metrics.md describes every metric the host reports, and no other")
    func documented() throws {
        let text = try String(contentsOfFile: TestPaths.repositoryRoot + "/docs/metrics.md", encoding: .utf8)
        for name in MetricNames.all {
            #expect(text.contains("`\(name)`"), "docs/metrics.md does not describe \(name)")
        }
        let documented = Set(text.matches(of: /`(shardwork_[a-z_]+)`/).map { String($0.1) })
        #expect(documented.subtracting(MetricNames.all).isEmpty, "documented but not reported: \(documented.subtracting(MetricNames.all))")
        #expect(Set(MetricNames.histogramBuckets.keys).isSubset(of: MetricNames.all))
    }
}
