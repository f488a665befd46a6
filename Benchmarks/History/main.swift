// How fast the execution history is written: fires recorded per second, and rows per second into
// the tables, through the real writer (event stream, queue, batches) into a SQLite file and into a
// real PostgreSQL server started for the run (Debian's package, a temporary directory, loopback).
//
// The events are those a host publishes for a fire of one item that succeeds: a start and an end.
// Each fire makes five table rows: JOB_EXECUTION_LOG, SHARDWORK_EXECUTION_LOG, and three
// JOB_STATUS_TRACE_LOG rows (staging, running, finished). Events are published as fast as the
// writer takes them, never beyond its queue, so nothing is dropped.
//
// Usage: HistoryBenchmark [fires]   (default 200000)

import Foundation
import Logging
import ShardworkCore
import ShardworkHistory
import ShardworkTestSupport

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("HistoryBenchmark: \(message)\n".utf8))
    exit(1)
}

let fires = CommandLine.arguments.dropFirst().compactMap { Int($0) }.first ?? 200_000
let logger = Logger(label: "benchmark") { _ in SwiftLogNoOpLogHandler() }

/// Publishes `fires` fires and waits until all are written; returns the seconds it took.
func measure(_ store: any HistoryStore) async throws -> Double {
    try await store.prepare()
    let events = HostEvents(clock: SystemClock())
    let instance = JobInstance(id: "127.0.0.1@-@\(getpid())", serverIP: "127.0.0.1")
    let writer = HistoryWriter(store: store, events: events, instance: instance, hostname: "benchmark", logger: logger)
    let subscription = writer.subscribe()
    let writing = Task { await writer.run(subscription) }
    let expected = fires * 5
    let started = ContinuousClock.now
    let base = Int64(Date().timeIntervalSince1970 * 1000)
    for fire in 0..<fires {
        // Stay within the writer's queue and the subscription's buffer: nothing is dropped.
        while writer.queued > writer.capacity / 2 || (fire * 5 - writer.written - writer.queued) > 20_000 {
            try await Task.sleep(for: .milliseconds(1))
        }
        let job = "job-\(fire % 1000)"
        let time = base + Int64(fire)
        let taskID = "\(job)@-@0@-@READY@-@\(instance.id)"
        events.publish(HostEvent(time: time, kind: .fireStarted(FireStart(
            job: job, fireTime: time, source: .schedule, items: [0], epochs: [0: 1], startedAt: time, jobType: "simple",
            plugin: "benchmark", pluginVersion: "1", taskID: taskID))))
        events.publish(HostEvent(time: time + 1, kind: .fireEnded(FireEnd(
            job: job, fireTime: time, source: .schedule, items: [0], outcomes: [0: .succeeded], runs: 1, startedAt: time, endedAt: time + 1))))
    }
    while writer.written < expected {
        guard writer.dropped == 0, subscription.dropped == 0 else { fail("rows were dropped: the benchmark outran the writer") }
        try await Task.sleep(for: .milliseconds(5))
    }
    let elapsed = ContinuousClock.now - started
    events.finish()
    await writing.value
    await store.close()
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

print("| database | fires | seconds | fires recorded/s | table rows/s |")
print("|---|---:|---:|---:|---:|")
func report(_ name: String, _ seconds: Double) {
    print("| \(name) | \(fires) | \(String(format: "%.2f", seconds)) | \(Int(Double(fires) / seconds)) | \(Int(Double(fires * 5) / seconds)) |")
}

do {
    let directory = try TemporaryDirectory("shardwork-history-benchmark")
    report("SQLite (WAL, synchronous NORMAL)", try await measure(try SQLiteHistoryStore(path: directory.file("history.sqlite"))))
    let server = try await PostgresServer.start()
    let login = try await server.createDatabase()
    let store = PostgresHistoryStore(.init(host: login.host, port: login.port, database: login.database, username: login.user, password: login.password))
    let version = try await server.psql("SHOW server_version")
    let seconds = try await measure(store)
    await server.stop()
    report("PostgreSQL \(version) (loopback)", seconds)
} catch {
    fail("\(error)")
}
