import Foundation
import GRDB
import ShardworkCore
@testable import ShardworkHistory
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("The history writer's parts: its thread, its ids, its batches")
struct HistoryWriterPartsTests {
    @Test("tasks that prefer the background executor run on its own thread at nice 19 in the normal class (never starved); after stop they run elsewhere")
    func backgroundThread() async throws {
        let executor = BackgroundThreadExecutor(name: "test-background")
        // The task moves to the preferred executor when it next resumes: the body looks after a
        // suspension (it started once on the caller's thread, under load, and saw that one).
        let (policy, niceness, name) = await withTaskExecutorPreference(executor) {
            await Task.yield()
            return (sched_getscheduler(0), Self.niceness(), Self.threadName())
        }
        // The normal class: an unprivileged thread in the idle class could never leave it, and
        // would get no processor at all on a host busy with jobs.
        #expect(policy == SCHED_OTHER)
        #expect(niceness == 19)
        #expect(name == "test-background")
        // The caller's own thread keeps its class and priority.
        #expect(sched_getscheduler(0) == SCHED_OTHER)
        #expect(Self.niceness() == 0)

        // Many tasks at once: all run.
        let total = await withTaskGroup(of: Int.self) { group in
            for value in 1...1000 { group.addTask(executorPreference: executor) { value } }
            return await group.reduce(0, +)
        }
        #expect(total == 500_500)

        executor.stop()
        let after = await withTaskExecutorPreference(executor) {
            await Task.yield()
            return Self.threadName()
        }
        #expect(after != "test-background")
    }

    /// The calling thread's nice value (Linux: a thread's own).
    private static func niceness() -> Int32 { getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }
    /// The calling thread's name, as the kernel knows it.
    private static func threadName() -> String? {
        (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines)
    }

    @Test("row ids are UUIDs of version 4 in form, unique within a writer and across writers")
    func rowIDs() {
        let first = RowIDs()
        let second = RowIDs()
        var seen = Set<String>()
        for _ in 0..<10_000 {
            for id in [first.next(), second.next()] {
                #expect(id.count == 36)
                let uuid = UUID(uuidString: id)
                #expect(uuid != nil, "\(id)")
                #expect(Array(id)[14] == "4", "version nibble: \(id)")
                #expect("89ab".contains(Array(id)[19]), "variant: \(id)")
                seen.insert(id)
            }
        }
        #expect(seen.count == 20_000)
    }

    @Test("an execution that starts and ends in one batch is one complete write; one that ends in a later batch keeps its start")
    func coalescing() {
        func record(_ id: String) -> ExecutionRecord {
            ExecutionRecord(
                id: id, jobName: "j", taskID: "t", hostname: "h", ip: "10.0.0.1", item: 0, source: .schedule, startTime: 1, fireTime: 1,
                fencingEpoch: 1, plugin: "p", pluginVersion: "1", instanceID: "i")
        }
        var done = record("a")
        done.completeTime = 2
        done.outcome = .succeeded
        let status = HistoryWrite.status(StatusTraceRecord(
            id: "s", jobName: "j", taskID: "t", slaveID: "10.0.0.1", items: [0], state: .running, message: "", creationTime: 1))
        let batch: [HistoryWrite] = [.executionStarted(record("a")), status, .executionStarted(record("b")), .executionCompleted(done)]
        #expect(HistoryWriter.coalesced(batch) == [status, .executionStarted(record("b")), .executionCompleted(done)])
        #expect(HistoryWriter.coalesced([status]) == [status])
    }

    @Test("times are UTC text to the millisecond, as ElasticJob's TIMESTAMP columns hold them in SQLite")
    func timeText() {
        #expect(HistoryTime.text(1_796_652_000_123) == "2026-12-07 14:00:00.123")
        #expect(HistoryTime.text(0) == "1970-01-01 00:00:00.000")
        #expect(HistoryTime.text(-1) == "1969-12-31 23:59:59.999")
        #expect(HistoryTime.text(253_402_300_799_999) == "9999-12-31 23:59:59.999")
    }

    @Test("a row bound through SQLite's C interface keeps text, empty text, numbers, NULL and times; a value SQLite refuses fails the row")
    func boundStatement() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t (a TEXT NOT NULL, b TEXT NOT NULL, c INTEGER, d TEXT, e TEXT)")
            var row = BoundStatement(try db.cachedStatement(sql: "INSERT INTO t VALUES (?, ?, ?, ?, ?)"))
            row.bind("任务一 100%")
            row.bind("")
            row.bind(Int64(-7))
            row.bind(nil as String?)
            row.bind(time: 1_796_652_000_123)
            try row.run(db)
            let stored = try #require(try Row.fetchOne(db, sql: "SELECT a, b, c, d, e FROM t"))
            #expect(stored["a"] as String? == "任务一 100%" && stored["b"] as String? == "" && stored["c"] as Int64? == -7)
            #expect(stored["d"] as String? == nil && stored["e"] as String? == "2026-12-07 14:00:00.123")
            // One value more than the statement has: nothing is written, and the error says so.
            var extra = BoundStatement(try db.cachedStatement(sql: "INSERT INTO t (a, b) VALUES (?, ?)"))
            extra.bind("x")
            extra.bind("y")
            extra.bind("z")
            #expect(throws: DatabaseError.self) { try extra.run(db) }
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM t") == 1)
        }
    }
}
