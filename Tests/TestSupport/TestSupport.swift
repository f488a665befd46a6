import Foundation
import ShardworkCore
import Synchronization

/// A test's precondition failed (a missing build product, a tool that did not run). The message
/// says how to fix it.
public struct TestSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where things are: the repository, the build directory the tests run from, the built products.
public enum TestPaths {
    /// The repository root, found from this file's own path.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }  // Tests/TestSupport/TestSupport.swift
        return url.path
    }()

    /// The directory of the running test binary: SwiftPM's bin directory, where the `shardwork`
    /// binary and the built-in plugins are built beside it.
    public static let buildDirectory: String = {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: executable).deletingLastPathComponent().path
    }()

    public static var sdkInclude: String { repositoryRoot + "/SDK/Sources/CShardworkPlugin/include" }

    public static func fixture(_ relativePath: String) -> String {
        repositoryRoot + "/Tests/Fixtures/" + relativePath
    }

    /// A product built beside the tests (`libShardworkStandardSharding.so`, `shardwork`).
    public static func product(_ fileName: String) throws -> String {
        let path = buildDirectory + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestSetupError(
                "\(fileName) is not in \(buildDirectory); build every product first (`swift build --build-tests`, "
                    + "or scripts/test, which does it)")
        }
        return path
    }

    public static var shardworkBinary: String {
        get throws { try product("shardwork") }
    }

    public static func builtInPlugin(_ product: String) throws -> String {
        try self.product("lib\(product).so")
    }
}

/// A directory under the system's temporary directory, mode 0700, removed when released.
public final class TemporaryDirectory: @unchecked Sendable {
    // Immutable after init; the directory is removed once, in deinit.
    public let path: String

