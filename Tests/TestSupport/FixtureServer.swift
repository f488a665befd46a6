import Foundation
import ShardworkCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A test server from Tests/Fixtures/servers (a Python script) on 127.0.0.1: started on a free port
/// that it chooses and reports in a file, recording what it receives as JSON lines, stopped by PID.
/// The server watches its parent and exits when the test process is gone.
///
/// It is a ``SpawnedProcess``, not Foundation's Process: Process.run on Linux reads past a buffer
/// while it lists /proc/self/fd and crashes the test process now and then
/// (swift-corelibs-foundation PR 5472), and these tests start many servers.
public final class FixtureServer: Sendable {
    public let port: Int
    public let directory: TemporaryDirectory
    private let process: SpawnedProcess
    private let stopped = Mutex(false)

    public var pid: Int32 { process.pid }

    /// The file the server appends a JSON line to per request or message.
    public var logFile: String { directory.file("received.jsonl") }

    /// The Python interpreter itself, found once: `python3` on the PATH may be a wrapper (pyenv's
    /// shim runs several programs per start), which is slow on a busy machine.
    static let interpreter = Task<String, any Error> {
        guard let python = Subprocess.which("python3") else {
            throw TestSetupError("python3 is not on the PATH: the test servers are Python scripts. Install it with `scripts/install-dependencies test`.")
        }
        let directory = try TemporaryDirectory("shardwork-python")
        let probe = try spawn(python, ["-c", "import sys; print(sys.executable)"],
                              standardOutput: directory.file("out"), standardError: directory.file("err"))
        let exit = await probe.waitForExit()
        let path = ((try? String(contentsOfFile: directory.file("out"), encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard exit == (0, false), !path.isEmpty else {
            throw TestSetupError("\(python) did not run (\(exit)): \((try? String(contentsOfFile: directory.file("err"), encoding: .utf8)) ?? "")")
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
        let process = try spawn(
            python,
            [TestPaths.fixture("servers/" + script), "--port-file", portFile, "--log", directory.file("received.jsonl"),
             "--parent-pid", String(getpid())] + arguments,
            standardOutput: "/dev/null", standardError: errors)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                return FixtureServer(port: port, directory: directory, process: process)
            }
            if !process.isRunning {
                let message = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
                throw TestSetupError("the test server \(script) exited (\(await process.waitForExit())) before listening:\n\(message)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Self.kill(process)
        throw TestSetupError("the test server \(script) did not report its port within 60 s")
    }

    private init(port: Int, directory: TemporaryDirectory, process: SpawnedProcess) {
        self.port = port
        self.directory = directory
        self.process = process
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
        Self.kill(process)
    }

    deinit { terminate() }
}

extension FixtureServer {
    /// Starts `executable` with standard input empty and its output and errors appended to files.
    static func spawn(_ executable: String, _ arguments: [String], standardOutput: String, standardError: String) throws -> SpawnedProcess {
        let output = open(standardOutput, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        let errors = open(standardError, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer {
            if output >= 0 { close(output) }
            if errors >= 0 { close(errors) }
        }
        guard output >= 0, errors >= 0 else { throw TestSetupError("cannot open \(standardOutput) or \(standardError): errno \(errno)") }
        return try SpawnedProcess(executable, arguments, output: output, errors: errors)
    }

    /// SIGKILL, then reaps the process on a thread of its own.
    static func kill(_ process: SpawnedProcess) {
        process.signal(SIGKILL)
        Thread.detachNewThread { process.waitForExitBlocking() }
    }
}
