import Foundation
import ShardworkCore
import Synchronization

/// A real PostgreSQL server from Debian's `postgresql` package, for the tests: a cluster of its own
/// (`initdb` into a temporary directory), listening on 127.0.0.1 on a free port, with its unix
/// socket inside that directory, run as the `postgres` system user (PostgreSQL refuses to run as
/// root), stopped by PID.
///
/// Administration (roles, databases, checks on what a store created) goes through `psql` as the
/// superuser `postgres` over the unix socket, which `initdb` trusts; TCP connections from
/// 127.0.0.1 need a password (SCRAM-SHA-256), as a store's do.
///
/// When PostgreSQL is not installed, `start` throws an error that says how to install it: tests
/// that need it fail, they are never skipped.
public final class PostgresServer: @unchecked Sendable {
    /// A role that may log in over TCP, and the database it connects to.
    public struct Login: Sendable {
        public let host: String
        public let port: Int
        public let database: String
        public let user: String
        public let password: String
    }

    public let host = "127.0.0.1"
    public let port: Int
    /// The cluster's temporary directory: `data/`, `socket/` and `postgres.log`.
    public let directory: TemporaryDirectory
    public var socketDirectory: String { directory.file("socket") }
    public var logFile: String { directory.file("postgres.log") }
    private let binaries: String
    // The server process and its guard, until stopped.
    private let running: Mutex<(process: SpawnedProcess, guardian: ChildGuard)?>
    private let names = Mutex(0)

    /// Where Debian puts a PostgreSQL version's programs.
    static let installRoot = "/usr/lib/postgresql"

    /// Creates a cluster, starts its server and waits until it accepts connections.
    public static func start() async throws -> PostgresServer {
        let binaries = try findBinaries()
        guard let account = getpwnam("postgres") else {
            throw TestSetupError("""
                there is no `postgres` system user: PostgreSQL refuses to run as root and the tests run it as that user, \
                which Debian's postgresql package creates. Install it with `scripts/install-dependencies test`.
                """)
        }
        let (uid, gid) = (account.pointee.pw_uid, account.pointee.pw_gid)
        let directory = try TemporaryDirectory("shardwork-pg")
        let socket = try directory.subdirectory("socket")
        // The server's user must reach its data directory and socket directory; this process, as
        // root, still reads and removes everything.
        for path in [directory.path, socket] where chown(path, uid, gid) != 0 {
            throw TestSetupError("chown \(path) to postgres: \(String(cString: strerror(errno)))")
        }
        let data = directory.file("data")
        let initdb = try await onOwnThread {
            try ChildProcess.run(
                "/usr/bin/setpriv",
                asPostgres + [
                    binaries + "/initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-locale", "--no-sync",
                ],
                currentDirectory: directory.path, timeout: .seconds(120))
        }
        guard initdb.status == 0, !initdb.signalled else {
            throw TestSetupError(
                "initdb failed (status \(initdb.status)):\n\(String(decoding: initdb.standardOutput + initdb.standardError, as: UTF8.self))")
        }
        let port = try FreePorts.take(1)[0]
        let server = PostgresServer(port: port, directory: directory, binaries: binaries)
        do {
            try await onOwnThread { try server.launch(data: data) }
            try await server.waitUntilAccepting()
        } catch {
            await server.stop()
            throw error
        }
        return server
    }

    private init(port: Int, directory: TemporaryDirectory, binaries: String) {
        self.port = port
        self.directory = directory
        self.binaries = binaries
        running = Mutex(nil)
    }

    deinit { stopBlocking() }

