import Dispatch
import Foundation
import GRDB
import Logging
import ShardworkCore
@testable import ShardworkHistory
import ShardworkTestSupport
import Testing

/// One host on the embedded registry and a manual clock, with its history in a SQLite file.
private final class HistoryHost: Sendable {
    static let start: Int64 = 1_800_000_000_500
    static let instance = JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1")

    let clock = ManualClock(now: HistoryHost.start)
    let host: ShardworkHost
    let store: SQLiteHistoryStore
    let writer: HistoryWriter
    let events: EventRecorder
    let directory: TemporaryDirectory
    private let running: Task<Void, Never>

    init(_ yaml: String) async throws {
        directory = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: directory.path, named: "libc_test.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger()).loadAll(PluginSearchPath(directories: [directory.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let clock = self.clock
        host = try await ShardworkHost(
            configuration: try HostConfigurationReader.parse(yaml), providers: providers,
            registry: EmbeddedRegistryServer(clock: { clock.now() }).connect(), clock: clock, instance: Self.instance,
            logger: CapturedLog().logger(), processorCount: 2)
        events = EventRecorder(host.events)
        store = try SQLiteHistoryStore(path: directory.file("history.sqlite"))
        try await store.prepare()
        writer = HistoryWriter(store: store, events: host.events, instance: Self.instance, hostname: "test-host", logger: CapturedLog().logger())
        let subscription = writer.subscribe()
        let writer = writer
        running = Task { await writer.run(subscription) }
        let host = host
        TestScope.onEnd { await host.shutdown() }
    }

    func advance(toSecond seconds: Int64) {
        clock.advance(to: (Self.start / 1000 + seconds) * 1000)
    }

    /// Stops the host and writes what is queued.
    func stop() async {
        await host.shutdown()
        await running.value
        _ = await writer.finish(within: .seconds(10))
    }
}

@Suite("Execution history on SQLite", .stopsWhatItStarts)
struct SQLiteHistoryTests {
    @Test("every execution of a job of 3 items over 10 fires is in ElasticJob's table, with its source and outcome; triggers and misfires say so")
    func everyExecution() async throws {
        let harness = try await HistoryHost("""
            jobs:
              - jobName: report
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
                monitorExecution: true
              - jobName: slow
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 1
                misfire: true
                monitorExecution: false
                props:
                  c.wait.ms: 2500
            """)
        try await harness.host.start()
        for second in 1...10 {
            harness.advance(toSecond: Int64(second))
            #expect(await harness.events.waitForFires("report", count: second))
        }
        try await harness.host.trigger("report")
        #expect(await harness.events.waitForFires("report", count: 11))
        // The slow job's fires come faster than it runs: misfires, run again in the same fire. Its
        // item outlasts the whole loop above by far (the loop takes one report fire per second;
        // 400 ms was once less than two of them on a loaded machine, and nothing misfired).
        #expect(
            await harness.events.waitFor { if case .fireEnded(let end) = $0 { end.job == "slow" && end.runs > 1 } else { false } },
            "\(harness.events.kinds(job: "slow"))")
        await harness.stop()

