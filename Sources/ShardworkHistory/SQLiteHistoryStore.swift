import Foundation
import GRDB
import GRDBSQLite
import ShardworkCore

/// The history in a SQLite file (the default: one file per host, beside its data), through GRDB.
///
/// ElasticJob's two tables and its index are created with its SQL92 DDL (reference §4.15, ElasticJob
/// has no SQLite dialect and falls back to SQL92), so its console's queries read them; their
/// TIMESTAMP columns hold UTC text (`2026-12-07 14:00:00.123`), which SQLite's JDBC driver reads
/// back as timestamps. Shardwork's own facts are in `SHARDWORK_EXECUTION_LOG`, with milliseconds.
///
/// The file is in WAL mode with `synchronous = NORMAL`: readers (the API, an operator's `sqlite3`)
/// never wait for the writer, and a commit does not wait for the disk (a power cut may lose the
/// last moments of history, never the file). ``apply(_:)`` writes on the calling thread (the
/// history writer's own, at low priority), with statements prepared once and values bound through
/// SQLite's C interface (``BoundStatement``): at tens of thousands of rows a second, boxing every
/// value for GRDB's arguments cost more than SQLite's own work. A large WAL (checkpointed every
/// 10,000 pages, about 40 MB) copies a page that many batches touch back to the file once, not
/// once per batch.
public final class SQLiteHistoryStore: HistoryStore {
    /// The file, for messages.
    public let path: String
    private let pool: DatabasePool

