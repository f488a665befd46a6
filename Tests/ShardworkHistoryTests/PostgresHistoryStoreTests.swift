import Foundation
import Logging
import ShardworkCore
@testable import ShardworkHistory
import ShardworkTestSupport
import Testing

/// The PostgreSQL store against a real server (Debian's postgresql, one cluster per test process,
/// a database of its own per test). What the store wrote is read back with `psql`, as ElasticJob's
/// console would find it.
@Suite("PostgreSQL history store")
struct PostgresHistoryStoreTests {
    // MARK: - Fixtures

    /// 2026-12-07 14:00:00.123 UTC.
    static let base: Int64 = 1_796_652_000_123

    /// The store's own log, warnings and worse only.
    static let quiet: Logger = {
        var logger = Logger(label: "shardwork.history.test")
        logger.logLevel = .warning
        return logger
    }()

    /// A fresh database and a store on it, prepared.
    static func prepared() async throws -> (PostgresServer, PostgresServer.Login, PostgresHistoryStore) {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        let store = PostgresHistoryStore(configuration(login), logger: quiet)
        try await store.prepare()
        return (server, login, store)
    }

    static func configuration(_ login: PostgresServer.Login) -> PostgresHistoryStore.Configuration {
        PostgresHistoryStore.Configuration(
            host: login.host, port: login.port, database: login.database, username: login.user, password: login.password,
            connectTimeout: .seconds(5))
    }

    static func record(
        _ id: String, job: String = "orders", item: Int = 0, start: Int64 = base, source: FireSource = .schedule,
        instance: String = "10.0.0.1@-@100", outcome: ExecutionRecord.Outcome? = nil, complete: Int64? = nil, cause: String? = nil,
        fenced: Bool = false
    ) -> ExecutionRecord {
        ExecutionRecord(
            id: id, jobName: job, taskID: "\(job)@-@\(item)@-@READY@-@10.0.0.1@-@100", hostname: "host-a", ip: "10.0.0.1", item: item,
            source: source, startTime: start, completeTime: complete, outcome: outcome, failureCause: cause, fireTime: start - 7,
            fencingEpoch: UInt64.max - 1, plugin: "example-jobs", pluginVersion: "1.2.3", instanceID: instance, fenced: fenced)
    }

    static func completed(_ record: ExecutionRecord, _ outcome: ExecutionRecord.Outcome, after: Int64 = 250, cause: String? = nil)
        -> ExecutionRecord
    {
        var done = record
        done.outcome = outcome
        done.completeTime = record.startTime + after
        done.failureCause = cause
        return done
    }

    /// The error's description, or a failure when `body` does not throw a `HistoryStoreError`.
    static func storeError(_ body: () async throws -> Void) async -> String {
        do {
            try await body()
            Issue.record("expected a HistoryStoreError")
            return ""
        } catch let error as HistoryStoreError {
            return error.description
        } catch {
            Issue.record("expected a HistoryStoreError, got \(type(of: error)): \(error)")
            return ""
        }
    }

    // MARK: - Schema