    public init(_ prefix: String = "shardwork-test") throws {
        var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestSetupError("cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        // Canonical, so paths the tests build compare equal to the ones the loader reports.
        path = URL(fileURLWithPath: String(cString: made)).resolvingSymlinksInPath().standardizedFileURL.path
    }

    public func file(_ name: String) -> String { path + "/" + name }

    /// Creates a subdirectory (mode 0700) and returns its path.
    public func subdirectory(_ name: String) throws -> String {
        let directory = file(name)
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return directory
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// The outcome of a child process, with its output as text.
public struct ProcessOutcome: Sendable {
    public var status: Int32
    /// True when the process was killed by a signal (`status` is then the signal number).
    public var signalled: Bool
    public var standardOutput: String
    public var standardError: String

    public var succeeded: Bool { !signalled && status == 0 }
}

public enum Subprocess {
    /// Runs `executable` to completion and collects its output. The waiting happens on a thread of
    /// its own: blocking one of Swift's few cooperative threads would starve the code under test
    /// that runs on them (hosts, registries) in tests running alongside.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        currentDirectory: String? = nil
    ) async throws -> ProcessOutcome {
        let outcome = try await onOwnThread {
            try ChildProcess.run(executable, arguments, environment: environment, currentDirectory: currentDirectory)
        }
        return ProcessOutcome(
            status: outcome.status, signalled: outcome.signalled,
            standardOutput: String(decoding: outcome.standardOutput, as: UTF8.self),
            standardError: String(decoding: outcome.standardError, as: UTF8.self))
    }

    /// Finds a program on the PATH.
    public static func which(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// Builds the C plugins the tests need, with the system's C compiler.
public enum CPluginBuilder {
    /// Compiles `source` into a shared object at `output` with `-D` definitions.
    ///
    /// Each distinct build (the source's and the SDK header's text, the flags) is compiled once and
    /// kept in the build directory (`c-test-plugins/`, named by a hash of all that); every caller
    /// gets a fresh copy at its `output`, so tests that load or alter their copy never share it.
    public static func build(source: String, output: String, defines: [String] = [], extraFlags: [String] = []) async throws {
        let arguments = ["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-fvisibility=hidden", "-I", TestPaths.sdkInclude]
            + defines.map { "-D" + $0 } + extraFlags
        let sourceText = try String(contentsOfFile: source, encoding: .utf8)
        let header = (try? String(contentsOfFile: TestPaths.sdkInclude + "/shardwork_plugin.h", encoding: .utf8)) ?? ""
        let key = fnv1a([source, sourceText, header] + arguments)
        let task = builds.withLock { builds in
            if let task = builds[key] { return task }
            let task = Task { try await compileOnce(source: source, arguments: arguments, key: key) }
            builds[key] = task
            return task
        }
        let built = try await task.value
        try? FileManager.default.removeItem(atPath: output)
        try FileManager.default.copyItem(atPath: built, toPath: output)
    }

    /// One task per distinct build in this process.
    private static let builds = Mutex<[String: Task<String, any Error>]>([:])

    private static func compileOnce(source: String, arguments: [String], key: String) async throws -> String {
        let directory = TestPaths.buildDirectory + "/c-test-plugins"
        let built = "\(directory)/\(key).so"
        if FileManager.default.fileExists(atPath: built) { return built }
        guard let compiler = Subprocess.which("cc") ?? Subprocess.which("gcc") else {
            throw TestSetupError("no C compiler (cc or gcc) on the PATH; scripts/test installs gcc")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Compiled under a name of its own, then renamed: another test process never sees half a file.
        let partial = "\(built).\(getpid()).partial"
        let outcome = try await Subprocess.run(compiler, arguments + ["-o", partial, source])
        guard outcome.succeeded else {
            throw TestSetupError("cc \((arguments + ["-o", partial, source]).joined(separator: " ")) failed:\n\(outcome.standardError)")
        }
        guard rename(partial, built) == 0 else { throw TestSetupError("cannot rename \(partial) to \(built)") }
        return built
    }

    /// FNV-1a, 64 bits, of the parts (each followed by a zero byte), in hexadecimal.
    private static func fnv1a(_ parts: [String]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in parts {
            for byte in part.utf8 + [0] {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
        }
        return String(hash, radix: 16)
    }

    /// The test plugin (Tests/Fixtures/c-plugins/test_plugin.c) built with `defines` into `directory`.
    @discardableResult
    public static func testPlugin(
        in directory: String, named fileName: String = "libc_test.so", defines: [String] = []
    ) async throws -> String {
        let output = directory + "/" + fileName
        try await build(source: TestPaths.fixture("c-plugins/test_plugin.c"), output: output, defines: defines)
        return output
    }
}

/// Runs blocking work on a new thread and waits for it without holding a cooperative thread.
public func onOwnThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// What the build directory's built-in plugins offer: the one list the tests that enumerate them
/// compare with, kept in step with Package.swift's `builtInPlugins`.
public enum BuiltInPlugins {
    /// Products (`lib\(name).so`).
    public static let products = [
        "ShardworkStandardSharding", "ShardworkStandardExecutors", "ShardworkStandardErrorHandlers", "ShardworkExampleJobs",
        "ShardworkScriptJob", "ShardworkWebhookErrorHandler", "ShardworkHTTPJob", "ShardworkNativeJob", "ShardworkEmailErrorHandler",
    ]
    /// Plugin names, sorted.
    public static let pluginNames = ["email-error-handler", "example-jobs", "http-job", "native-job", "script-job", "standard-error-handlers", "standard-executors", "standard-sharding",
        "webhook-error-handlers",
    ]
    /// Provider names as `plugins list` orders them: by kind, then name.
    public static let providerNames = [
        "countdown", "http", "log-item", "native", "script",
        "average", "odd-even", "round-robin",
        "cpu", "fixed", "single-thread",
        "dingtalk", "email", "ignore", "log", "throw", "webhook", "wechat",
    ]
}

/// Writes an executable file (a script a test runs) through a descriptor that no child process can
/// inherit. Tests spawn processes from many threads at once; a process spawned while the file was
/// open for writing would hold it open, and running the file would fail with ETXTBSY ("Text file
/// busy") for as long as that process lives.
public func writeExecutable(_ text: String, to path: String) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    guard descriptor >= 0 else { throw TestSetupError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let count = bytes[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { throw TestSetupError("cannot write \(path): \(String(cString: strerror(errno)))") }
        written += count
    }
    fchmod(descriptor, 0o755)
}
