// How fast the execution history is written: fires recorded per second, and rows per second into
// the tables, through the real writer (event stream, queue, batches) into a SQLite file and into a
// real PostgreSQL server started for the run (Debian's package, a temporary directory, loopback).
//
// The events are those a host publishes for a fire of one item that succeeds: a start and an end.
// Each fire makes five table rows: JOB_EXECUTION_LOG, SHARDWORK_EXECUTION_LOG, and three
// JOB_STATUS_TRACE_LOG rows (staging, running, finished). Events are published as fast as the
// writer takes them, never beyond its queue, so nothing is dropped.
//
// Usage: HistoryBenchmark [--sqlite] [fires]   (default 200000; --sqlite: SQLite alone)

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
let sqliteOnly = CommandLine.arguments.contains("--sqlite")
let logger = Logger(label: "benchmark") { _ in SwiftLogNoOpLogHandler() }

/// CPU time (user and system) this process has used so far, in seconds.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1_000_000 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Publishes `fires` fires and waits until all are written; returns the seconds it took and the
/// CPU seconds the process used meanwhile (publishing, the writer, and for SQLite the database).
func measure(_ store: any HistoryStore) async throws -> (seconds: Double, cpu: Double) {
    try await store.prepare()
    let events = HostEvents(clock: SystemClock())
    let instance = JobInstance(id: "127.0.0.1@-@\(getpid())", serverIP: "127.0.0.1")
    let writer = HistoryWriter(store: store, events: events, instance: instance, hostname: "benchmark", logger: logger)
    let subscription = writer.subscribe()
    let writing = Task { await writer.run(subscription) }
    let expected = fires * 5
    let started = ContinuousClock.now
    let cpuStarted = cpuSeconds()
    let base = Int64(Date().timeIntervalSince1970 * 1000)
    for fire in 0..<fires {
        // Keep the writer busy and stay within its queue (and the subscription's buffer, which
        // holds more): rows not written yet, wherever they are, are at most 80 % of the queue's
        // bound, so nothing is dropped.
        while fire * 5 - writer.written > writer.capacity * 4 / 5 {
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
    let cpu = cpuSeconds() - cpuStarted
    events.finish()
    await writing.value
    await store.close()
    return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, cpu)
}

print("| database | fires | seconds | fires recorded/s | table rows/s | CPU per row (this process) |")
print("|---|---:|---:|---:|---:|---:|")
func report(_ name: String, _ measured: (seconds: Double, cpu: Double)) {
    let rows = Double(fires * 5)
    print(
        "| \(name) | \(fires) | \(String(format: "%.2f", measured.seconds)) | \(Int(Double(fires) / measured.seconds)) | "
            + "\(Int(rows / measured.seconds)) | \(String(format: "%.1f", measured.cpu / rows * 1e6)) µs |")
}

do {
    let directory = try TemporaryDirectory("shardwork-history-benchmark")
    report("SQLite (WAL, synchronous NORMAL)", try await measure(try SQLiteHistoryStore(path: directory.file("history.sqlite"))))
    if sqliteOnly { exit(0) }
    let server = try await PostgresServer.start()
    let login = try await server.createDatabase()
    let store = PostgresHistoryStore(.init(host: login.host, port: login.port, database: login.database, username: login.user, password: login.password))
    let version = try await server.psql("SHOW server_version")
    let measured = try await measure(store)
    await server.stop()
    report("PostgreSQL \(version) (loopback)", measured)
} catch {
    fail("\(error)")
}
