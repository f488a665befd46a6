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

    @Test("the control API and shardwork job history read the history: filters, paging, JSON, and bad parameters named; a host without history says so")
    func historyThroughTheAPI() async throws {
        let directory = try TemporaryDirectory()
        let port = try await SharedZooKeeper.unusedPort()
        let url = "http://127.0.0.1:\(port)"
        let config = try configuration(
            "tracing:\n  sqlite:\n    path: \(directory.file("history.sqlite"))\napi:\n  address: 127.0.0.1:\(port)\n  token: \(apiToken)",
            in: directory)
        let host = try HostProcess(ip: "127.0.0.1", config: config, log: directory.file("host.log"), arguments: ["--trigger", "nightly-report", "--ip", "127.0.0.1"])
        defer { Task { await host.stop() } }
        // The triggered fire's four items, once they are written (batches go out as they come).
        let written = await waitUntil(seconds: 60) {
            let page = try? await HTTP.request("GET", url + "/v1/jobs/nightly-report/executions?source=trigger", token: apiToken)
            return page?.status == 200 && (page?.body.components(separatedBy: "\"outcome\":\"succeeded\"").count ?? 0) - 1 == 4
        }
        #expect(written, "\(host.output.suffix(3000))")
        let json = try await control(url, "job", "history", "nightly-report", "--source", "trigger", "--json")
        #expect(json.succeeded, "\(json.standardError)")
        let page = try JSONDecoder().decode(ExecutionPage.self, from: Data(json.standardOutput.utf8))
        #expect(page.executions.map(\.item).sorted() == [0, 1, 2, 3])
        #expect(page.executions.allSatisfy { $0.job == "nightly-report" && $0.executionSource == "NORMAL_TRIGGER" && $0.instanceId.hasPrefix("127.0.0.1@-@") })
        let table = try await control(url, "job", "history", "nightly-report", "--item", "2", "--since", "1h")
        #expect(table.succeeded && table.standardOutput.contains("STARTED (UTC)") && table.standardOutput.contains(" trigger "), "\(table.standardOutput)")
        let paged = try await HTTP.request("GET", url + "/v1/executions?limit=1", token: apiToken)
        #expect(paged.status == 200 && paged.body.contains("\"next\":1"), "\(paged.body)")
        let bad = try await HTTP.request("GET", url + "/v1/jobs/nightly-report/executions?source=cron", token: apiToken)
        #expect(bad.status == 400 && bad.error?["field"] as? String == "source", "\(bad.body)")
        let badCLI = try await control(url, "job", "history", "nightly-report", "--since", "yesterday")
        #expect(!badCLI.succeeded && badCLI.standardError.contains("since"), "\(badCLI.standardError)")
        // The writer's figures: where the rows go, what was written, nothing lost.
        let figuresAnswer = try await HTTP.request("GET", url + "/v1/history", token: apiToken)
        #expect(figuresAnswer.status == 200, "\(figuresAnswer.body)")
        let figures = try JSONDecoder().decode(HistoryFigures.self, from: Data(figuresAnswer.body.utf8))
        #expect(figures.database == "sqlite \(directory.file("history.sqlite"))")
        #expect(figures.rowsWritten >= 4 && figures.rowsDropped == 0 && figures.eventsDropped == 0 && figures.queueCapacity == 100_000, "\(figures)")
        let status = await host.stop()
        #expect(status == 0, "exit status \(status); its log ends:\n\(host.output.suffix(3000))")

        // Without a tracing: section the routes answer 503, naming the setting.
        let plainDirectory = try TemporaryDirectory()
        let plainPort = try await SharedZooKeeper.unusedPort()
        let plainConfig = try configuration("api:\n  address: 127.0.0.1:\(plainPort)\n  token: \(apiToken)", in: plainDirectory)
        let plain = try HostProcess(ip: "127.0.0.1", config: plainConfig, log: plainDirectory.file("host.log"))
        defer { Task { await plain.stop() } }
        let plainURL = "http://127.0.0.1:\(plainPort)"
        #expect(await waitUntil(seconds: 60) { (try? await HTTP.request("GET", plainURL + "/v1/jobs", token: apiToken).status) == 200 })
        let off = try await HTTP.request("GET", plainURL + "/v1/executions", token: apiToken)
        #expect(off.status == 503 && off.error?["field"] as? String == "tracing", "\(off.body)")
        let noFigures = try await HTTP.request("GET", plainURL + "/v1/history", token: apiToken)
        #expect(noFigures.status == 503 && noFigures.error?["field"] as? String == "tracing", "\(noFigures.body)")
        #expect(await plain.stop() == 0)
    }
}