    /// `setpriv`'s arguments to run a program as `postgres`: it execs the program in place, so the
    /// process we start is the server itself and signals reach it directly.
    private static let asPostgres = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    /// The newest version's bin directory under /usr/lib/postgresql that has initdb and postgres.
    static func findBinaries() throws -> String {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: installRoot)) ?? []
        let usable = versions.filter { version in
            ["initdb", "postgres", "psql"].allSatisfy {
                FileManager.default.isExecutableFile(atPath: "\(installRoot)/\(version)/bin/\($0)")
            }
        }
        guard let newest = usable.max(by: { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) }) else {
            throw TestSetupError("""
                PostgreSQL is not installed (no \(installRoot)/*/bin/initdb, postgres and psql): these tests need a real \
                PostgreSQL server. Install it with `scripts/install-dependencies test` (Debian's postgresql), or run the \
                whole suite with scripts/test, which does.
                """)
        }
        return "\(installRoot)/\(newest)/bin"
    }

    private func launch(data: String) throws {
        let process = try SpawnedProcess(
            "/usr/bin/setpriv",
            Self.asPostgres + [
                binaries + "/postgres", "-D", data, "-p", String(port), "-k", socketDirectory,
                "-c", "listen_addresses=127.0.0.1",
                // A throwaway cluster: durability buys nothing here, speed does.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "shared_buffers=16MB", "-c", "max_connections=60",
            ],
            currentDirectory: directory.path, log: logFile)
        do {
            let guardian = try ChildGuard(process.pid)
            running.withLock { $0 = (process, guardian) }
        } catch {
            process.signal(SIGKILL)
            process.waitForExitBlocking()
            throw error
        }
    }

    /// Waits until the server answers a query over its socket.
    private func waitUntilAccepting(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let process = running.withLock({ $0?.process }), process.isRunning else {
                throw TestSetupError("the PostgreSQL server exited before accepting connections; its log:\n\(logTail())")
            }
            if (try? await psql("SELECT 1")) == "1" { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSetupError("the PostgreSQL server on 127.0.0.1:\(port) did not accept connections within \(timeout); its log:\n\(logTail())")
    }

    private func logTail() -> String {
        String(((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").suffix(3000))
    }

    /// Runs SQL as the superuser through `psql` (one statement or several; it stops at the first
    /// error) and returns its unaligned, tuples-only output, trimmed: `a|b` rows, one a line.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        let arguments = [
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-p", String(port), "-U", "postgres", "-d", database,
            "-c", sql,
        ]
        let program = binaries + "/psql"
        let outcome = try await onOwnThread {
            try ChildProcess.run(program, arguments, environment: ["PGCONNECT_TIMEOUT": "10"], timeout: .seconds(60))
        }
        guard outcome.status == 0, !outcome.signalled else {
            throw TestSetupError("psql -c \(sql) failed: \(String(decoding: outcome.standardError, as: UTF8.self))")
        }
        return String(decoding: outcome.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A name no other role or database of this server has: `\(prefix)_\(n)`.
    public func uniqueName(_ prefix: String) -> String {
        let number = names.withLock { number -> Int in
            number += 1
            return number
        }
        return "\(prefix)_\(number)"
    }

    /// A role that may log in with a password (stored as SCRAM-SHA-256), and nothing more.
    public func createRole(_ name: String? = nil, password: String? = nil) async throws -> (user: String, password: String) {
        let user = name ?? uniqueName("shardwork_user")
        let secret = password ?? "pw-\(UUID().uuidString.prefix(12))"
        try await psql("CREATE ROLE \(Self.identifier(user)) LOGIN PASSWORD \(Self.literal(secret))")
        return (user, secret)
    }

    /// A fresh database owned by a fresh role: the owner may create tables in its `public` schema.
    public func createDatabase() async throws -> Login {
        let (user, password) = try await createRole()
        let database = uniqueName("shardwork_db")
        try await psql("CREATE DATABASE \(Self.identifier(database)) OWNER \(Self.identifier(user))")
        return Login(host: host, port: port, database: database, user: user, password: password)
    }

    /// A role that may connect to `database` and read its tables, but not create or change any
    /// (PostgreSQL 15 gives PUBLIC no CREATE on the `public` schema; this revokes it anyway, for
    /// older servers).
    public func createReadOnlyRole(database: String) async throws -> Login {
        let (user, password) = try await createRole(uniqueName("shardwork_reader"))
        try await psql(
            """
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT CONNECT ON DATABASE \(Self.identifier(database)) TO \(Self.identifier(user));
            GRANT USAGE ON SCHEMA public TO \(Self.identifier(user));
            GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(Self.identifier(user));
            """, database: database)
        return Login(host: host, port: port, database: database, user: user, password: password)
    }

    /// A port on 127.0.0.1 that nothing listens on (for tests of an unreachable server).
    public static func unusedPort() throws -> Int { try FreePorts.take(1)[0] }

    /// A quoted SQL identifier.
    public static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A quoted SQL string literal.
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// Sends a signal to the server and every process it started (each backend is a session of its
    /// own, so not in the server's process group): SIGSTOP and SIGCONT freeze it and let it go on
    /// (connections stay open, and no answer comes meanwhile).
    public func signal(_ signal: Int32) {
        guard let server = running.withLock({ $0?.process }) else { return }
        server.signal(signal)
        for child in Self.children(of: server.pid) { kill(child, signal) }
    }

    /// The processes whose parent is `pid`, from /proc.
    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { entry -> Int32? in
            guard let child = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { return nil }
            // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid ? child : nil
        }
    }

    /// Stops the server (SIGINT: PostgreSQL's fast shutdown), waits for it, and removes its
    /// directory.
    public func stop() async {
        _ = try? await onOwnThread { self.stopBlocking() }
    }

    /// `stop` on the calling thread (never a cooperative one), for deinit and the exit handler.
    func stopBlocking() {
        // A server frozen by a test (SIGSTOP) could not stop.
        signal(SIGCONT)
        if let server = running.withLock({ state -> (process: SpawnedProcess, guardian: ChildGuard)? in
            defer { state = nil }
            return state
        }) {
            server.process.signal(SIGINT)
            server.process.waitForExitBlocking()
            server.guardian.release()
        }
        try? FileManager.default.removeItem(atPath: directory.path)
    }
}

/// One server shared by the tests of a test process (each test makes its own database and roles
/// on it). Its guard kills it if the test process dies; when the process exits normally, an exit
/// handler stops it and removes its directory.
public enum SharedPostgres {
    private static let shared = Task { () throws -> PostgresServer in
        let server = try await PostgresServer.start()
        sharedAtExit.withLock { $0 = server }
        atexit {
            // Fast shutdown on this thread, as `stop` does; the directory goes with it.
            let server = sharedAtExit.withLock { server -> PostgresServer? in
                defer { server = nil }
                return server
            }
            server?.stopBlocking()
        }
        return server
    }

    public static func server() async throws -> PostgresServer { try await shared.value }
}

private let sharedAtExit = Mutex<PostgresServer?>(nil)