    @Test("prepare creates ElasticJob's two tables with its PostgreSQL column types, Shardwork's table, and TASK_ID_STATE_INDEX")
    func schema() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        func columns(_ table: String) async throws -> [String] {
            try await server.psql(
                """
                SELECT column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') || ' ' || is_nullable \
                FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '\(table)' ORDER BY ordinal_position
                """, database: login.database
            ).split(separator: "\n").map(String.init)
        }
        #expect(try await columns("job_execution_log") == [
            "id character varying(40) NO", "job_name character varying(100) NO", "task_id character varying(255) NO",
            "hostname character varying(255) NO", "ip character varying(50) NO", "sharding_item integer NO",
            "execution_source character varying(20) NO", "failure_cause character varying(4000) YES", "is_success boolean NO",
            "start_time timestamp without time zone YES", "complete_time timestamp without time zone YES",
        ])
        #expect(try await columns("job_status_trace_log") == [
            "id character varying(40) NO", "job_name character varying(100) NO", "original_task_id character varying(255) NO",
            "task_id character varying(255) NO", "slave_id character varying(50) NO", "execution_type character varying(20) NO",
            "sharding_item character varying(100) NO", "state character varying(20) NO", "message character varying(4000) YES",
            "creation_time timestamp without time zone YES",
        ])
        #expect(try await columns("shardwork_execution_log") == [
            "id character varying(40) NO", "job_name character varying(100) NO", "sharding_item integer NO",
            "fire_source character varying(20) NO", "fire_time_ms bigint NO", "start_time_ms bigint NO", "complete_time_ms bigint YES",
            "outcome character varying(20) YES", "fencing_epoch bigint NO", "plugin character varying(255) NO",
            "plugin_version character varying(100) NO", "instance_id character varying(255) NO", "fenced boolean NO",
        ])
        let indexes = try await server.psql(
            "SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname", database: login.database)
        #expect(indexes.split(separator: "\n").map(String.init) == [
            "job_execution_log_pkey: CREATE UNIQUE INDEX job_execution_log_pkey ON public.job_execution_log USING btree (id)",
            "job_status_trace_log_pkey: CREATE UNIQUE INDEX job_status_trace_log_pkey ON public.job_status_trace_log USING btree (id)",
            "shardwork_execution_job_start_index: CREATE INDEX shardwork_execution_job_start_index ON public.shardwork_execution_log "
                + "USING btree (job_name, start_time_ms)",
            "shardwork_execution_log_pkey: CREATE UNIQUE INDEX shardwork_execution_log_pkey ON public.shardwork_execution_log USING btree (id)",
            "shardwork_execution_start_index: CREATE INDEX shardwork_execution_start_index ON public.shardwork_execution_log "
                + "USING btree (start_time_ms)",
            "task_id_state_index: CREATE INDEX task_id_state_index ON public.job_status_trace_log USING btree (task_id, state)",
        ])
        // A second prepare (a restart, another host) finds everything and changes nothing.
        try await store.prepare()
        let again = PostgresHistoryStore(Self.configuration(login), logger: Self.quiet)
        try await again.prepare()
        await again.close()
        #expect(try await server.psql("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'", database: login.database) == "6")
    }

    @Test("prepare keeps existing ElasticJob tables that have every column, and adds the index when it is missing")
    func existingTables() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        // As an ElasticJob cluster would have left them, created by the same user, without the index.
        try await server.psql(
            """
            SET ROLE \(PostgresServer.identifier(login.user));
            CREATE TABLE JOB_EXECUTION_LOG (id VARCHAR(40) NOT NULL, job_name VARCHAR(100) NOT NULL, task_id VARCHAR(255) NOT NULL,
              hostname VARCHAR(255) NOT NULL, ip VARCHAR(50) NOT NULL, sharding_item INT NOT NULL, execution_source VARCHAR(20) NOT NULL,
              failure_cause VARCHAR(4000) NULL, is_success BOOLEAN NOT NULL, start_time TIMESTAMP NULL, complete_time TIMESTAMP NULL,
              PRIMARY KEY (id));
            INSERT INTO JOB_EXECUTION_LOG VALUES ('old', 'legacy', 't', 'h', '1.2.3.4', 0, 'NORMAL_TRIGGER', NULL, true, now(), now());
            """, database: login.database)
        let store = PostgresHistoryStore(Self.configuration(login), logger: Self.quiet)
        try await store.prepare()
        await store.close()
        #expect(try await server.psql("SELECT job_name FROM job_execution_log", database: login.database) == "legacy")
        #expect(try await server.psql(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'task_id_state_index'", database: login.database) == "1")
    }

    // MARK: - Writes

    @Test("a start and then its completion leave one complete row in JOB_EXECUTION_LOG, with UTC times to the millisecond")
    func startThenCompletion() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let started = Self.record("e-1", item: 2)
        try await store.apply([.executionStarted(started)])
        #expect(try await server.psql(
            "SELECT is_success, complete_time IS NULL FROM job_execution_log WHERE id = 'e-1'", database: login.database) == "f|t")
        #expect(try await store.executions(ExecutionQuery()) == [started])

        let done = Self.completed(started, .failed, cause: "boom")
        try await store.apply([.executionCompleted(done)])
        let row = try await server.psql(
            """
            SELECT id, job_name, task_id, hostname, ip, sharding_item, execution_source, failure_cause, is_success, \
            to_char(start_time, 'YYYY-MM-DD HH24:MI:SS.MS'), to_char(complete_time, 'YYYY-MM-DD HH24:MI:SS.MS') FROM job_execution_log
            """, database: login.database)
        #expect(row == "e-1|orders|orders@-@2@-@READY@-@10.0.0.1@-@100|host-a|10.0.0.1|2|NORMAL_TRIGGER|boom|f|"
            + "2026-12-07 14:00:00.123|2026-12-07 14:00:00.373")
        #expect(try await store.executions(ExecutionQuery()) == [done])
    }

    @Test("a completion that arrives before its start leaves one complete row, and the late start changes nothing")
    func completionBeforeStart() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let started = Self.record("e-2", source: .misfire)
        let done = Self.completed(started, .succeeded)
        try await store.apply([.executionCompleted(done)])
        try await store.apply([.executionStarted(started)])
        // And both in one batch, the other way round.
        let other = Self.record("e-3", item: 1, source: .failover)
        try await store.apply([.executionCompleted(Self.completed(other, .timedOut)), .executionStarted(other)])

        #expect(try await server.psql(
            "SELECT id, execution_source, is_success, complete_time IS NOT NULL FROM job_execution_log ORDER BY id", database: login.database)
            == "e-2|MISFIRE|t|t\ne-3|FAILOVER|f|t")
        #expect(try await server.psql("SELECT count(*) FROM shardwork_execution_log", database: login.database) == "2")
        #expect(try await store.executions(ExecutionQuery()) == [done, Self.completed(other, .timedOut)])
    }

    @Test("status writes add JOB_STATUS_TRACE_LOG rows as ElasticJob-Lite writes them, and a repeated id is ignored")
    func statusRows() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let taskID = "orders@-@0,1@-@READY@-@10.0.0.1@-@100"
        let staging = StatusTraceRecord(
            id: "s-1", jobName: "orders", taskID: taskID, slaveID: "10.0.0.1", items: [0, 1], state: .staging,
            message: "Job 'orders' execute begin.", creationTime: Self.base)
        let finished = StatusTraceRecord(
            id: "s-2", jobName: "orders", taskID: taskID, slaveID: "10.0.0.1", items: [0, 1], state: .finished, message: "",
            creationTime: Self.base + 1_001)
        try await store.apply([.status(staging), .status(finished)])
        try await store.apply([.status(staging)])
        let rows = try await server.psql(
            """
            SELECT id, job_name, original_task_id, task_id, slave_id, execution_type, sharding_item, state, message, \
            to_char(creation_time, 'YYYY-MM-DD HH24:MI:SS.MS') FROM job_status_trace_log ORDER BY id
            """, database: login.database)
        #expect(rows == """
            s-1|orders||\(taskID)|10.0.0.1|READY|[0, 1]|TASK_STAGING|Job 'orders' execute begin.|2026-12-07 14:00:00.123
            s-2|orders||\(taskID)|10.0.0.1|READY|[0, 1]|TASK_FINISHED||2026-12-07 14:00:01.124
            """)
        // ElasticJob's console finds a task's states through the index.
        #expect(try await server.psql(
            "SELECT state FROM job_status_trace_log WHERE task_id = '\(taskID)' AND state = 'TASK_STAGING'", database: login.database)
            == "TASK_STAGING")
    }

    @Test("a batch is one transaction: when one write fails, none of the batch stays")
    func batchIsOneTransaction() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let good = Self.record("e-ok")
        // job_name is VARCHAR(100): a longer one fails the insert, and with it the batch.
        let bad = Self.record("e-bad", job: String(repeating: "x", count: 101))
        let message = await Self.storeError { try await store.apply([.executionStarted(good), .executionStarted(bad)]) }
        #expect(message.contains("tracing.postgresql"))
        #expect(message.contains("write the history"))
        #expect(try await server.psql("SELECT count(*) FROM job_execution_log", database: login.database) == "0")
        // The connection is still good for the next batch.
        try await store.apply([.executionStarted(good)])
        #expect(try await store.executions(ExecutionQuery()) == [good])
    }

    // MARK: - Reads

    @Test("executions filter by job, item, instance, start time, failure and source, newest start first, with paging")
    func queries() async throws {
        let (_, _, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let minute: Int64 = 60_000
        let records = [
            Self.completed(Self.record("a0", job: "orders", item: 0, start: Self.base), .succeeded),
            Self.completed(Self.record("a1", job: "orders", item: 1, start: Self.base), .failed, cause: "x"),
            Self.completed(Self.record("b0", job: "orders", item: 0, start: Self.base + minute, source: .trigger), .timedOut),
            Self.completed(
                Self.record("c0", job: "billing", item: 0, start: Self.base + 2 * minute, source: .misfire, instance: "10.0.0.2@-@7"),
                .succeeded, cause: nil),
            Self.record("d0", job: "billing", item: 3, start: Self.base + 3 * minute, source: .failover, instance: "10.0.0.2@-@7", fenced: true),
        ]
        try await store.apply(records.map { .executionStarted($0) })
        func ids(_ query: ExecutionQuery) async throws -> [String] { try await store.executions(query).map(\.id) }

        #expect(try await ids(ExecutionQuery()) == ["d0", "c0", "b0", "a0", "a1"])
        let byID = Dictionary(uniqueKeysWithValues: records.map { ($0.id, $0) })
        #expect(try await store.executions(ExecutionQuery()) == ["d0", "c0", "b0", "a0", "a1"].compactMap { byID[$0] })
        #expect(try await ids(ExecutionQuery(jobName: "orders")) == ["b0", "a0", "a1"])
        #expect(try await ids(ExecutionQuery(jobName: "orders", item: 0)) == ["b0", "a0"])
        #expect(try await ids(ExecutionQuery(item: 3)) == ["d0"])
        #expect(try await ids(ExecutionQuery(instanceID: "10.0.0.2@-@7")) == ["d0", "c0"])
        #expect(try await ids(ExecutionQuery(since: Self.base + minute)) == ["d0", "c0", "b0"])
        #expect(try await ids(ExecutionQuery(until: Self.base + minute)) == ["b0", "a0", "a1"])
        #expect(try await ids(ExecutionQuery(since: Self.base + minute, until: Self.base + 2 * minute)) == ["c0", "b0"])
        #expect(try await ids(ExecutionQuery(failedOnly: true)) == ["b0", "a1"])
        #expect(try await ids(ExecutionQuery(jobName: "billing", failedOnly: true)) == [])
        #expect(try await ids(ExecutionQuery(source: .trigger)) == ["b0"])
        #expect(try await ids(ExecutionQuery(source: .schedule)) == ["a0", "a1"])
        #expect(try await ids(ExecutionQuery(source: .failover)) == ["d0"])
        #expect(try await ids(ExecutionQuery(limit: 2)) == ["d0", "c0"])
        #expect(try await ids(ExecutionQuery(limit: 2, offset: 2)) == ["b0", "a0"])
        #expect(try await ids(ExecutionQuery(limit: 2, offset: 4)) == ["a1"])
        #expect(try await ids(ExecutionQuery(offset: 5)) == [])
        #expect(try await ids(ExecutionQuery(jobName: "nothing")) == [])
        // Shardwork's own facts come back whole: the fencing epoch's full 64 bits, the fence flag.
        let fenced = try #require(try await store.executions(ExecutionQuery(item: 3)).first)
        #expect(fenced.fencingEpoch == UInt64.max - 1)
        #expect(fenced.fenced)
        #expect(fenced.outcome == nil && fenced.completeTime == nil)
    }

    @Test("purge removes the executions started and the status rows created before the time, and counts them")
    func purge() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let old = Self.completed(Self.record("old", start: Self.base - 10_000), .succeeded)
        let edge = Self.record("edge", item: 1, start: Self.base)
        let new = Self.record("new", item: 2, start: Self.base + 10_000)
        func status(_ id: String, _ time: Int64) -> HistoryWrite {
            .status(StatusTraceRecord(
                id: id, jobName: "orders", taskID: "t", slaveID: "10.0.0.1", items: [0], state: .running, message: "", creationTime: time))
        }
        try await store.apply([
            .executionStarted(old), .executionStarted(edge), .executionStarted(new),
            status("s-old", Self.base - 1), status("s-edge", Self.base), status("s-new", Self.base + 1),
        ])
        #expect(try await store.purge(before: Self.base) == 2)
        #expect(try await store.executions(ExecutionQuery()).map(\.id) == ["new", "edge"])
        #expect(try await server.psql("SELECT id FROM job_execution_log ORDER BY id", database: login.database) == "edge\nnew")
        #expect(try await server.psql("SELECT id FROM job_status_trace_log ORDER BY id", database: login.database) == "s-edge\ns-new")
        #expect(try await store.purge(before: Self.base) == 0)
    }

    // MARK: - Errors that name the setting

    @Test("a wrong password gives an error that names tracing.postgresql.password")
    func wrongPassword() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        var configuration = Self.configuration(login)
        configuration.password = "not-the-password"
        let store = PostgresHistoryStore(configuration, logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.password"))
        #expect(message.contains(login.user))
        #expect(!message.contains("not-the-password"))
        #expect(!configuration.description.contains("not-the-password"))
        await store.close()
    }

    @Test("a port nothing listens on gives an error that names tracing.postgresql.port and the address")
    func wrongPort() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        var configuration = Self.configuration(login)
        configuration.port = try PostgresServer.unusedPort()
        let store = PostgresHistoryStore(configuration, logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.port"))
        #expect(message.contains("127.0.0.1:\(configuration.port)"))
        // Reads fail the same way, without hanging.
        let read = await Self.storeError { _ = try await store.executions(ExecutionQuery()) }
        #expect(read.contains("tracing.postgresql.port"))
        await store.close()
    }

    @Test("a database that does not exist gives an error that names tracing.postgresql.database")
    func missingDatabase() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        var configuration = Self.configuration(login)
        configuration.database = "no_such_history"
        let store = PostgresHistoryStore(configuration, logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.database"))
        #expect(message.contains("no_such_history"))
        await store.close()
    }

    @Test("a user without the right to create tables is told so, with tracing.postgresql.user named")
    func readOnlyUser() async throws {
        let server = try await SharedPostgres.server()
        let owner = try await server.createDatabase()
        let reader = try await server.createReadOnlyRole(database: owner.database)
        let store = PostgresHistoryStore(Self.configuration(reader), logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.user"))
        #expect(message.contains(reader.user))
        #expect(message.contains("no right to create"))
        // Nothing was left half-made.
        #expect(try await server.psql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database: owner.database) == "0")
        await store.close()

        // With the tables made by their owner, a user that may only read them is refused as well.
        let ownerStore = PostgresHistoryStore(Self.configuration(owner), logger: Self.quiet)
        try await ownerStore.prepare()
        await ownerStore.close()
        try await server.psql(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(PostgresServer.identifier(reader.user))", database: owner.database)
        let again = PostgresHistoryStore(Self.configuration(reader), logger: Self.quiet)
        let refused = await Self.storeError { try await again.prepare() }
        #expect(refused.contains("tracing.postgresql.user"))
        #expect(refused.contains("INSERT, UPDATE, DELETE"))
        await again.close()
    }

    @Test("an existing JOB_EXECUTION_LOG with other columns is refused with the table, the missing columns and the fix")
    func conflictingTable() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        try await server.psql(
            """
            SET ROLE \(PostgresServer.identifier(login.user));
            CREATE TABLE job_execution_log (id VARCHAR(40) PRIMARY KEY, job_name VARCHAR(100), started TIMESTAMP);
            """, database: login.database)
        let store = PostgresHistoryStore(Self.configuration(login), logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.database"))
        #expect(message.contains("JOB_EXECUTION_LOG"))
        #expect(message.contains(
            "task_id, hostname, ip, sharding_item, execution_source, failure_cause, is_success, start_time, complete_time"))
        #expect(message.contains("drop or rename that table"))
        // Nothing else was created beside it.
        #expect(try await server.psql(
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'", database: login.database) == "job_execution_log")
        await store.close()
    }

    @Test("an existing JOB_EXECUTION_LOG without its primary key on id is refused with the fix (rows are written by id)")
    func tableWithoutPrimaryKey() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        try await server.psql(
            """
            SET ROLE \(PostgresServer.identifier(login.user));
            \(PostgresHistoryStore.elasticJobExecutionDDL.replacingOccurrences(of: ", PRIMARY KEY (id))", with: ")"));
            """, database: login.database)
        let store = PostgresHistoryStore(Self.configuration(login), logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.database"))
        #expect(message.contains("JOB_EXECUTION_LOG"))
        #expect(message.contains("ALTER TABLE JOB_EXECUTION_LOG ADD PRIMARY KEY (id)"))
        // With the key added, as the message says, the store prepares and writes.
        try await server.psql(
            "SET ROLE \(PostgresServer.identifier(login.user)); ALTER TABLE JOB_EXECUTION_LOG ADD PRIMARY KEY (id);", database: login.database)
        try await store.prepare()
        try await store.apply([.executionCompleted(Self.completed(Self.record("e-pk"), .succeeded))])
        #expect(try await store.executions(ExecutionQuery()).map(\.id) == ["e-pk"])
        await store.close()
    }

    @Test("an existing JOB_EXECUTION_LOG whose is_success is not BOOLEAN is refused with the column named")
    func conflictingColumnType() async throws {
        let server = try await SharedPostgres.server()
        let login = try await server.createDatabase()
        // ElasticJob's SQL92 layout, as its default dialect would have made it.
        try await server.psql(
            """
            SET ROLE \(PostgresServer.identifier(login.user));
            CREATE TABLE JOB_EXECUTION_LOG (id CHARACTER(40) NOT NULL, job_name CHARACTER(100) NOT NULL, task_id CHARACTER(255) NOT NULL,
              hostname CHARACTER(255) NOT NULL, ip CHARACTER(50) NOT NULL, sharding_item INTEGER NOT NULL, execution_source CHARACTER(20) NOT NULL,
              failure_cause CHARACTER VARYING(4000) NULL, is_success INTEGER NOT NULL, start_time TIMESTAMP NULL, complete_time TIMESTAMP NULL,
              PRIMARY KEY (id));
            """, database: login.database)
        let store = PostgresHistoryStore(Self.configuration(login), logger: Self.quiet)
        let message = await Self.storeError { try await store.prepare() }
        #expect(message.contains("tracing.postgresql.database"))
        #expect(message.contains("JOB_EXECUTION_LOG.is_success"))
        #expect(message.contains("integer"))
        await store.close()
    }

    @Test("a connection the server ends is opened again for the next call")
    func reconnects() async throws {
        let (server, login, store) = try await Self.prepared()
        defer { Task { await store.close() } }
        let first = Self.record("r-1")
        try await store.apply([.executionStarted(first)])
        let ended = try await server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(login.database)' AND application_name = 'shardwork'")
        #expect(ended == "1")
        try await Task.sleep(for: .milliseconds(200))
        let second = Self.record("r-2", item: 1)
        try await store.apply([.executionStarted(second)])
        #expect(try await store.executions(ExecutionQuery()).map(\.id) == ["r-1", "r-2"])
    }

    @Test("a closed store refuses further calls with an error instead of reconnecting")
    func closedStore() async throws {
        let (_, _, store) = try await Self.prepared()
        await store.close()
        let message = await Self.storeError { _ = try await store.executions(ExecutionQuery()) }
        #expect(message.contains("closed"))
    }
}