    /// Opens (or creates) the database at `path`; its directory is created when missing.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.label = "shardwork.history"
        // Another process (an operator's sqlite3, a second reader) may hold the file a moment.
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // The indexes by job take rows of every job at once: a page cache that holds them
            // saves reading them back from the file at every batch.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 10000")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw HistoryStoreError("tracing.sqlite.path: cannot open the database '\(path)': \(Self.describe(error)); check that its directory is writable")
        }
    }

    static let ddl = [
        ElasticJobTables.executionLog: """
            CREATE TABLE JOB_EXECUTION_LOG (id CHARACTER(40) NOT NULL, job_name CHARACTER(100) NOT NULL, task_id CHARACTER(255) NOT NULL, \
            hostname CHARACTER(255) NOT NULL, ip CHARACTER(50) NOT NULL, sharding_item INTEGER NOT NULL, execution_source CHARACTER(20) NOT NULL, \
            failure_cause CHARACTER VARYING(4000) NULL, is_success INTEGER NOT NULL, start_time TIMESTAMP NULL, complete_time TIMESTAMP NULL, \
            PRIMARY KEY (id))
            """,
        ElasticJobTables.statusTraceLog: """
            CREATE TABLE JOB_STATUS_TRACE_LOG (id CHARACTER(40) NOT NULL, job_name CHARACTER(100) NOT NULL, original_task_id CHARACTER(255) NOT NULL, \
            task_id CHARACTER(255) NOT NULL, slave_id CHARACTER(50) NOT NULL, execution_type CHARACTER(20) NOT NULL, sharding_item CHARACTER(100) NOT NULL, \
            state CHARACTER(20) NOT NULL, message CHARACTER VARYING(4000) NULL, creation_time TIMESTAMP NULL, PRIMARY KEY (id))
            """,
        ElasticJobTables.shardworkLog: """
            CREATE TABLE SHARDWORK_EXECUTION_LOG (id CHARACTER VARYING(40) NOT NULL PRIMARY KEY, job_name CHARACTER VARYING(100) NOT NULL, \
            sharding_item INTEGER NOT NULL, fire_source CHARACTER VARYING(20) NOT NULL, fire_time_ms BIGINT NOT NULL, \
            start_time_ms BIGINT NOT NULL, complete_time_ms BIGINT NULL, outcome CHARACTER VARYING(20) NULL, fencing_epoch BIGINT NOT NULL, \
            plugin CHARACTER VARYING(255) NOT NULL, plugin_version CHARACTER VARYING(100) NOT NULL, instance_id CHARACTER VARYING(255) NOT NULL, \
            fenced INTEGER NOT NULL)
            """,
    ]

    public func prepare() async throws {
        do {
            try await pool.write { db in
                for table in ElasticJobTables.all {
                    if try Self.tableExists(db, table) {
                        let columns = Set(try db.columns(in: table).map { $0.name.lowercased() })
                        let missing = ElasticJobTables.columns[table, default: []].filter { !columns.contains($0) }
                        guard missing.isEmpty else {
                            throw HistoryStoreError(
                                "tracing.sqlite.path: the table \(table) in '\(self.path)' lacks the columns \(missing.joined(separator: ", ")) "
                                    + "that ElasticJob's history has; give tracing a database of its own, or drop that table")
                        }
                        // Rows are written by id (insert, or update when it is there).
                        guard try db.table(table, hasUniqueKey: ["id"]) else {
                            throw HistoryStoreError(
                                "tracing.sqlite.path: the table \(table) in '\(self.path)' has no primary key on id, as ElasticJob creates it; "
                                    + "give tracing a database of its own, or drop that table")
                        }
                    } else {
                        try db.execute(sql: Self.ddl[table]!)
                    }
                }
                let indexes = try Row.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index'").map { (($0["name"] as String?) ?? "").uppercased() }
                if !indexes.contains(ElasticJobTables.statusIndex) {
                    try db.execute(sql: "CREATE INDEX TASK_ID_STATE_INDEX ON JOB_STATUS_TRACE_LOG (task_id, state)")
                }
                if !indexes.contains("SHARDWORK_EXECUTION_JOB_START_INDEX") {
                    try db.execute(sql: "CREATE INDEX SHARDWORK_EXECUTION_JOB_START_INDEX ON SHARDWORK_EXECUTION_LOG (job_name, start_time_ms)")
                }
                if !indexes.contains("SHARDWORK_EXECUTION_START_INDEX") {
                    try db.execute(sql: "CREATE INDEX SHARDWORK_EXECUTION_START_INDEX ON SHARDWORK_EXECUTION_LOG (start_time_ms)")
                }
            }
        } catch let error as HistoryStoreError {
            throw error
        } catch {
            throw HistoryStoreError("tracing.sqlite.path: cannot create the history tables in '\(path)': \(Self.describe(error))")
        }
    }

    private static func tableExists(_ db: Database, _ table: String) throws -> Bool {
        // ElasticJob also looks for the lower-case name.
        try db.tableExists(table) || db.tableExists(table.lowercased())
    }

    /// Writes the batch in one transaction, on the calling thread.
    public func apply(_ batch: [HistoryWrite]) async throws {
        guard !batch.isEmpty else { return }
        try write(batch)
    }

    private func write(_ batch: [HistoryWrite]) throws {
        do {
            try pool.write { db in
                for write in batch {
                    switch write {
                    case .executionStarted(let record):
                        try Self.insert(record, db, replacing: false)
                    case .executionCompleted(let record):
                        try Self.insert(record, db, replacing: true)
                    case .status(let record):
                        var statement = try BoundStatement(db.cachedStatement(sql: Self.insertStatus))
                        statement.bind(record.id)
                        statement.bind(record.jobName)
                        statement.bind(record.originalTaskID)
                        statement.bind(record.taskID)
                        statement.bind(record.slaveID)
                        statement.bind(record.executionType)
                        statement.bind(record.shardingItems)
                        statement.bind(record.state.rawValue)
                        statement.bind(record.message)
                        statement.bind(time: record.creationTime)
                        try statement.run(db)
                    }
                }
            }
        } catch {
            throw HistoryStoreError("tracing.sqlite.path: cannot write to '\(path)': \(Self.describe(error))")
        }
    }

    static let insertStatus = """
        INSERT INTO JOB_STATUS_TRACE_LOG (id, job_name, original_task_id, task_id, slave_id, execution_type, sharding_item, state, \
        message, creation_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING
        """
    static let insertExecution = """
        INSERT INTO JOB_EXECUTION_LOG (id, job_name, task_id, hostname, ip, sharding_item, execution_source, failure_cause, is_success, \
        start_time, complete_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id)
        """
    static let insertShardwork = """
        INSERT INTO SHARDWORK_EXECUTION_LOG (id, job_name, sharding_item, fire_source, fire_time_ms, start_time_ms, complete_time_ms, \
        outcome, fencing_epoch, plugin, plugin_version, instance_id, fenced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id)
        """
    /// A start leaves a row that is there alone (its completion came first); a completion updates
    /// the row, or inserts it complete when its start never came (ElasticJob's insert-or-update).
    static let statements = (
        startExecution: insertExecution + " DO NOTHING", startShardwork: insertShardwork + " DO NOTHING",
        completeExecution: insertExecution + " " + ElasticJobTables.completeExecution,
        completeShardwork: insertShardwork + " " + ElasticJobTables.completeShardwork)

    /// Both rows of an execution.
    private static func insert(_ record: ExecutionRecord, _ db: Database, replacing: Bool) throws {
        var execution = try BoundStatement(db.cachedStatement(sql: replacing ? statements.completeExecution : statements.startExecution))
        execution.bind(record.id)
        execution.bind(record.jobName)
        execution.bind(record.taskID)
        execution.bind(record.hostname)
        execution.bind(record.ip)
        execution.bind(Int64(record.item))
        execution.bind(record.elasticJobSource)
        execution.bind(record.failureCause)
        execution.bind(record.outcome == .succeeded ? 1 : 0)
        execution.bind(time: record.startTime)
        execution.bind(time: record.completeTime)
        try execution.run(db)
        var shardwork = try BoundStatement(db.cachedStatement(sql: replacing ? statements.completeShardwork : statements.startShardwork))
        shardwork.bind(record.id)
        shardwork.bind(record.jobName)
        shardwork.bind(Int64(record.item))
        shardwork.bind(record.source.rawValue)
        shardwork.bind(record.fireTime)
        shardwork.bind(record.startTime)
        shardwork.bind(record.completeTime)
        shardwork.bind(record.outcome?.rawValue)
        shardwork.bind(Int64(bitPattern: record.fencingEpoch))
        shardwork.bind(record.plugin)
        shardwork.bind(record.pluginVersion)
        shardwork.bind(record.instanceID)
        shardwork.bind(record.fenced ? 1 : 0)
        try shardwork.run(db)
    }

    public func executions(_ query: ExecutionQuery) async throws -> [ExecutionRecord] {
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        func bind(_ condition: String, _ value: (any DatabaseValueConvertible)?) {
            guard let value else { return }
            conditions.append(condition)
            arguments.append(value)
        }
        bind("s.job_name = ?", query.jobName)
        bind("s.sharding_item = ?", query.item)
        bind("s.instance_id = ?", query.instanceID)
        bind("s.start_time_ms >= ?", query.since)
        bind("s.start_time_ms <= ?", query.until)
        if query.failedOnly { conditions.append("s.outcome IN ('failed', 'timedOut')") }
        bind("s.fire_source = ?", query.source?.rawValue)
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        arguments.append(query.limit)
        arguments.append(query.offset)
        let sql = """
            SELECT e.id, e.job_name, e.task_id, e.hostname, e.ip, e.sharding_item, e.failure_cause, s.fire_source, s.fire_time_ms, \
            s.start_time_ms, s.complete_time_ms, s.outcome, s.fencing_epoch, s.plugin, s.plugin_version, s.instance_id, s.fenced \
            FROM SHARDWORK_EXECUTION_LOG s JOIN JOB_EXECUTION_LOG e ON e.id = s.id \(filter) \
            ORDER BY s.start_time_ms DESC, s.sharding_item ASC LIMIT ? OFFSET ?
            """
        let bound = StatementArguments(arguments)
        do {
            return try await pool.read { db in
                try Row.fetchAll(db, sql: sql, arguments: bound).map(Self.record)
            }
        } catch {
            throw HistoryStoreError("tracing.sqlite.path: cannot read '\(path)': \(Self.describe(error))")
        }
    }

    private static func record(_ row: Row) -> ExecutionRecord {
        ExecutionRecord(
            id: row["id"], jobName: row["job_name"], taskID: row["task_id"], hostname: row["hostname"], ip: row["ip"],
            item: row["sharding_item"], source: FireSource(rawValue: row["fire_source"] ?? "") ?? .schedule,
            startTime: row["start_time_ms"], completeTime: row["complete_time_ms"],
            outcome: (row["outcome"] as String?).flatMap(ExecutionRecord.Outcome.init(rawValue:)), failureCause: row["failure_cause"],
            fireTime: row["fire_time_ms"], fencingEpoch: UInt64(bitPattern: row["fencing_epoch"] ?? 0), plugin: row["plugin"],
            pluginVersion: row["plugin_version"], instanceID: row["instance_id"], fenced: (row["fenced"] as Int?) == 1)
    }

    /// Removes old rows on the calling thread (the writer's, at low priority).
    public func purge(before time: Int64) async throws -> Int {
        try removeRows(before: time)
    }

    private func removeRows(before time: Int64) throws -> Int {
        do {
            return try pool.write { db in
                try db.execute(
                    sql: "DELETE FROM JOB_EXECUTION_LOG WHERE id IN (SELECT id FROM SHARDWORK_EXECUTION_LOG WHERE start_time_ms < ?)",
                    arguments: [time])
                var removed = db.changesCount
                try db.execute(sql: "DELETE FROM SHARDWORK_EXECUTION_LOG WHERE start_time_ms < ?", arguments: [time])
                try db.execute(sql: "DELETE FROM JOB_STATUS_TRACE_LOG WHERE creation_time < ?", arguments: [HistoryTime.text(time)])
                removed += db.changesCount
                return removed
            }
        } catch {
            throw HistoryStoreError("tracing.sqlite.path: cannot remove old rows from '\(path)': \(Self.describe(error))")
        }
    }

    public func close() async {
        try? pool.close()
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "\(error.resultCode)" }
        return "\(error)"
    }
}

