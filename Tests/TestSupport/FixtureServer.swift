import Foundation

/// A test server from Tests/Fixtures/servers (a Python script) on 127.0.0.1: started on a free port
/// that it chooses and reports in a file, recording what it receives as JSON lines, stopped by PID
/// (and killed by its guard if the test process dies first).
public final class FixtureServer: @unchecked Sendable {
    // Immutable after init; stop() is idempotent under the lock.
    public let port: Int
    public let directory: TemporaryDirectory
    private let process: Process
    private let guardian: ChildGuard
    private let lock = NSLock()
    private var stopped = false

    /// The file the server appends a JSON line to per request or message.
    public var logFile: String { directory.file("received.jsonl") }

    /// The Python interpreter itself, found once: `python3` on the PATH may be a wrapper (pyenv's
    /// shim runs several programs per start), which is slow on a busy machine.
    static let interpreter = Task<String, any Error> {
        guard let python = Subprocess.which("python3") else {
            throw TestSetupError("python3 is not on the PATH: the test servers are Python scripts. Install it with `scripts/install-dependencies test`.")
        }
        let outcome = try await Subprocess.run(python, ["-c", "import sys; print(sys.executable)"])
        let path = outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        guard outcome.succeeded, !path.isEmpty else {
            throw TestSetupError("\(python) did not run: \(outcome.standardError)")
        }
        return path
    }

    /// Starts `Tests/Fixtures/servers/{script}` with `arguments` (plus `--port-file` and `--log`)
    /// and waits until it listens.
    public static func start(_ script: String, _ arguments: [String] = []) async throws -> FixtureServer {
        let python = try await interpreter.value
        let directory = try TemporaryDirectory("shardwork-server")
        let portFile = directory.file("port")
        let errors = directory.file("stderr")
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [TestPaths.fixture("servers/" + script), "--port-file", portFile, "--log", directory.file("received.jsonl")] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        try process.run()
        let guardian = try ChildGuard(process.processIdentifier)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                return FixtureServer(port: port, directory: directory, process: process, guardian: guardian)
            }
            if !process.isRunning {
                guardian.release()
                let message = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
                throw TestSetupError("the test server \(script) exited with status \(process.terminationStatus) before listening:\n\(message)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(process.processIdentifier, SIGKILL)
        guardian.release()
        throw TestSetupError("the test server \(script) did not report its port within 60 s")
    }

    private init(port: Int, directory: TemporaryDirectory, process: Process, guardian: ChildGuard) {
        self.port = port
        self.directory = directory
        self.process = process
        self.guardian = guardian
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

    /// Stops the server without waiting: SIGKILL to its PID (it keeps nothing worth a clean exit).
    /// For `defer`, where nothing can be awaited.
    public func terminate() {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        kill(process.processIdentifier, SIGKILL)
        guardian.release()
    }

    /// Stops the server (SIGTERM to its PID) and waits for it to exit.
    public func stop() async {
        guard lock.withLock({ () -> Bool in defer { stopped = true }; return !stopped }) else { return }
        process.terminate()
        let process = self.process
        _ = try? await onOwnThread { process.waitUntilExit() }
        guardian.release()
    }

    deinit {
        if !stopped {
            kill(process.processIdentifier, SIGKILL)
            guardian.release()
        }
    }
}
