public import Logging
import NIOCore
import NIOSSL
import PostgresNIO
public import ShardworkCore

/// The history in a PostgreSQL database, through postgres-nio: ElasticJob's two tables and its
/// index exactly as ElasticJob 3.0.4 creates them for PostgreSQL (its `PostgreSQL.properties`), so
/// that its console reads them, and Shardwork's own facts in `SHARDWORK_EXECUTION_LOG`.
///
/// ElasticJob's TIMESTAMP columns (without time zone) hold the UTC wall-clock time of each instant,
/// to the millisecond; the values are computed in SQL from bound milliseconds, so the session's
/// time zone plays no part.
///
/// One connection, opened on first use and again after it breaks, serves one call at a time
/// (calls queue for it without blocking a thread); all I/O runs on SwiftNIO's event loops.
public final class PostgresHistoryStore: HistoryStore {
    public struct Configuration: Sendable, CustomStringConvertible {
        public enum TLS: Sendable {
            /// Plain TCP (a loopback or otherwise private link).
            case disable
            /// TLS when the server offers it, with certificate checks; plain TCP otherwise.
            case prefer
            /// TLS with certificate checks, or no connection.
            case require
        }

        /// `tracing.postgresql.host`
        public var host: String
        /// `tracing.postgresql.port`
        public var port: Int
        /// `tracing.postgresql.database`
        public var database: String
        /// `tracing.postgresql.user`
        public var username: String
        /// `tracing.postgresql.password`: never logged nor shown in messages; `nil` for none.
        public var password: String?
        public var tls: TLS
        public var connectTimeout: Duration

        public init(
            host: String, port: Int = 5432, database: String, username: String, password: String?, tls: TLS = .disable,
            connectTimeout: Duration = .seconds(10)
        ) {
            self.host = host
            self.port = port
            self.database = database
            self.username = username
            self.password = password
            self.tls = tls
            self.connectTimeout = connectTimeout
        }

        /// Where and as whom, without the password.
        public var description: String { "postgresql://\(username)@\(host):\(port)/\(database)" }
    }

    public let configuration: Configuration
    private let logger: Logger
    private let slot: ConnectionSlot

    /// A store on that server; it connects on first use.
    public init(_ configuration: Configuration, logger: Logger = Logger(label: "shardwork.history")) {
        self.configuration = configuration
        self.logger = logger
        slot = ConnectionSlot(configuration: configuration, logger: logger)
    }

    /// A store for a host's `tracing.postgresql` settings (plain TCP).
    public convenience init(_ settings: PostgreSQLSettings, logger: Logger = Logger(label: "shardwork.history")) {
        self.init(
            Configuration(
                host: settings.host, port: settings.port, database: settings.database, username: settings.user, password: settings.password),
            logger: logger)
    }

    // MARK: - Schema