/// ElasticJob's table names, and the columns each must have for the history to be written.
enum ElasticJobTables {
    static let executionLog = "JOB_EXECUTION_LOG"
    static let statusTraceLog = "JOB_STATUS_TRACE_LOG"
    static let shardworkLog = "SHARDWORK_EXECUTION_LOG"
    static let statusIndex = "TASK_ID_STATE_INDEX"
    static let all = [executionLog, statusTraceLog, shardworkLog]

    /// What a completion's upsert (`INSERT ... ON CONFLICT (id)`) changes in a row its start left:
    /// the same clause in SQLite and PostgreSQL.
    static let completeExecution = """
        DO UPDATE SET is_success = excluded.is_success, complete_time = excluded.complete_time, \
        failure_cause = excluded.failure_cause, start_time = excluded.start_time
        """
    static let completeShardwork = """
        DO UPDATE SET complete_time_ms = excluded.complete_time_ms, outcome = excluded.outcome, fenced = excluded.fenced, \
        start_time_ms = excluded.start_time_ms
        """

    static let columns: [String: [String]] = [
        executionLog: [
            "id", "job_name", "task_id", "hostname", "ip", "sharding_item", "execution_source", "failure_cause", "is_success", "start_time",
            "complete_time",
        ],
        statusTraceLog: [
            "id", "job_name", "original_task_id", "task_id", "slave_id", "execution_type", "sharding_item", "state", "message", "creation_time",
        ],
        shardworkLog: [
            "id", "job_name", "sharding_item", "fire_source", "fire_time_ms", "start_time_ms", "complete_time_ms", "outcome", "fencing_epoch",
            "plugin", "plugin_version", "instance_id", "fenced",
        ],
    ]
}

