import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

/// The labels a Prometheus series of a host may carry: the host's own (docs/metrics.md), and those
/// Prometheus adds (`instance`, `job`) or a histogram has (`le`).
private let allowedLabels: Set<String> = [
    "__name__", "instance", "job", "le",
    "job_name", "source", "outcome", "kept", "reason", "change", "kind", "result", "event", "version", "abi", "toolchain",
    "route", "method", "status",
]

/// A `shardwork run` on the embedded registry with its metrics on `port` (and the API on another).
private func embeddedHost(
    _ directory: TemporaryDirectory, name: String = "host", jobs: String, metricsPort: Int, apiPort: Int, extra: String = "",
    arguments: [String] = []
) throws -> HostProcess {
    let config = directory.file("\(name).yaml")
    try """
        host:
          stateDirectory: \(directory.file("state-\(name)"))
          shutdownTimeoutSeconds: 5
        plugins:
          preflight: false
        api:
          address: 127.0.0.1:\(apiPort)
          token: \(apiToken)
        \(extra)
        jobs:
        \(jobs)
        """.write(toFile: config, atomically: true, encoding: .utf8)
    return try HostProcess(
        ip: "127.0.0.1", config: config, log: directory.file("\(name).log"),
        arguments: ["--metrics", "127.0.0.1:\(metricsPort)"] + arguments)
}

/// The value of one series in a host's own exposition (`GET /metrics`), by its name and labels as
/// written there (`shardwork_fires_total{job_name="a",...}`); `nil` when absent.
private func scrape(_ port: Int, token: String? = nil) async -> [String: Double] {
    guard let answer = try? await HTTP.request("GET", "http://127.0.0.1:\(port)/metrics", token: token), answer.status == 200 else { return [:] }
    var values: [String: Double] = [:]
    for line in answer.body.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        values[String(line[..<space])] = value
    }
    return values
}

