import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

@Suite("The tracing: section")
struct TracingConfigurationTests {
    static let job = "jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n"

    @Test("absent means no history; empty means SQLite in the state directory; RDB picks the database whose section is given")
    func defaults() throws {
        #expect(try HostConfigurationReader.parse(Self.job).tracing == nil)
        let empty = try #require(try HostConfigurationReader.parse("tracing:\n" + Self.job).tracing)
        #expect(empty.database == .sqlite(path: nil) && empty.queueCapacity == 100_000 && empty.retentionDays == 30)
        var host = HostSettings()
        host.stateDirectory = "/var/lib/shardwork"
        #expect(empty.sqlitePath(ip: "10.0.0.1", host: host) == "/var/lib/shardwork/history-10.0.0.1.sqlite")
        let rdb = try #require(try HostConfigurationReader.parse("""
            tracing:
              type: RDB
              postgresql:
                host: db.internal
                port: 6432
                database: history
                user: writer
                password: secret
              retentionDays: null
            """ + "\n" + Self.job).tracing)
        var postgres = PostgreSQLSettings()
        postgres.host = "db.internal"
        postgres.port = 6432
        postgres.database = "history"
        postgres.user = "writer"
        postgres.password = "secret"
        #expect(rdb.database == .postgresql(postgres) && rdb.retentionDays == nil)
        let relative = try #require(try HostConfigurationReader.parse(
            "tracing:\n  sqlite:\n    path: data/h.sqlite\n" + Self.job, baseDirectory: "/etc/shardwork").tracing)
        #expect(relative.database == .sqlite(path: "/etc/shardwork/data/h.sqlite"))
    }

    @Test("a password comes from a file or the environment; bad values are refused naming the field", arguments: [
        ("tracing:\n  type: mysql\n", "tracing.type"),
        ("tracing:\n  type: postgresql\n", "tracing.postgresql"),
        ("tracing:\n  queueCapacity: 0\n", "tracing.queueCapacity"),
        ("tracing:\n  retentionDays: -1\n", "tracing.retentionDays"),
        ("tracing:\n  sqlite:\n    path: \"\"\n", "tracing.sqlite.path"),
        ("tracing:\n  postgresql:\n    port: 70000\n", "tracing.postgresql.port"),
        ("tracing:\n  postgresql:\n    password: a\n    passwordFile: b\n", "tracing.postgresql.passwordFile"),
        ("tracing:\n  postgresql:\n    passwordFile: /nonexistent/secret\n", "tracing.postgresql.passwordFile"),
        ("tracing:\n  postgresql:\n    passwordEnvironment: SHARDWORK_TEST_NO_SUCH_VARIABLE\n", "tracing.postgresql.passwordEnvironment"),
        ("tracing:\n  color: blue\n", "tracing.color"),
    ])
    func refused(text: String, field: String) throws {
        #expect {
            try HostConfigurationReader.parse(text + Self.job)
        } throws: { error in
            (error as? HostConfigurationError)?.field == field
        }
    }

    @Test("passwordFile is read relative to the configuration file")
    func passwordFile() throws {
        let directory = try TemporaryDirectory()
        try "s3cret\n".write(toFile: directory.file("pw"), atomically: true, encoding: .utf8)
        let tracing = try #require(try HostConfigurationReader.parse(
            "tracing:\n  postgresql:\n    passwordFile: pw\n" + Self.job, baseDirectory: directory.path).tracing)
        guard case .postgresql(let postgres) = tracing.database else { Issue.record("not postgresql"); return }
        #expect(postgres.password == "s3cret")
    }
}