/// Times as ElasticJob's TIMESTAMP columns hold them in SQLite: UTC text with milliseconds,
/// `2026-12-07 14:00:00.123`.
enum HistoryTime {
    /// The longest text: a year of more than four digits makes it longer than 23 bytes.
    static let capacity = 32

    static func text(_ milliseconds: Int64) -> String {
        String(unsafeUninitializedCapacity: capacity) { write(milliseconds, into: $0) }
    }

    /// Writes the text into `buffer` (at least ``capacity`` bytes); returns its length.
    static func write(_ milliseconds: Int64, into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let seconds = milliseconds.dividedRoundingDown(by: 1000)
        let millis = Int32(milliseconds - seconds * 1000)
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var index = 0
        func put(_ value: Int32, _ width: Int) {
            var value = max(0, value)
            var digits = 0
            var probe = value
            repeat { digits += 1; probe /= 10 } while probe > 0
            let count = max(width, digits)
            for position in stride(from: index + count - 1, through: index, by: -1) {
                buffer[position] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
            index += count
        }
        func put(_ separator: Unicode.Scalar) {
            buffer[index] = UInt8(ascii: separator)
            index += 1
        }
        put(parts.tm_year + 1900, 4); put("-"); put(parts.tm_mon + 1, 2); put("-"); put(parts.tm_mday, 2); put(" ")
        put(parts.tm_hour, 2); put(":"); put(parts.tm_min, 2); put(":"); put(parts.tm_sec, 2); put("."); put(millis, 3)
        return index
    }
}

/// A cached statement run once with values bound in order through SQLite's C interface (SQLite
/// copies each value): no value is boxed or converted on the way.
struct BoundStatement {
    private let statement: Statement
    private let handle: SQLiteStatement
    private var index: Int32 = 0
    /// The first value SQLite refused to bind, and why: ``run(_:)`` reports it rather than writing
    /// a row with that value missing.
    private var refused: (index: Int32, code: Int32)?

