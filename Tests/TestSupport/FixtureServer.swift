public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A test server from Tests/Fixtures/servers (a Python script) on 127.0.0.1: started on a free port
/// that it chooses and reports in a file, recording what it receives as JSON lines, stopped by PID.
/// The server watches its parent and exits when the test process is gone.
///
/// It is started with posix_spawn, not Foundation's Process: Process.run on Linux reads past a
/// buffer while it lists /proc/self/fd and crashes the test process now and then
/// (swift-corelibs-foundation PR 5472), and these tests start many servers.
public final class FixtureServer: Sendable {
    public let port: Int
    public let directory: TemporaryDirectory
    public let pid: pid_t
    private let stopped = Mutex(false)

    /// The file the server appends a JSON line to per request or message.
    public var logFile: String { directory.file("received.jsonl") }

    /// The Python interpreter itself, found once: `python3` on the PATH may be a wrapper (pyenv's
    /// shim runs several programs per start), which is slow on a busy machine.
    static let interpreter = Task<String, any Error> {
        guard let python = Subprocess.which("python3") else {
            throw TestSetupError("python3 is not on the PATH: the test servers are Python scripts. Install it with `scripts/install-dependencies test`.")
        }
        let directory = try TemporaryDirectory("shardwork-python")
        let pid = try Spawn.start(python, ["-c", "import sys; print(sys.executable)"],
                                  standardOutput: directory.file("out"), standardError: directory.file("err"))
        let status = await Spawn.wait(pid)
        let path = ((try? String(contentsOfFile: directory.file("out"), encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, !path.isEmpty else {
            throw TestSetupError("\(python) did not run (status \(status)): \((try? String(contentsOfFile: directory.file("err"), encoding: .utf8)) ?? "")")
        }
        return path
    }

    /// Starts `Tests/Fixtures/servers/{script}` with `arguments` (plus `--port-file`, `--log` and
    /// `--parent-pid`) and waits until it listens.
    public static func start(_ script: String, _ arguments: [String] = []) async throws -> FixtureServer {
        let python = try await interpreter.value
        let directory = try TemporaryDirectory("shardwork-server")
        let portFile = directory.file("port")
        let errors = directory.file("stderr")
        let pid = try Spawn.start(
            python,
            [TestPaths.fixture("servers/" + script), "--port-file", portFile, "--log", directory.file("received.jsonl"),
             "--parent-pid", String(getpid())] + arguments,
            standardOutput: "/dev/null", standardError: errors)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                return FixtureServer(port: port, directory: directory, pid: pid)
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let message = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
                throw TestSetupError("the test server \(script) exited (wait status \(status)) before listening:\n\(message)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Spawn.kill(pid)
        throw TestSetupError("the test server \(script) did not report its port within 60 s")
    }

    private init(port: Int, directory: TemporaryDirectory, pid: pid_t) {
        self.port = port
        self.directory = directory
        self.pid = pid
    }

    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// What the server has received so far, one JSON value per request or message.
    public func received() throws -> [OrderedJSON] {
        guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { try OrderedJSON.parse(String($0)) }
    }

    /// Waits (suspending) until the server has received at least `count` requests, for at most
    /// `seconds`; returns what it received.
    public func waitForReceived(_ count: Int, seconds: Double = 20) async throws -> [OrderedJSON] {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            let requests = try received()
            if requests.count >= count { return requests }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try received()
    }

    /// Stops the server: SIGKILL to its PID (it keeps nothing worth a clean exit), reaped on a
    /// thread of its own. For `defer`, where nothing can be awaited.
    public func terminate() {
        guard stopped.withLock({ stopped in defer { stopped = true }; return !stopped }) else { return }
        Spawn.kill(pid)
    }

    deinit { terminate() }
}

/// Programs started with posix_spawn: standard input empty, output to files, no signal blocked.
public enum Spawn {
    public static func start(_ executable: String, _ arguments: [String], standardOutput: String, standardError: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, standardError, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The spawning thread may block signals (libdispatch's threads do); the child must not.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        let cArguments = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, cArguments, environ)
        guard result == 0 else {
            throw TestSetupError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Waits for `pid` to exit (on a thread of its own) and returns its exit status, or 128 + the
    /// signal that ended it.
    public static func wait(_ pid: pid_t) async -> Int32 {
        (try? await onOwnThread { () -> Int32 in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }) ?? -1
    }

    /// SIGKILL, then reaps the process on a thread of its own.
    public static func kill(_ pid: pid_t) {
        Glibc.kill(pid, SIGKILL)
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }
}