        let report = try await harness.store.executions(ExecutionQuery(jobName: "report", limit: 1000))
        #expect(report.count == 33, "\(report.count) rows")
        #expect(report.filter { $0.source == .schedule }.count == 30)
        #expect(report.filter { $0.source == .trigger }.count == 3)
        #expect(report.allSatisfy { $0.completeTime != nil && $0.hostname == "test-host" && $0.ip == "10.0.0.1" && $0.instanceID == "10.0.0.1@-@7" })
        #expect(report.filter { $0.item == 1 }.allSatisfy { $0.outcome == .failed && $0.failureCause == "item 1 failed on purpose" })
        #expect(report.filter { $0.item != 1 }.allSatisfy { $0.outcome == .succeeded && $0.failureCause == nil })
        #expect(report.allSatisfy { $0.taskID.hasPrefix("report@-@0,1,2@-@READY@-@10.0.0.1@-@") })
        #expect(report.allSatisfy { $0.plugin == "c-test" && $0.startTime <= ($0.completeTime ?? 0) })
        // Every scheduled fire, each item once.
        let fireTimes = Set(report.filter { $0.source == .schedule }.map(\.fireTime))
        #expect(fireTimes == Set((1...10).map { (HistoryHost.start / 1000 + Int64($0)) * 1000 }))
        let failed = try await harness.store.executions(ExecutionQuery(jobName: "report", failedOnly: true, limit: 1000))
        #expect(failed.count == 11 && failed.allSatisfy { $0.item == 1 })
        // Each run is an execution: the fire's own, and its misfire re-runs.
        let slow = try await harness.store.executions(ExecutionQuery(jobName: "slow", limit: 1000))
        let slowRuns = harness.events.fireEnds("slow").map(\.runs).reduce(0, +)
        #expect(slow.count == slowRuns && slow.contains { $0.source == .misfire } && slow.contains { $0.source == .schedule })
        #expect(harness.writer.dropped == 0)
    }

    @Test("ElasticJob's tables, columns and index are created, its sources and states written, and an existing table with other columns is refused by name")
    func elasticJobSchema() async throws {
        let directory = try TemporaryDirectory()
        let store = try SQLiteHistoryStore(path: directory.file("h.sqlite"))
        try await store.prepare()
        try await store.prepare()  // again: nothing to create
        let started = ExecutionRecord(
            id: "e1", jobName: "orders", taskID: "orders@-@0@-@READY@-@10.0.0.1@-@7", hostname: "h", ip: "10.0.0.1", item: 0, source: .failover,
            startTime: 1_000, fireTime: 900, fencingEpoch: 42, plugin: "p", pluginVersion: "1", instanceID: "10.0.0.1@-@7")
        var done = started
        done.completeTime = 1_500
        done.outcome = .failed
        done.failureCause = String(repeating: "x", count: 5000)
        // Completion first, then the start: one complete row (ElasticJob's insert-or-update).
        try await store.apply([.executionCompleted(done), .executionStarted(started)])
        try await store.apply([.status(StatusTraceRecord(
            id: "s1", jobName: "orders", taskID: started.taskID, slaveID: "10.0.0.1", items: [0, 1], state: .running, message: "", creationTime: 1_000))])
        let rows = try await store.executions(ExecutionQuery())
        #expect(rows.count == 1)
        #expect(rows.first?.outcome == .failed && rows.first?.completeTime == 1_500 && rows.first?.fencingEpoch == 42)
        #expect(rows.first?.failureCause?.count == ExecutionRecord.failureCauseLimit)
        #expect(rows.first?.source == .failover && rows.first?.elasticJobSource == "FAILOVER")

        // As ElasticJob's console reads them: its columns, sources, states, UTC timestamps, index.
        let reader = try DatabaseQueue(path: directory.file("h.sqlite"))
        let raw = try await reader.read { db in
            (
                try Row.fetchAll(db, sql: "SELECT execution_source, is_success, start_time, complete_time FROM JOB_EXECUTION_LOG")
                    .map { "\($0["execution_source"] as String? ?? "")|\($0["is_success"] as Int? ?? -1)|\($0["start_time"] as String? ?? "")|\($0["complete_time"] as String? ?? "")" },
                try Row.fetchAll(db, sql: "SELECT sharding_item, state FROM JOB_STATUS_TRACE_LOG")
                    .map { "\($0["sharding_item"] as String? ?? "")|\($0["state"] as String? ?? "")" },
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'TASK_ID_STATE_INDEX'")
            )
        }
        #expect(raw.0 == ["FAILOVER|0|1970-01-01 00:00:01.000|1970-01-01 00:00:01.500"])
        #expect(raw.1 == ["[0, 1]|TASK_RUNNING"])
        #expect(raw.2 == ["TASK_ID_STATE_INDEX"])
        try reader.close()

        let foreign = try DatabaseQueue(path: directory.file("other.sqlite"))
        try await foreign.write { db in try db.execute(sql: "CREATE TABLE JOB_EXECUTION_LOG (id TEXT, something TEXT)") }
        try foreign.close()
        let other = try SQLiteHistoryStore(path: directory.file("other.sqlite"))
        await #expect {
            try await other.prepare()
        } throws: { error in
            "\(error)".contains("tracing.sqlite.path") && "\(error)".contains("JOB_EXECUTION_LOG") && "\(error)".contains("job_name")
        }

        // ElasticJob's columns without its primary key: rows are written by id, so it is refused.
        let keyless = try DatabaseQueue(path: directory.file("keyless.sqlite"))
        try await keyless.write { db in
            try db.execute(sql: SQLiteHistoryStore.ddl["JOB_EXECUTION_LOG"]!.replacingOccurrences(of: ", PRIMARY KEY (id))", with: ")"))
        }
        try keyless.close()
        await #expect {
            try await SQLiteHistoryStore(path: directory.file("keyless.sqlite")).prepare()
        } throws: { error in
            "\(error)".contains("tracing.sqlite.path") && "\(error)".contains("JOB_EXECUTION_LOG") && "\(error)".contains("primary key on id")
        }
    }

    @Test("a database that cannot be written keeps rows in the queue up to its capacity, drops and counts the rest, and writing resumes when it can")
    func outage() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("locked.sqlite")
        let store = try SQLiteHistoryStore(path: path)
        try await store.prepare()
        let events = HostEvents(clock: SystemClock())
        let writer = HistoryWriter(
            store: store, events: events, instance: HistoryHost.instance, hostname: "h", capacity: 10, logger: CapturedLog().logger())
        let subscription = writer.subscribe()
        let running = Task { await writer.run(subscription) }
        // Another connection holds the database's write lock: every write waits out its busy
        // timeout and fails.
        let holder = try DatabaseQueue(path: path)
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holding = Task.detached {
            // On GRDB's own thread, which may block: the lock is held until the test releases it.
            try await holder.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN EXCLUSIVE TRANSACTION")
                locked.signal()
                release.wait()
                try db.execute(sql: "COMMIT")
            }
        }
        _ = try await onOwnThread { locked.wait() }
        // 3 items: 3 start rows and 2 status rows per fire; 5 fires make 25 rows for 10 places.
        for fire in 0..<5 {
            events.publish(.fireStarted(FireStart(
                job: "j", fireTime: Int64(fire), source: .schedule, items: [0, 1, 2], epochs: [:], startedAt: Int64(fire),
                jobType: "t", plugin: "p", pluginVersion: "1", taskID: "j@-@0,1,2@-@READY@-@10.0.0.1@-@7")))
        }
        // The queue's 10 rows are held: waiting, or in the write that waits out the lock.
        #expect(await eventually(seconds: 30) { writer.dropped == 15 && writer.held == 10 }, "dropped \(writer.dropped), held \(writer.held)")
        #expect(writer.written == 0)
        release.signal()
        try await holding.value
        #expect(await eventually(seconds: 60) { writer.written == 10 && writer.held == 0 }, "written \(writer.written)")
        events.finish()
        await running.value
        try holder.close()
        let rows = try await store.executions(ExecutionQuery(jobName: "j", limit: 1000))
        #expect(rows.count == 6)  // of the 15 start rows, those that fit: the first two fires'
    }
}