    /// SQLite's `SQLITE_TRANSIENT`: it copies the value before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    init(_ statement: Statement) {
        self.statement = statement
        handle = statement.sqliteStatement
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    mutating func bind(_ text: String) {
        var text = text
        bind { handle, index in
            text.withUTF8 { bytes in
                // An empty buffer may have no address, which SQLite would take for NULL.
                guard let base = bytes.baseAddress else { return sqlite3_bind_text(handle, index, "", 0, Self.transient) }
                return sqlite3_bind_text(handle, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(bytes.count), Self.transient)
            }
        }
    }

    mutating func bind(_ text: String?) {
        guard let text else { return bindNull() }
        bind(text)
    }

    mutating func bind(_ value: Int64) {
        bind { sqlite3_bind_int64($0, $1, value) }
    }

    mutating func bind(_ value: Int64?) {
        guard let value else { return bindNull() }
        bind(value)
    }

    /// A time as ElasticJob's TIMESTAMP text (``HistoryTime``).
    mutating func bind(time milliseconds: Int64?) {
        guard let milliseconds else { return bindNull() }
        bind { handle, index in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: HistoryTime.capacity) { buffer in
                let count = HistoryTime.write(milliseconds, into: buffer)
                return sqlite3_bind_text(
                    handle, index, UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self), Int32(count), Self.transient)
            }
        }
    }

    private mutating func bindNull() {
        bind { sqlite3_bind_null($0, $1) }
    }

    /// Binds the next parameter with `call`, keeping the first refusal.
    private mutating func bind(_ call: (SQLiteStatement, Int32) -> Int32) {
        index += 1
        let code = call(handle, index)
        if code != SQLITE_OK, refused == nil { refused = (index, code) }
    }

    /// Runs the statement; an error carries SQLite's message.
    func run(_ db: Database) throws {
        if let refused {
            throw DatabaseError(
                resultCode: ResultCode(rawValue: refused.code), message: "SQLite refused value \(refused.index) of the row", sql: statement.sql)
        }
        let code = sqlite3_step(handle)
        sqlite3_reset(handle)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)), sql: statement.sql)
        }
    }
}

extension Int64 {
    fileprivate func dividedRoundingDown(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor < 0) ? quotient - 1 : quotient
    }
}