// One test at a time: each runs real hosts and a Prometheus server, and the suite runs beside the
// cluster tests, whose ZooKeeper sessions must not starve.
@Suite("Metrics and health of shardwork run, scraped by a real Prometheus", .serialized, .timeLimit(.minutes(6)))
struct MetricsProcessTests {
    @Test("Prometheus scrapes a host (with the API's token): fires, items, failures, durations and lag match the ledger; API requests by route and status; labels bounded")
    func scrapedByPrometheus() async throws {
        let directory = try TemporaryDirectory("shardwork-metrics")
        let ledger = directory.file("ledger.jsonl")
        let ports = try FreePorts.take(2)
        // Four fires at known seconds a little ahead (the next minute repeats them, long after the
        // test), then nothing: the counts stop, and Prometheus's last scrape must match the ledger.
        let now = Int(Date().timeIntervalSince1970)
        let seconds = (6...9).map { (now + $0) % 60 }
        let host = try embeddedHost(directory, jobs: """
              - jobName: steady
                jobType: log-item
                cron: "\(seconds.map(String.init).joined(separator: ",")) * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
                props:
                  log-item.ledger: \(ledger)
              - jobName: once
                jobType: log-item
                shardingTotalCount: 2
                props:
                  log-item.ledger: \(ledger)
              - jobName: slow
                jobType: log-item
                cron: "* * * * * ?"
                shardingTotalCount: 1
                props:
                  log-item.work.milliseconds: 1500
            """, metricsPort: ports[0], apiPort: ports[1], extra: "metrics:\n  requireToken: true", arguments: ["--trigger", "once"])
        TestScope.onEnd { await host.stop() }
        let prometheus = try await PrometheusServer.start(targets: ["127.0.0.1:\(ports[0])"], bearerToken: apiToken)
        TestScope.onEnd { await prometheus.stop() }

        // The probes need no token; a scrape does.
        #expect(await waitUntil { (try? await HTTP.request("GET", "http://127.0.0.1:\(ports[0])/readyz", token: nil).status) == 200 }, "\(host.output.suffix(3000))")
        #expect(try await HTTP.request("GET", "http://127.0.0.1:\(ports[0])/healthz", token: nil).status == 200)
        #expect(try await HTTP.request("GET", "http://127.0.0.1:\(ports[0])/metrics", token: nil).status == 401)
        #expect(try await HTTP.request("GET", "http://127.0.0.1:\(ports[1])/v1/jobs", token: nil).status == 401)
        #expect(try await HTTP.request("GET", "http://127.0.0.1:\(ports[1])/v1/jobs/steady", token: apiToken).status == 200)

        // Every fire's items ended (12 of steady, 2 of once), and two scrapes came after.
        func ends() -> [LedgerEvent] {
            guard let text = try? String(contentsOfFile: ledger, encoding: .utf8) else { return [] }
            return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(LedgerEvent.self, from: Data($0.utf8)) }.filter(\.isEnd)
        }
        #expect(await waitUntil(seconds: 40) { ends().count == 14 }, "ledger: \(ends().count) ends; \(host.output.suffix(3000))")
        let steady = ends().filter { $0.job == "steady" }
        let fires = Set(steady.map(\.fire))
        #expect(fires.count == 4)
        let settled = await waitUntil(seconds: 20) {
            let steadyItems = try? await prometheus.value(#"sum(shardwork_items_total{job_name="steady"})"#)
            let onceItems = try? await prometheus.value(#"sum(shardwork_items_total{job_name="once"})"#)
            return steadyItems == Double(steady.count) && onceItems == 2
        }
        let health = String(describing: try? await prometheus.targetHealth())
        #expect(settled, "targets: \(health)")

        #expect(try await prometheus.value(#"up{job="shardwork"}"#) == 1)
        #expect(try await prometheus.targetHealth().map { $0.health } == ["up"])
        // Item 1 fails at every fire: each of the four fires failed, 8 items succeeded, 4 failed.
        #expect(try await prometheus.value(#"shardwork_fires_total{job_name="steady",source="schedule",outcome="failed"}"#) == 4)
        #expect(try await prometheus.value(#"shardwork_fires_total{job_name="steady",outcome="succeeded"}"#) == nil)
        #expect(try await prometheus.value(#"shardwork_items_total{job_name="steady",outcome="succeeded"}"#) == 8)
        #expect(try await prometheus.value(#"shardwork_items_total{job_name="steady",outcome="failed"}"#) == 4)
        #expect(try await prometheus.value(#"shardwork_item_duration_seconds_count{job_name="steady"}"#) == 12)
        #expect(try await prometheus.value(#"shardwork_start_lag_seconds_count{job_name="steady"}"#) == 4)
        // Lag under a second: every observation in the 1 s bucket.
        #expect(try await prometheus.value(#"shardwork_start_lag_seconds_bucket{job_name="steady",le="1.0"}"#) == 4)
        #expect(try await prometheus.value(#"shardwork_fires_total{job_name="once",source="trigger",outcome="succeeded"}"#) == 1)
        #expect(try await prometheus.value(#"shardwork_leader_changes_total{job_name="steady",change="elected"}"#) == 1)
        // The next instant of steady is a minute after its first fire of this minute, in the future.
        let next = try #require(try await prometheus.value(#"shardwork_job_next_fire_timestamp_seconds{job_name="steady"}"#))
        #expect(next == Double(try #require(fires.min())) / 1000 + 60)
        #expect(try await prometheus.value(#"shardwork_api_requests_total{route="/v1/jobs",method="GET",status="401"}"#) == 1)
        #expect(try await prometheus.value(#"shardwork_api_requests_total{route="/v1/jobs/{job}",method="GET",status="200"}"#) == 1)
        // An item longer than the period: fires come while it runs (misfire off by default: dropped).
        #expect(await waitUntil { ((try? await prometheus.value(#"shardwork_misfires_total{job_name="slow",kept="false"}"#)) ?? 0) >= 1 })
        #expect(try await prometheus.value(#"shardwork_ready"#) == 1)
        #expect(try await prometheus.value(#"shardwork_build_info"#) == 1)
        #expect(try await prometheus.value(#"shardwork_metrics_events_lost_total"#) == 0)

        let labels = Set(try await prometheus.series(#"{__name__=~"shardwork_.*"}"#).flatMap { Array($0.keys) })
        #expect(labels.isSubset(of: allowedLabels), "labels beyond the documented ones: \(labels.subtracting(allowedLabels))")
        let status = await host.stop()
        #expect(status == 0, "exit status \(status); its log ends:\n\(host.output.suffix(3000))")
    }

    @Test("a host paused with SIGSTOP counts the instants it missed, and Prometheus sees it down meanwhile")
    func missedFiresWhilePaused() async throws {
        let directory = try TemporaryDirectory("shardwork-metrics")
        let ports = try FreePorts.take(2)
        let host = try embeddedHost(directory, jobs: """
              - jobName: tick
                jobType: log-item
                cron: "* * * * * ?"
                shardingTotalCount: 1
                misfire: false
            """, metricsPort: ports[0], apiPort: ports[1])
        TestScope.onEnd { await host.stop() }
        let prometheus = try await PrometheusServer.start(targets: ["127.0.0.1:\(ports[0])"])
        TestScope.onEnd { await prometheus.stop() }
        #expect(await waitUntil { ((try? await prometheus.value(#"shardwork_fires_total{job_name="tick"}"#)) ?? 0) >= 2 }, "\(host.output.suffix(3000))")
        // A counter appears with its first count.
        #expect(try await prometheus.value(#"shardwork_missed_fires_total{job_name="tick"}"#) == nil)

        host.signal(SIGSTOP)
        try await Task.sleep(for: .seconds(4))
        host.signal(SIGCONT)
        #expect(await waitUntil { ((try? await prometheus.value(#"shardwork_missed_fires_total{job_name="tick"}"#)) ?? 0) >= 1 },
                "\(host.output.suffix(3000))")
        // The scrapes during the pause failed; the job fires again after it.
        #expect(try await prometheus.value(#"min_over_time(up{job="shardwork"}[1m])"#) == 0)
        let before = try await prometheus.value(#"sum(shardwork_fires_total{job_name="tick"})"#) ?? 0
        #expect(await waitUntil { ((try? await prometheus.value(#"sum(shardwork_fires_total{job_name="tick"})"#)) ?? 0) >= before + 2 })
        let status = await host.stop()
        #expect(status == 0, "exit status \(status); its log ends:\n\(host.output.suffix(3000))")
    }

    @Test("readiness goes false when ZooKeeper stops and true when it returns; the registry's requests and session changes are counted")
    func readinessFollowsZooKeeper() async throws {
        // A server of its own: this test stops it.
        let ensemble = try await ZooKeeperEnsemble.start()
        TestScope.onEnd { ensemble.stopAll() }
        let cluster = try await Cluster(ensemble: ensemble)
        let port = try FreePorts.take(1)[0]
        let host = try cluster.start("127.0.0.11", jobs: cluster.job("watched", total: 2), extra: "metrics:\n  address: 127.0.0.1:\(port)")
        let readyz = "http://127.0.0.1:\(port)/readyz"
        #expect(await waitUntil { (try? await HTTP.request("GET", readyz, token: nil).status) == 200 }, "\(cluster.logs())")
        #expect(await waitUntil { (await scrape(port))["shardwork_registry_requests_total{kind=\"multi\",result=\"ok\"}"] ?? 0 > 0 })

        await ensemble.stop(1)
        var answer: HTTP.Answer?
        #expect(await waitUntil {
            answer = try? await HTTP.request("GET", readyz, token: nil)
            return answer?.status == 503
        }, "\(cluster.logs())")
        #expect(answer?.body.contains("the registry session is down") == true, "\(answer?.body ?? "")")
        #expect(await scrape(port)["shardwork_registry_connected"] == 0)
        #expect(await scrape(port)["shardwork_ready"] == 0)
        // Counters come from the event stream (taken every 100 ms by a nice-19 thread): a moment
        // behind the readiness flag.
        #expect(await waitUntil { await scrape(port)["shardwork_registry_events_total{event=\"connection_lost\"}"] ?? 0 >= 1 })
        // The health probe is about the process: it still serves.
        #expect(try await HTTP.request("GET", "http://127.0.0.1:\(port)/healthz", token: nil).status == 200)

        try await ensemble.restart(1)
        #expect(await waitUntil(seconds: 60) { (try? await HTTP.request("GET", readyz, token: nil).status) == 200 }, "\(cluster.logs())")
        var after: [String: Double] = [:]
        let returned = await waitUntil {
            after = await scrape(port)
            return (after["shardwork_registry_events_total{event=\"connection_restored\"}"] ?? 0)
                + (after["shardwork_registry_events_total{event=\"session_renewed\"}"] ?? 0) >= 1
        }
        #expect(returned, "\(after.filter { $0.key.contains("registry") })")
        #expect(after["shardwork_registry_connected"] == 1)
        #expect(after["shardwork_registry_requests_total{kind=\"get\",result=\"unanswered\"}"] != nil)
        _ = host
        await cluster.stopAll()
    }

    @Test("kill -9 a host mid-item: the survivor's metrics count the failover it queued or took, and the fires it ran")
    func failoverCounted() async throws {
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let ports = try FreePorts.take(2)
        let job = cluster.job("moved", total: 2, cron: "0/5 * * * * ?", failover: true, workMilliseconds: 3000)
        try cluster.start("127.0.0.11", jobs: job, extra: "metrics:\n  address: 127.0.0.1:\(ports[0])")
        try cluster.start("127.0.0.12", jobs: job, extra: "metrics:\n  address: 127.0.0.1:\(ports[1])")
        let victim = try #require(await cluster.waitForEvent { $0.isStart && $0.ip == "127.0.0.12" }, "\(cluster.logs())")
        await cluster.stop("127.0.0.12", signal: SIGKILL)
        let recovered = await cluster.waitForEvent { $0.isEnd && $0.item == victim.item && $0.ip == "127.0.0.11" && $0.epoch > victim.epoch }
        #expect(recovered != nil, "\(cluster.logs())")
        let label = "{job_name=\"moved\"}"
        // The counters follow the events a moment later (the metrics take them every 100 ms).
        var values: [String: Double] = [:]
        let counted = await waitUntil {
            values = await scrape(ports[0])
            return values["shardwork_failover_items_taken_total\(label)"] ?? 0 >= 1
                && values["shardwork_fires_total{job_name=\"moved\",source=\"failover\",outcome=\"succeeded\"}"] ?? 0 >= 1
        }
        #expect(counted, "\(values.filter { $0.key.contains("failover") })")
        await cluster.stopAll()
    }

    @Test("with 1,000 jobs the series stay bounded: one job_name per job, only the documented labels")
    func thousandJobsBounded() async throws {
        let directory = try TemporaryDirectory("shardwork-metrics")
        let ports = try FreePorts.take(2)
        let jobs = (0..<1000).map { index in
            "  - jobName: job-\(index)\n    jobType: log-item\n    cron: \"0/5 * * * * ?\"\n    shardingTotalCount: 1\n"
        }.joined()
        // Quiet (a debug build logging 1,000 fires would load the machine for nothing), and
        // scraped every 5 s (each scrape renders about 38,000 series).
        let host = try embeddedHost(directory, jobs: jobs, metricsPort: ports[0], apiPort: ports[1], arguments: ["--log-level", "warning"])
        TestScope.onEnd { await host.stop() }
        let prometheus = try await PrometheusServer.start(targets: ["127.0.0.1:\(ports[0])"], interval: 5)
        TestScope.onEnd { await prometheus.stop() }
        let everyJob = await waitUntil(seconds: 60) {
            (try? await prometheus.value(#"count(count by (job_name) (shardwork_fires_total))"#)) == 1000
        }
        let health = String(describing: try? await prometheus.targetHealth())
        #expect(everyJob, "\(host.output.suffix(2000)); targets \(health)")
        let series = try await prometheus.series(#"{__name__=~"shardwork_.*"}"#)
        let labels = Set(series.flatMap { Array($0.keys) })
        #expect(labels.isSubset(of: allowedLabels), "labels beyond the documented ones: \(labels.subtracting(allowedLabels))")
        #expect(Set(series.compactMap { $0["job_name"] }).count == 1000)
        // Per job that fires: its fires and items, two histograms (start lag: 9 buckets and +Inf,
        // sum, count; item duration: 8 and +Inf, sum, count), the next-fire gauge; the leader's
        // resharding and election on top.
        #expect(series.count < 1000 * 45, "\(series.count) series")
        let status = await host.stop()
        #expect(status == 0, "exit status \(status); its log ends:\n\(host.output.suffix(3000))")
    }
}