    /// ElasticJob 3.0.4's PostgreSQL DDL (elasticjob-tracing-rdb, META-INF/sql/PostgreSQL.properties).
    static let elasticJobExecutionDDL = """
        CREATE TABLE JOB_EXECUTION_LOG (id VARCHAR(40) NOT NULL, job_name VARCHAR(100) NOT NULL, task_id VARCHAR(255) NOT NULL, \
        hostname VARCHAR(255) NOT NULL, ip VARCHAR(50) NOT NULL, sharding_item INT NOT NULL, execution_source VARCHAR(20) NOT NULL, \
        failure_cause VARCHAR(4000) NULL, is_success BOOLEAN NOT NULL, start_time TIMESTAMP NULL, complete_time TIMESTAMP NULL, \
        PRIMARY KEY (id))
        """
    static let elasticJobStatusDDL = """
        CREATE TABLE JOB_STATUS_TRACE_LOG (id VARCHAR(40) NOT NULL, job_name VARCHAR(100) NOT NULL, original_task_id VARCHAR(255) NOT NULL, \
        task_id VARCHAR(255) NOT NULL, slave_id VARCHAR(50) NOT NULL, execution_type VARCHAR(20) NOT NULL, sharding_item VARCHAR(100) NOT NULL, \
        state VARCHAR(20) NOT NULL, message VARCHAR(4000) NULL, creation_time TIMESTAMP NULL, PRIMARY KEY (id))
        """
    static let elasticJobIndexDDL = "CREATE INDEX TASK_ID_STATE_INDEX ON JOB_STATUS_TRACE_LOG (task_id, state)"
    /// Shardwork's table, beside ElasticJob's (same `id`), with the SQLite store's columns.
    static let shardworkDDL = """
        CREATE TABLE SHARDWORK_EXECUTION_LOG (id CHARACTER VARYING(40) NOT NULL PRIMARY KEY, job_name CHARACTER VARYING(100) NOT NULL, \
        sharding_item INTEGER NOT NULL, fire_source CHARACTER VARYING(20) NOT NULL, fire_time_ms BIGINT NOT NULL, \
        start_time_ms BIGINT NOT NULL, complete_time_ms BIGINT NULL, outcome CHARACTER VARYING(20) NULL, fencing_epoch BIGINT NOT NULL, \
        plugin CHARACTER VARYING(255) NOT NULL, plugin_version CHARACTER VARYING(100) NOT NULL, instance_id CHARACTER VARYING(255) NOT NULL, \
        fenced BOOLEAN NOT NULL)
        """
    static let tables: [(name: String, ddl: String)] = [
        (ElasticJobTables.executionLog, elasticJobExecutionDDL),
        (ElasticJobTables.statusTraceLog, elasticJobStatusDDL),
        (ElasticJobTables.shardworkLog, shardworkDDL),
    ]
    static let indexes: [(name: String, ddl: String)] = [
        (ElasticJobTables.statusIndex, elasticJobIndexDDL),
        ("SHARDWORK_EXECUTION_JOB_START_INDEX", "CREATE INDEX SHARDWORK_EXECUTION_JOB_START_INDEX ON SHARDWORK_EXECUTION_LOG (job_name, start_time_ms)"),
        ("SHARDWORK_EXECUTION_START_INDEX", "CREATE INDEX SHARDWORK_EXECUTION_START_INDEX ON SHARDWORK_EXECUTION_LOG (start_time_ms)"),
    ]
    /// Columns whose type the writes depend on (a bound value must fit them).
    static let requiredTypes: [String: [String: String]] = [
        ElasticJobTables.executionLog: ["is_success": "boolean"],
        ElasticJobTables.shardworkLog: ["fenced": "boolean"],
    ]
    /// Serializes `prepare` across hosts that start together (a transaction-level advisory lock).
    private static let prepareLockKey: Int64 = 0x5348_4152_4457_4B48  // "SHARDWKH"

