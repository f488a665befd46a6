import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization

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

