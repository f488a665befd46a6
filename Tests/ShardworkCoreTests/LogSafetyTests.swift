import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

/// Every log line a host wrote, with its level, from a handler that keeps them whole.
final class LineLog: Sendable {
    private let entries = Mutex<[(level: Logger.Level, message: String, metadata: String)]>([])

    var all: [(level: Logger.Level, message: String, metadata: String)] { entries.withLock { $0 } }

    func logger() -> Logger {
        var logger = Logger(label: "test") { _ in Handler(log: self) }
        logger.logLevel = .trace
        return logger
    }

    private struct Handler: LogHandler {
        let log: LineLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            log.entries.withLock { $0.append((event.level, "\(event.message)", merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))) }
        }
    }
}

/// Text from outside the host cannot forge or hide log lines.
@Suite("Log safety", .stopsWhatItStarts)
struct LogSafetyTests {
    @Test("line breaks, terminal escapes and invisible characters are written as escapes; plain text is left alone", arguments: [
        ("plain text, with punctuation: 100%", "plain text, with punctuation: 100%"),
        ("oops\n2026-12-06T00:00:00+0000 critical shardwork: host compromised", "oops\\n2026-12-06T00:00:00+0000 critical shardwork: host compromised"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\u{1B}[31mred\u{1B}[0m", "\\u{1B}[31mred\\u{1B}[0m"),
        ("right\u{202E}txt.exe", "right\\u{202E}txt.exe"),
        ("line\u{2028}separator", "line\\u{2028}separator"),
        ("nul\u{0}byte", "nul\\u{0}byte"),
        ("Zürich 订单 café", "Zürich 订单 café"),
    ])
    func escaping(text: String, expected: String) {
        #expect(LogText.escaped(text) == expected)
    }

    @Test("long text is cut at the limit, saying how much was left out, never inside a character or an escape")
    func bounded() {
        let huge = String(repeating: "x", count: 4 << 20)
        let cut = LogText.escaped(huge)
        #expect(cut.hasPrefix(String(repeating: "x", count: LogText.defaultLimit)))
        #expect(cut.hasSuffix("… (\((4 << 20) - LogText.defaultLimit) more bytes)"))
        #expect(LogText.escaped("ééé", limit: 3) == "é… (4 more bytes)")
        #expect(LogText.escaped("ab\ncd", limit: 3) == "ab… (3 more bytes)")
        #expect(LogText.quoted("a\nb") == "'a\\nb'")
    }

    /// No line of `log` breaks, carries a terminal escape or exceeds the bound; none from a plugin
    /// is critical.
    static func expectClean(_ log: LineLog, sourceLocation: SourceLocation = #_sourceLocation) {
        for entry in log.all {
            let text = entry.message + " " + entry.metadata
            #expect(!text.contains("\n") && !text.contains("\r") && !text.contains("\u{1B}"), "\(text.prefix(300))", sourceLocation: sourceLocation)
            #expect(text.utf8.count < 2 * LogText.defaultLimit, "a line of \(text.utf8.count) bytes", sourceLocation: sourceLocation)
        }
    }

    @Test("a plugin's log messages are escaped and bounded, and its levels clamped: no forged line, no escape code, no 4 MB line, no critical")
    func pluginMessages() async throws {
        let log = LineLog()
        let harness = try await HostHarness("""
            jobs:
              - jobName: noisy
                jobType: c-echo
                shardingTotalCount: 1
                jobParameter: noisy
              - jobName: forger
                jobType: c-echo
                shardingTotalCount: 1
                jobParameter: forged-failure
            """, logger: log.logger())
        try await harness.host.start()
        try await harness.host.trigger("noisy")
        try await harness.host.trigger("forger")
        #expect(await eventually { log.all.filter { $0.message == "fired" }.count == 2 })
        Self.expectClean(log)
        let messages = log.all.map(\.message)
        #expect(messages.contains("ordinary\\n2026-12-06T00:00:00+0000 critical shardwork: [ShardworkCore] host compromised"))
        #expect(messages.contains("\\u{1B}[2J\\u{1B}[31mred alert\\u{1B}[0m"))
        #expect(messages.contains { $0.hasPrefix("xxxx") && $0.hasSuffix("… (\((4 << 20) - LogText.defaultLimit) more bytes)") })
        #expect(log.all.contains { $0.message == "level ninety-nine" && $0.level == .error })
        #expect(!log.all.contains { $0.level == .critical })
        // The failure's message reaches the error handler whole; the handler's log line (it logs
        // through the host API of its plugin, whose log is the loader's) is escaped.
        #expect(harness.log.contains("failed\\n2026-12-06T00:00:00+0000 critical shardwork: forged\\u{1B}[31m"), "\(harness.log.messages)")
        #expect(!harness.log.messages.contains { $0.contains("\n") || $0.contains("\u{1B}") })
        await harness.host.shutdown()
    }

    @Test("an HTTP server's error body cannot forge a log line through the HTTP job and the log error handler")
    func httpBody() async throws {
        let server = try await FixtureServer.start("http_server.py")
        let log = LineLog()
        let harness = try await HostHarness("""
            jobs:
              - jobName: fetch
                jobType: HTTP
                shardingTotalCount: 1
                props:
                  http.uri: \(server.baseURL)/forged
                  http.method: GET
            """, logger: log.logger())
        try await harness.host.start()
        try await harness.host.trigger("fetch")
        #expect(await eventually { log.all.contains { $0.message == "fired" } })
        Self.expectClean(log)
        #expect(harness.log.contains("answered 500: oops\\n2026-12-06T00:00:00+0000 critical shardwork: [ShardworkCore] host compromised\\u{1B}[31m"),
                "\(harness.log.messages)")
        #expect(!harness.log.messages.contains { $0.contains("\n") || $0.contains("\u{1B}") })
        await harness.host.shutdown()
    }
}