    public func prepare() async throws {
        try await withConnection(doing: "create the history tables") { connection in
            try await self.transaction(connection) {
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.prepareLockKey))", logger: self.logger)
                for table in Self.tables {
                    // Unquoted names fold to lower case: ElasticJob's own statements reach this table.
                    let name = table.name.lowercased()
                    if try await self.exists(name, connection) {
                        try await self.check(table: table.name, connection)
                    } else {
                        try await connection.query(PostgresQuery(unsafeSQL: table.ddl), logger: self.logger)
                        self.logger.info("created a history table", metadata: ["table": "\(table.name)", "database": "\(LogText.escaped(self.configuration.description))"])
                    }
                }
                for index in Self.indexes where !(try await self.exists(index.name.lowercased(), connection)) {
                    try await connection.query(PostgresQuery(unsafeSQL: index.ddl), logger: self.logger)
                }
            }
        }
    }

    /// Whether a relation of that (lower-case) name is on the connection's search path.
    private func exists(_ name: String, _ connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT to_regclass(\(name)::text) IS NOT NULL AS found", logger: logger).collect()
        return try rows.first?.decode(Bool.self) ?? false
    }

    /// An existing table must have every column the store writes (with a type its values fit), and
    /// this user must be able to read and write it.
    private func check(table: String, _ connection: PostgresConnection) async throws {
        let name = table.lowercased()
        let rows = try await connection.query(
            """
            SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a \
            WHERE a.attrelid = to_regclass(\(name)::text) AND a.attnum > 0 AND NOT a.attisdropped
            """, logger: logger
        ).collect()
        var types: [String: String] = [:]
        for row in rows {
            let (column, type) = try row.decode((String, String).self)
            types[column.lowercased()] = type
        }
        let missing = ElasticJobTables.columns[table, default: []].filter { types[$0] == nil }
        guard missing.isEmpty else {
            throw HistoryStoreError(
                "tracing.postgresql.database: the table \(table) in database '\(configuration.database)' on \(configuration.host):\(configuration.port) "
                    + "lacks the columns \(missing.joined(separator: ", ")) that the history writes (ElasticJob 3.0.4's PostgreSQL layout); "
                    + "drop or rename that table (Shardwork then creates it as ElasticJob does), or point tracing.postgresql.database at a database of its own")
        }
        for (column, expected) in Self.requiredTypes[table, default: [:]] where types[column] != expected {
            throw HistoryStoreError(
                "tracing.postgresql.database: the column \(table).\(column) in database '\(configuration.database)' is \(types[column] ?? "?"), "
                    + "not \(expected) as ElasticJob creates it for PostgreSQL; drop or rename that table (Shardwork then creates it), "
                    + "or point tracing.postgresql.database at a database of its own")
        }
        // Rows are written by id (insert, or update when it is there): the upsert needs id unique.
        if table != ElasticJobTables.statusTraceLog {
            let unique = try await connection.query(
                """
                SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                WHERE i.indrelid = to_regclass(\(name)::text) AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = 'id') AS found
                """, logger: logger
            ).collect()
            guard try unique.first?.decode(Bool.self) == true else {
                throw HistoryStoreError(
                    "tracing.postgresql.database: the table \(table) in database '\(configuration.database)' has no primary key on id, "
                        + "as ElasticJob creates it; add it (ALTER TABLE \(table) ADD PRIMARY KEY (id)), drop or rename that table "
                        + "(Shardwork then creates it), or point tracing.postgresql.database at a database of its own")
            }
        }
        // `has_table_privilege` with several privileges is true when any is held: ask for each.
        var denied: [String] = []
        for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            let rows = try await connection.query(
                "SELECT has_table_privilege(to_regclass(\(name)::text), \(privilege)) AS allowed", logger: logger
            ).collect()
            if try rows.first?.decode(Bool.self) != true { denied.append(privilege) }
        }
        guard denied.isEmpty else {
            throw HistoryStoreError(
                "tracing.postgresql.user: user '\(configuration.username)' may not \(denied.joined(separator: ", ")) on the table \(table) "
                    + "in database '\(configuration.database)'; grant them (GRANT SELECT, INSERT, UPDATE, DELETE ON \(table) TO "
                    + "\(configuration.username)) or set tracing.postgresql.user to a user that has them")
        }
    }

    // MARK: - Writes

    /// Writes the batch in one transaction of at most five statements, whatever its size: each
    /// table's rows go in as arrays (`UNNEST`), so a batch costs a few round trips, not one per row.
    /// Starts insert rows that are not there yet; completions insert, or update the row their start
    /// left (ElasticJob's insert-or-update), in any order within and across batches.
    public func apply(_ batch: [HistoryWrite]) async throws {
        guard !batch.isEmpty else { return }
        var started: [ExecutionRecord] = []
        var completed: [ExecutionRecord] = []
        var completedIndex: [String: Int] = [:]
        var statuses: [StatusTraceRecord] = []
        for write in batch {
            switch write {
            case .executionStarted(let record):
                started.append(record)
            case .executionCompleted(let record):
                // One update of a row per statement: a later completion of the same id wins.
                if let index = completedIndex[record.id] {
                    completed[index] = record
                } else {
                    completedIndex[record.id] = completed.count
                    completed.append(record)
                }
            case .status(let record):
                statuses.append(record)
            }
        }
        try await withConnection(doing: "write the history") { connection in
            try await self.transaction(connection) {
                if !started.isEmpty { try await self.insert(started, completing: false, connection) }
                if !completed.isEmpty { try await self.insert(completed, completing: true, connection) }
                if !statuses.isEmpty { try await self.insert(statuses, connection) }
            }
        }
    }

    /// Both rows of each execution: left alone when there (a start), or brought up to date (a
    /// completion).
    private func insert(_ records: [ExecutionRecord], completing: Bool, _ connection: PostgresConnection) async throws {
        let ids = records.map(\.id)
        let jobs = records.map(\.jobName)
        let items = records.map { Int32(clamping: $0.item) }
        let starts = records.map(\.startTime)
        let completes = records.map { $0.completeTime ?? 0 }
        let hasComplete = records.map { $0.completeTime != nil }
        let causes = records.map { $0.failureCause ?? "" }
        let hasCause = records.map { $0.failureCause != nil }
        let outcomes = records.map { $0.outcome?.rawValue ?? "" }
        let hasOutcome = records.map { $0.outcome != nil }
        try await connection.query(
            """
            INSERT INTO JOB_EXECUTION_LOG (id, job_name, task_id, hostname, ip, sharding_item, execution_source, failure_cause, \
            is_success, start_time, complete_time) \
            SELECT v.id, v.job_name, v.task_id, v.hostname, v.ip, v.item, v.source, CASE WHEN v.has_cause THEN v.cause END, v.success, \
            TIMESTAMP 'epoch' + v.start_ms * INTERVAL '1 millisecond', \
            CASE WHEN v.has_complete THEN TIMESTAMP 'epoch' + v.complete_ms * INTERVAL '1 millisecond' END \
            FROM UNNEST(\(ids)::text[], \(jobs)::text[], \(records.map(\.taskID))::text[], \(records.map(\.hostname))::text[], \
            \(records.map(\.ip))::text[], \(items)::int4[], \(records.map(\.elasticJobSource))::text[], \(causes)::text[], \
            \(hasCause)::bool[], \(records.map { $0.outcome == .succeeded })::bool[], \(starts)::int8[], \(completes)::int8[], \
            \(hasComplete)::bool[]) \
            AS v(id, job_name, task_id, hostname, ip, item, source, cause, has_cause, success, start_ms, complete_ms, has_complete) \
            ON CONFLICT (id) \(unescaped: completing ? ElasticJobTables.completeExecution : "DO NOTHING")
            """, logger: logger)
        try await connection.query(
            """
            INSERT INTO SHARDWORK_EXECUTION_LOG (id, job_name, sharding_item, fire_source, fire_time_ms, start_time_ms, complete_time_ms, \
            outcome, fencing_epoch, plugin, plugin_version, instance_id, fenced) \
            SELECT v.id, v.job_name, v.item, v.source, v.fire_ms, v.start_ms, CASE WHEN v.has_complete THEN v.complete_ms END, \
            CASE WHEN v.has_outcome THEN v.outcome END, v.epoch, v.plugin, v.plugin_version, v.instance_id, v.fenced \
            FROM UNNEST(\(ids)::text[], \(jobs)::text[], \(items)::int4[], \(records.map(\.source.rawValue))::text[], \
            \(records.map(\.fireTime))::int8[], \(starts)::int8[], \(completes)::int8[], \(hasComplete)::bool[], \(outcomes)::text[], \
            \(hasOutcome)::bool[], \(records.map { Int64(bitPattern: $0.fencingEpoch) })::int8[], \(records.map(\.plugin))::text[], \
            \(records.map(\.pluginVersion))::text[], \(records.map(\.instanceID))::text[], \(records.map(\.fenced))::bool[]) \
            AS v(id, job_name, item, source, fire_ms, start_ms, complete_ms, has_complete, outcome, has_outcome, epoch, plugin, \
            plugin_version, instance_id, fenced) \
            ON CONFLICT (id) \(unescaped: completing ? ElasticJobTables.completeShardwork : "DO NOTHING")
            """, logger: logger)
    }

    /// Status rows; one whose id is there already is left alone.
    private func insert(_ records: [StatusTraceRecord], _ connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO JOB_STATUS_TRACE_LOG (id, job_name, original_task_id, task_id, slave_id, execution_type, sharding_item, state, \
            message, creation_time) \
            SELECT v.id, v.job_name, v.original_task_id, v.task_id, v.slave_id, v.execution_type, v.items, v.state, v.message, \
            TIMESTAMP 'epoch' + v.created_ms * INTERVAL '1 millisecond' \
            FROM UNNEST(\(records.map(\.id))::text[], \(records.map(\.jobName))::text[], \(records.map(\.originalTaskID))::text[], \
            \(records.map(\.taskID))::text[], \(records.map(\.slaveID))::text[], \(records.map(\.executionType))::text[], \
            \(records.map(\.shardingItems))::text[], \(records.map(\.state.rawValue))::text[], \(records.map(\.message))::text[], \
            \(records.map(\.creationTime))::int8[]) \
            AS v(id, job_name, original_task_id, task_id, slave_id, execution_type, items, state, message, created_ms) \
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    // MARK: - Reads

    public func executions(_ query: ExecutionQuery) async throws -> [ExecutionRecord] {
        var conditions: [String] = []
        var binds = PostgresBindings()
        func bind(_ condition: (String) -> String, _ value: some PostgresDynamicTypeEncodable) {
            binds.append(value)
            conditions.append(condition("$\(binds.count)"))
        }
        if let job = query.jobName { bind({ "s.job_name = \($0)" }, job) }
        if let item = query.item { bind({ "s.sharding_item = \($0)" }, Int32(clamping: item)) }
        if let instance = query.instanceID { bind({ "s.instance_id = \($0)" }, instance) }
        if let since = query.since { bind({ "s.start_time_ms >= \($0)" }, since) }
        if let until = query.until { bind({ "s.start_time_ms <= \($0)" }, until) }
        if query.failedOnly { conditions.append("s.outcome IN ('failed', 'timedOut')") }
        if let source = query.source { bind({ "s.fire_source = \($0)" }, source.rawValue) }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        binds.append(Int64(query.limit))
        let limit = binds.count
        binds.append(Int64(query.offset))
        let offset = binds.count
        let sql = """
            SELECT s.id, e.job_name, e.task_id, e.hostname, e.ip, s.sharding_item, e.failure_cause, s.fire_source, s.fire_time_ms, \
            s.start_time_ms, s.complete_time_ms, s.outcome, s.fencing_epoch, s.plugin, s.plugin_version, s.instance_id, s.fenced \
            FROM SHARDWORK_EXECUTION_LOG s JOIN JOB_EXECUTION_LOG e ON e.id = s.id \(filter) \
            ORDER BY s.start_time_ms DESC, s.sharding_item ASC, s.id ASC LIMIT $\(limit) OFFSET $\(offset)
            """
        return try await withConnection(doing: "read the history") { connection in
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: self.logger).collect()
            return try rows.map(Self.record)
        }
    }

    private static func record(_ row: PostgresRow) throws -> ExecutionRecord {
        let row = row.makeRandomAccess()
        return ExecutionRecord(
            id: try row["id"].decode(String.self), jobName: try row["job_name"].decode(String.self),
            taskID: try row["task_id"].decode(String.self), hostname: try row["hostname"].decode(String.self),
            ip: try row["ip"].decode(String.self), item: try row["sharding_item"].decode(Int.self),
            source: FireSource(rawValue: try row["fire_source"].decode(String.self)) ?? .schedule,
            startTime: try row["start_time_ms"].decode(Int64.self), completeTime: try row["complete_time_ms"].decode(Int64?.self),
            outcome: try row["outcome"].decode(String?.self).flatMap(ExecutionRecord.Outcome.init(rawValue:)),
            failureCause: try row["failure_cause"].decode(String?.self), fireTime: try row["fire_time_ms"].decode(Int64.self),
            fencingEpoch: UInt64(bitPattern: try row["fencing_epoch"].decode(Int64.self)), plugin: try row["plugin"].decode(String.self),
            pluginVersion: try row["plugin_version"].decode(String.self), instanceID: try row["instance_id"].decode(String.self),
            fenced: try row["fenced"].decode(Bool.self))
    }

    // MARK: - Purge and close

    public func purge(before time: Int64) async throws -> Int {
        try await withConnection(doing: "remove old history rows") { connection in
            try await self.transaction(connection) {
                let executions = try await connection.query(
                    """
                    WITH gone AS (DELETE FROM JOB_EXECUTION_LOG WHERE id IN \
                    (SELECT id FROM SHARDWORK_EXECUTION_LOG WHERE start_time_ms < \(time)) RETURNING 1) SELECT count(*) FROM gone
                    """, logger: self.logger
                ).collect()
                try await connection.query("DELETE FROM SHARDWORK_EXECUTION_LOG WHERE start_time_ms < \(time)", logger: self.logger)
                let statuses = try await connection.query(
                    """
                    WITH gone AS (DELETE FROM JOB_STATUS_TRACE_LOG \
                    WHERE creation_time < TIMESTAMP 'epoch' + \(time)::bigint * INTERVAL '1 millisecond' RETURNING 1) SELECT count(*) FROM gone
                    """, logger: self.logger
                ).collect()
                return Int(try executions.first?.decode(Int64.self) ?? 0) + Int(try statuses.first?.decode(Int64.self) ?? 0)
            }
        }
    }

    public func close() async {
        await slot.close()
    }

    // MARK: - Connection and errors

    /// Runs `body` with the connection (opening it when there is none), and turns what fails into
    /// a ``HistoryStoreError`` that names the setting to fix.
    private func withConnection<Result>(
        doing action: String, _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection: PostgresConnection
        do {
            connection = try await slot.acquire()
        } catch {
            throw describe(error, action: action)
        }
        do {
            let result = try await body(connection)
            await slot.release()
            return result
        } catch {
            await slot.release()
            throw describe(error, action: action)
        }
    }

    /// `body` between BEGIN and COMMIT; ROLLBACK when it throws (the connection is dropped when
    /// even that fails).
    private func transaction<Result>(_ connection: PostgresConnection, _ body: () async throws -> Result) async throws -> Result {
        try await connection.query("BEGIN", logger: logger)
        do {
            let result = try await body()
            try await connection.query("COMMIT", logger: logger)
            return result
        } catch {
            do {
                try await connection.query("ROLLBACK", logger: logger)
            } catch {
                try? await connection.close()
            }
            throw error
        }
    }

    private func describe(_ error: any Error, action: String) -> HistoryStoreError {
        if let error = error as? HistoryStoreError { return error }
        let where_ = "\(configuration.host):\(configuration.port)"
        let database = "database '\(configuration.database)' on \(where_)"
        guard let error = error as? PSQLError else {
            if let error = error as? PostgresDecodingError {
                return HistoryStoreError(
                    "tracing.postgresql.database: cannot \(action): the column \(error.columnName) of \(database) has an unexpected type "
                        + "(\(error.postgresType)); the history tables must be as ElasticJob creates them for PostgreSQL")
            }
            return HistoryStoreError("tracing.postgresql: cannot \(action) in \(database): \(error)")
        }
        switch error.code {
        case .server:
            let state = error.serverInfo?[.sqlState] ?? ""
            var message = error.serverInfo?[.message] ?? "server error \(state)"
            if let detail = error.serverInfo?[.detail] { message += " (\(detail))" }
            switch state {
            case "28P01":
                return HistoryStoreError(
                    "tracing.postgresql.password: the server at \(where_) refused the password of user '\(configuration.username)' "
                        + "(\(message)); check tracing.postgresql.user and tracing.postgresql.password")
            case "28000":
                return HistoryStoreError(
                    "tracing.postgresql.user: the server at \(where_) does not let user '\(configuration.username)' connect to database "
                        + "'\(configuration.database)' (\(message)); check tracing.postgresql.user, or its pg_hba.conf entry")
            case "3D000":
                return HistoryStoreError(
                    "tracing.postgresql.database: there is no database '\(configuration.database)' on \(where_) (\(message)); "
                        + "create it (CREATE DATABASE \(configuration.database) OWNER \(configuration.username)) or fix tracing.postgresql.database")
            case "42501":
                let what = action == "create the history tables" ? "create the history tables (ElasticJob's JOB_EXECUTION_LOG, "
                    + "JOB_STATUS_TRACE_LOG and SHARDWORK_EXECUTION_LOG) and their indexes in" : "\(action) in"
                return HistoryStoreError(
                    "tracing.postgresql.user: user '\(configuration.username)' has no right to \(what) \(database) (\(message)); "
                        + "grant it CREATE on the schema (GRANT CREATE ON SCHEMA public TO \(configuration.username)) or create the tables "
                        + "with a user that may, or set tracing.postgresql.user to such a user")
            case "53300":
                return HistoryStoreError("tracing.postgresql.host: the server at \(where_) has no connection to spare (\(message))")
            default:
                return HistoryStoreError("tracing.postgresql: cannot \(action) in \(database): \(message) [SQLSTATE \(state)]")
            }
        case .connectionError:
            let cause = error.underlying.map { "\($0)" } ?? "no connection"
            return HistoryStoreError(
                "tracing.postgresql.host, tracing.postgresql.port: cannot connect to PostgreSQL at \(where_) (\(cause)); check that "
                    + "the server runs there, listens on that port and accepts TCP connections from this host")
        case .authMechanismRequiresPassword:
            return HistoryStoreError(
                "tracing.postgresql.password: the server at \(where_) asks user '\(configuration.username)' for a password, and none is set")
        case .unsupportedAuthMechanism, .saslError:
            return HistoryStoreError(
                "tracing.postgresql.password: cannot authenticate user '\(configuration.username)' at \(where_): "
                    + "the server's authentication method is not supported (use scram-sha-256, md5 or password in its pg_hba.conf)")
        case .sslUnsupported:
            return HistoryStoreError("tracing.postgresql.tls: the server at \(where_) does not support TLS; turn TLS off or enable it on the server")
        case .serverClosedConnection, .clientClosedConnection, .uncleanShutdown:
            return HistoryStoreError(
                "tracing.postgresql.host: the connection to \(where_) closed while trying to \(action); it is opened again on the next attempt")
        default:
            return HistoryStoreError("tracing.postgresql: cannot \(action) in \(database): \(error.code)")
        }
    }
}

