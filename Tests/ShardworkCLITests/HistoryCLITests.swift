import Foundation
import ShardworkCore
import ShardworkHistory
import ShardworkTestSupport
import Testing

/// The quick start's jobs with a `tracing:` section.
private func configuration(_ tracing: String, in directory: TemporaryDirectory) throws -> String {
    let quickStart = try String(contentsOfFile: TestPaths.repositoryRoot + "/examples/quickstart.yaml", encoding: .utf8)
    let path = directory.file("host.yaml")
    try (quickStart + "\n" + tracing + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// Execution history through `shardwork run` (docs/history.md).
extension RunCommandTests {
    @Test("with tracing on SQLite, every item the host ran is in ElasticJob's table once it stops, with its source and outcome")
    func historyOnSQLite() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.file("history.sqlite")
        let config = try configuration("tracing:\n  type: RDB\n  sqlite:\n    path: \(database)", in: directory)
        let (status, signalled, log) = try await runUntil(
            ["nightly-report item 3/4", "greetings item 1/3: parameter Shanghai"],
            ["run", "--config", config, "--trigger", "nightly-report"], signal: SIGTERM)
        #expect(status == 0 && !signalled, "\(log)")
        #expect(log.contains("history: on"), "\(log)")
        let store = try SQLiteHistoryStore(path: database)
        let report = try await store.executions(ExecutionQuery(jobName: "nightly-report", limit: 1000))
        #expect(report.filter { $0.source == .trigger }.map(\.item).sorted() == [0, 1, 2, 3], "\(report)")
        #expect(report.allSatisfy { $0.outcome == .succeeded && $0.completeTime != nil && $0.plugin == "example-jobs" })
        let greetings = try await store.executions(ExecutionQuery(jobName: "greetings", limit: 1000))
        #expect(!greetings.isEmpty && greetings.allSatisfy { $0.source == .schedule && $0.completeTime != nil })
    }

    @Test("a history database that cannot be used leaves the host firing, and says loudly that history is off and which setting to fix")
    func historyUnusable() async throws {
        let directory = try TemporaryDirectory()
        // A directory where the file should be: SQLite cannot open it.
        let database = directory.file("taken")
        try FileManager.default.createDirectory(atPath: database, withIntermediateDirectories: true)
        let config = try configuration("tracing:\n  sqlite:\n    path: \(database)", in: directory)
        let (status, signalled, log) = try await runUntil(
            ["nightly-report item 3/4"], ["run", "--config", config, "--trigger", "nightly-report"], signal: SIGTERM)
        #expect(status == 0 && !signalled, "\(log)")
        #expect(log.contains("history: OFF for this run") && log.contains("tracing.sqlite.path"), "\(log)")
        #expect(log.contains("nightly-report item 3/4"))
    }
}
