import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization

/// Log lines captured from a logger built for one test (no global bootstrap).
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    var messages: [String] { lines.withLock { $0 } }

    func contains(_ text: String) -> Bool { messages.contains { $0.contains(text) } }

    func logger(level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: "test") { _ in Handler(log: self) }
        logger.logLevel = level
        return logger
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        /// `level: message`, then the call's own metadata (not the logger's, such as `job`) as
        /// ` key=value`, sorted by key: tests read fixed messages with their data.
        func log(event: LogEvent) {
            let data = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
            log.append("\(event.level): \(event.message)\(data)")
        }
    }
}

enum TestPlugins {
    /// A registry holding the built-in plugins, found by the loader's own rule in the directory of
    /// the running binary (the build directory).
    static func standardRegistry(log: CapturedLog = CapturedLog()) throws -> ProviderRegistry {
        let registry = ProviderRegistry()
        let report = PluginLoader(logger: log.logger()).loadAll(PluginSearchPath(), into: registry)
        for product in BuiltInPlugins.products {
            let path = try TestPaths.builtInPlugin(product)
            guard report.loaded.contains(where: { $0.path == canonicalPath(path) }) else {
                throw TestSetupError("\(path) did not load: \(report.refused)")
            }
        }
        return registry
    }

    /// Loads one file into `registry` and returns its info, or throws the refusal.
    @discardableResult
    static func load(_ file: String, into registry: ProviderRegistry, log: CapturedLog = CapturedLog()) throws -> PluginInfo {
        let plugin = try PluginLoader(logger: log.logger()).load(file).get()
        try registry.register(plugin)
        return plugin.info
    }

    static func setup(_ provider: String, _ properties: [(String, String)] = [], job: String = "job") -> ProviderSetup {
        ProviderSetup(jobName: job, providerName: provider, properties: JobProperties(properties.map { (key: $0.0, value: $0.1) }))
    }
}

/// The canonical path of a file, for comparing with what the loader reports.
func canonicalPath(_ path: String) -> String {
    URL(fileURLWithPath: path).resolvingSymlinksInPath().path
}

/// Runs `body` on a thread of its own. Calls into plugins may block until async Swift code
/// finishes; they must not block one of the few threads of Swift's cooperative pool.
func onDedicatedThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// One case of `Tests/Fixtures/sharding-vectors.json`: ElasticJob's own strategy classes run on
/// these inputs.
struct ShardingVector: Sendable {
    var strategy: String
    var jobName: String
    var javaHashCode: Int32
    var instances: [String]
    var totalCount: Int
    var expected: [(instance: String, items: [Int])]
    var source: String

    static func all() throws -> [ShardingVector] {
        let text = try String(contentsOfFile: TestPaths.fixture("sharding-vectors.json"), encoding: .utf8)
        guard let cases = try OrderedJSON.parse(text).array else { throw TestSetupError("sharding-vectors.json is not an array") }
        return try cases.map { item in
            guard let strategy = item["strategy"]?.string, let jobName = item["jobName"]?.string,
                  let hash = item["javaHashCode"]?.int, let instances = item["instances"]?.array,
                  let total = item["shardingTotalCount"]?.int, let expected = item["expected"]?.members,
                  let source = item["source"]?.string
            else { throw TestSetupError("a sharding vector lacks a field: \(item)") }
            return ShardingVector(
                strategy: strategy, jobName: jobName, javaHashCode: Int32(hash),
                instances: instances.compactMap(\.string), totalCount: total,
                expected: expected.map { ($0.key, $0.value.array?.compactMap(\.int) ?? []) }, source: source)
        }
    }
}

/// Polls `condition` until it holds, for at most `seconds`: for state that another thread sets
/// right after the event a test waited for. It blocks the calling thread: only for synchronous
/// tests. Async tests use `eventually`, which suspends, so that Swift's few cooperative threads stay
/// free for the code under test.
///
/// The default bound is an upper bound on a wait, never a claim about timing (figures belong in the
/// benchmarks): generous, so that a suite sharing two cores with ZooKeeper servers and host
/// processes does not fail a test that was only waiting. A condition that holds returns at once.
func eventuallyBlocking(seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(1_000)
    }
    return condition()
}

/// `eventuallyBlocking` for async tests: it suspends between polls.
func eventually(seconds: Double = 30, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return await condition()
}