/// The store's one connection: lent to one call at a time, in order of arrival; opened when a call
/// needs it and there is none (or it closed).
private actor ConnectionSlot {
    private let configuration: PostgresHistoryStore.Configuration
    private let logger: Logger
    private var connection: PostgresConnection?
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var closed = false
    private var nextID = 1

    init(configuration: PostgresHistoryStore.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    func acquire() async throws -> PostgresConnection {
        if busy {
            // `release` hands the slot over directly.
            await withCheckedContinuation { waiters.append($0) }
        } else {
            busy = true
        }
        do {
            guard !closed else { throw HistoryStoreError("tracing.postgresql: the history store is closed") }
            if let connection, !connection.isClosed { return connection }
            connection = nil
            let opened = try await open()
            connection = opened
            return opened
        } catch {
            release()
            throw error
        }
    }

    func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }

    private func open() async throws -> PostgresConnection {
        var settings = PostgresConnection.Configuration(
            host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
            database: configuration.database, tls: .disable)
        do {
            switch configuration.tls {
            case .disable: break
            case .prefer: settings.tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: settings.tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        } catch {
            throw HistoryStoreError("tracing.postgresql: cannot set up TLS for \(configuration): \(error)")
        }
        let timeout = configuration.connectTimeout.components
        settings.options.connectTimeout = .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000)
        settings.options.additionalStartupParameters = [("application_name", "shardwork")]
        let id = nextID
        nextID += 1
        return try await PostgresConnection.connect(configuration: settings, id: id, logger: logger)
    }

    func close() async {
        closed = true
        let connection = self.connection
        self.connection = nil
        try? await connection?.close()
    }
}
