import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

/// A host on the embedded registry, driven by a manual clock, with the built-in plugins and the C
/// test plugins ("c-…", and "d-…" for a second set of names).
final class HostHarness: Sendable {
    static let start: Int64 = 1_800_000_000_500  // half a second before a whole second
    static let instance = JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1")

    let clock: ManualClock
    let log = CapturedLog()
    let registry: EmbeddedRegistry
    let host: ShardworkHost
    let plugins: TemporaryDirectory
    /// Every event of the host, from before it starts.
    let events: EventRecorder

    /// `logger`: where the host logs, instead of the harness's captured log. `monotonic`: whether
    /// the clock's monotonic time (deadlines, waits) moves only by hand too.
    init(_ yaml: String, logger: Logger? = nil, monotonic: ManualClock.MonotonicTime = .real) async throws {
        clock = ManualClock(now: HostHarness.start, monotonic: monotonic)
        plugins = try TemporaryDirectory()
        try await CPluginBuilder.testPlugin(in: plugins.path, named: "libc_test.so")
        try await CPluginBuilder.testPlugin(
            in: plugins.path, named: "libd_test.so", defines: ["PLUGIN_NAME=\"d-test\"", "NAME_PREFIX=\"d\"", "MODULO_ALIAS=\"D_MODULO\""])
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: log.logger()).loadAll(PluginSearchPath(directories: [plugins.path]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let clock = self.clock
        registry = EmbeddedRegistryServer(clock: { clock.now() }).connect()
        host = try await ShardworkHost(
            configuration: try HostConfigurationReader.parse(yaml), providers: providers, registry: registry,
            clock: clock, instance: Self.instance, logger: logger ?? log.logger(), processorCount: 2,
            workerExecutable: try TestPaths.shardworkBinary)
        events = EventRecorder(host.events)
        TestScope.onEnd { [host] in await host.shutdown() }
    }

    /// Advances the clock to `seconds` whole seconds after the start's second.
    func advance(toSecond seconds: Int64) {
        clock.advance(to: (Self.start / 1000 + seconds) * 1000)
    }

    func lines(containing text: String) -> [String] { log.messages.filter { $0.contains(text) } }

    /// Waits until `count` log lines contain `text`.
    func waitFor(_ text: String, count: Int = 1, sourceLocation: SourceLocation = #_sourceLocation) async {
        let arrived = await eventually { lines(containing: text).count >= count }
        #expect(arrived, "waited for \(count) lines with '\(text)'; log:\n\(log.messages.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    /// Waits until `count` fires of `job` have ended (their ``FireEnd`` events).
    func waitForFires(_ job: String, count: Int = 1, sourceLocation: SourceLocation = #_sourceLocation) async {
        let arrived = await events.waitForFires(job, count: count)
        #expect(arrived, "waited for \(count) fires of '\(job)'; events:\n\(events.kinds().map { "\($0)" }.joined(separator: "\n"))",
                sourceLocation: sourceLocation)
    }

    func fireEnds(_ job: String) -> [FireEnd] { events.fireEnds(job) }

    func string(_ path: String) async throws -> String? { try await registry.string(path) }
}
