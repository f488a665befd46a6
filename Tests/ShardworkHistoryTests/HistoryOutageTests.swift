import Foundation
import Logging
import MetricsTestKit
import ShardworkCore
import ShardworkHistory
import ShardworkTestSupport
import Testing

@Suite("Execution history while PostgreSQL does not answer", .stopsWhatItStarts, .timeLimit(.minutes(4)))
struct HistoryOutageTests {
    @Test("PostgreSQL frozen for 30 s while 100 jobs fire every second: every instant fires on time, rows wait up to the queue's bound, the rest are counted, and writing resumes")
    func frozenServer() async throws {
        // A server of its own: this test freezes it.
        let server = try await PostgresServer.start()
        TestScope.onEnd { await server.stop() }
        let login = try await server.createDatabase()
        let store = PostgresHistoryStore(.init(
            host: login.host, port: login.port, database: login.database, username: login.user, password: login.password))
        try await store.prepare()

        let directory = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: directory.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [directory.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let jobs = (0..<100).map { "  - jobName: job-\($0)\n    jobType: c-echo\n    cron: \"* * * * * ?\"\n    shardingTotalCount: 1\n" }
        let instance = JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1")
        let host = try await ShardworkHost(
            configuration: try HostConfigurationReader.parse("jobs:\n" + jobs.joined()), providers: providers,
            registry: EmbeddedRegistry.standalone(), instance: instance, logger: CapturedLog().logger(level: .info), processorCount: 2)
        TestScope.onEnd { await host.shutdown() }
        let events = EventRecorder(host.events)
        // 100 fires a second make 500 rows a second: the queue holds four seconds of them.
        let writerLog = CapturedLog()
        let metrics = TestMetrics()
        let writer = HistoryWriter(
            store: store, events: host.events, instance: instance, hostname: "h", capacity: 2_000, logger: writerLog.logger(), metrics: metrics)
        let subscription = writer.subscribe()
        let writing = Task { await writer.run(subscription) }
        try await host.start()
        #expect(await eventually(seconds: 30) { writer.written > 1_000 }, "written \(writer.written), held \(writer.held), queued \(writer.queued), dropped \(writer.dropped), events lost \(writer.eventsDropped), fires \(events.fireStarts("job-0").count), writer said: \(writerLog.messages)")

        // The history caught up before the outage, end to end (the host's events read into rows,
        // and the rows written): rows the queue holds at the freeze are then rows of the outage. (On
        // a busy machine the nice-19 reader and writer run behind; with four seconds of older events
        // or rows waiting at the freeze, every row of the outage would rightly be dropped.)
        let caughtUp = await eventually(seconds: 60) {
            let recent = Int64(Date().timeIntervalSince1970 * 1000) - 1_500
            let written = (try? await store.executions(ExecutionQuery(since: recent, limit: 1))) ?? []
            return !written.isEmpty && writer.held < 500
        }
        #expect(caughtUp, "held \(writer.held), queued \(writer.queued)")

        server.signal(SIGSTOP)
        let frozenAt = Int64(Date().timeIntervalSince1970 * 1000)
        try await Task.sleep(for: .seconds(30))
        let thawedAt = Int64(Date().timeIntervalSince1970 * 1000)
        server.signal(SIGCONT)
        let frozenWritten = writer.written
        #expect(await eventually(seconds: 60) { writer.queued < 1_000 && writer.written > frozenWritten }, "queued \(writer.queued)")
        // Some seconds of fires after the outage, written as they come.
        try await Task.sleep(for: .seconds(4))
        await host.shutdown()
        await writing.value
        _ = await writer.finish(within: .seconds(30))

        // Fires went on: every job fired at every whole second of the outage, none missed or skipped.
        let kinds = events.kinds()
        #expect(!kinds.contains { if case .missedFire = $0 { true } else { false } })
        #expect(!kinds.contains { if case .fireSkipped = $0 { true } else { false } })
        let firstInstant = (frozenAt / 1000 + 1) * 1000
        let lastInstant = (thawedAt / 1000 - 1) * 1000
        let instants = Set(stride(from: firstInstant, through: lastInstant, by: 1000))
        for job in ["job-0", "job-42", "job-99"] {
            let fired = Set(events.fireStarts(job).map(\.fireTime))
            #expect(instants.isSubset(of: fired), "\(job) missed \(instants.subtracting(fired).sorted())")
        }
        // The queue held its bound; the rest were dropped and counted; what was queued went in.
        #expect(writer.dropped > 0)
        let during = try await store.executions(ExecutionQuery(since: frozenAt, until: thawedAt, limit: ExecutionQuery.maximumLimit))
        if during.isEmpty {
            // What was written around the outage (newest first, at most 1,000 a query): start times
            // relative to the freeze.
            func range(_ query: ExecutionQuery) async throws -> String {
                let starts = try await store.executions(query).map { $0.startTime - frozenAt }.sorted()
                return "\(starts.count) from \(starts.first ?? 0) to \(starts.last ?? 0) ms"
            }
            let before = try await range(ExecutionQuery(until: frozenAt - 1, limit: ExecutionQuery.maximumLimit))
            let later = try await range(ExecutionQuery(since: thawedAt + 1, limit: ExecutionQuery.maximumLimit))
            Issue.record("""
                no execution of the outage was written: frozen for \(thawedAt - frozenAt) ms; before it \(before); after it \(later); \
                written \(writer.written), dropped \(writer.dropped), events lost \(writer.eventsDropped); writer said: \(writerLog.messages)
                """)
        }
        let after = try await store.executions(ExecutionQuery(since: thawedAt + 2_000, limit: 10))
        #expect(!after.isEmpty, "writing did not resume")
        // The metrics say the same (docs/metrics.md).
        #expect(metrics.counterTotal(label: MetricNames.historyRowsDropped) == Int64(writer.dropped))
        #expect(metrics.counterTotal(label: MetricNames.historyRowsWritten) == Int64(writer.written))
        #expect(try metrics.expectGauge(MetricNames.historyRowsQueued).values.contains { $0 >= 1_000 })
        await store.close()
    }
}
