import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

/// Generated hostile input: a few hundred mutated host configurations and registry values. Each
/// must end in a clean refusal (a located, one-line error, or a job set aside with its reason) or a
/// clean start (the host starts, fires and stops), never a trap, a hang or an error nobody can
/// place. `SHARDWORK_GENERATED_SEED` replays a run; a failure names the case and its input.
@Suite("Generated input", .timeLimit(.minutes(6)), .stopsWhatItStarts)
struct GeneratedInputTests {
    static let seed: UInt64 = ProcessInfo.processInfo.environment["SHARDWORK_GENERATED_SEED"].flatMap { UInt64($0) }
        ?? UInt64(Date().timeIntervalSince1970)

    /// The plugins every generated host uses: the built-in ones and the C test plugin.
    final class Plugins: Sendable {
        let directory: TemporaryDirectory
        let providers = ProviderRegistry()

        init() async throws {
            directory = try TemporaryDirectory()
            try await CPluginBuilder.testPlugin(in: directory.path, named: "libc_test.so")
            let report = PluginLoader(logger: Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() })
                .loadAll(PluginSearchPath(directories: [directory.path]), into: providers)
            guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        }
    }

    /// A refusal a user can act on: one line, naming where (file and position) or at least what.
    static func expectLocated(_ error: HostConfigurationError, _ label: String, _ text: String) {
        let description = error.description
        #expect(!description.contains("\n") && !description.contains("\u{1B}"), "\(label): not one clean line: \(description.prefix(400))\n--- input:\n\(text.prefix(2000))")
        #expect(error.location != nil || !error.field.isEmpty, "\(label): refused without saying where: \(description.prefix(400))\n--- input:\n\(text.prefix(2000))")
    }

    @Test("a few hundred mutated host configurations: each refused with a located line, or started, fired and stopped")
    func configurations() async throws {
        print("generated input: seed \(Self.seed) (SHARDWORK_GENERATED_SEED replays it)")
        var random = SplitMix64(seed: Self.seed)
        let plugins = try await Plugins()
        let executable = try TestPaths.shardworkBinary
        var refused = 0
        var started = 0
        for index in 0..<300 {
            var yaml = GeneratedConfiguration.base
            for _ in 0...Int.random(in: 0..<2, using: &random) { yaml = GeneratedConfiguration.mutate(yaml, &random) }
            let text = yaml.render().replacingOccurrences(of: "{PLUGINS}", with: plugins.directory.path) + "\n"
            let label = "case \(index) of seed \(Self.seed)"
            let configuration: HostConfiguration
            do {
                configuration = try HostConfigurationReader.parse(text, file: "generated.yaml", baseDirectory: "/nonexistent")
            } catch {
                Self.expectLocated(error, label, text)
                refused += 1
                continue
            }
            let clock = ManualClock(now: HostHarness.start)
            let quiet = Logger(label: "generated") { _ in SwiftLogNoOpLogHandler() }
            let host: ShardworkHost
            do {
                host = try await ShardworkHost(
                    configuration: configuration, providers: plugins.providers, registry: EmbeddedRegistryServer(clock: { clock.now() }).connect(),
                    clock: clock, instance: HostHarness.instance, logger: quiet, processorCount: 2,
                    workerExecutable: executable)
            } catch {
                Self.expectLocated(error, label, text)
                refused += 1
                continue
            }
            do {
                try await host.start()
            } catch {
                Issue.record("\(label): the start failed with \(error)\n--- input:\n\(text.prefix(2000))")
                await host.shutdown()
                continue
            }
            let events = EventRecorder(host.events)
            for job in host.runtimes.keys { try? await host.trigger(job) }
            clock.advance(to: HostHarness.start + 2_000)
            if !host.runtimes.isEmpty {
                let fired = await events.waitFor { if case .fireEnded = $0 { true } else { false } }
                #expect(fired, "\(label): started, but nothing fired\n--- input:\n\(text.prefix(2000))")
            }
            host.services.cancellation.cancelAll()
            await host.shutdown()
            started += 1
        }
        print("generated input: \(refused) configurations refused with a located line, \(started) started, fired and stopped")
        #expect(refused > 20 && started > 20, "the mutations should give both outcomes: \(refused) refused, \(started) started")
    }

    /// The nodes of job `target` that a generated value may land on, for a host `instance`.
    static func nodes(of target: String, instance: String, ip: String) -> [String] {
        let root = "/\(target)"
        return [
            root, root + "/config", root + "/servers/\(ip)", root + "/instances/\(instance)", root + "/sharding/0/instance",
            root + "/sharding/1/instance", root + "/sharding/0/running", root + "/sharding/5/instance", root + "/sharding/x/instance",
            root + "/leader/election/instance", root + "/leader/sharding/necessary", root + "/trigger/\(instance)", root + "/dynamic",
            root + "/incapable/someone", root + "/leader/failover/items/1", root + "/sharding/1/failovering",
        ]
    }

    @Test("a few hundred generated registry values under a running host: each job runs or is set aside with its reason, and the host fires on")
    func registryValues() async throws {
        var random = SplitMix64(seed: Self.seed &+ 1)
        print("generated registry values: seed \(Self.seed) (SHARDWORK_GENERATED_SEED replays it)")
        let harness = try await HostHarness("""
            jobs:
              - jobName: canary
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 1
              - jobName: target
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                monitorExecution: true
                failover: true
            """)
        try await harness.host.start()
        let peer = harness.registry
        let me = HostHarness.instance
        let good = try #require(try await peer.string("/target/config"))
        let nodes = Self.nodes(of: "target", instance: me.id, ip: me.serverIP)
        let configValues = [good.replacingOccurrences(of: "shardingTotalCount: 3", with: "shardingTotalCount: 1000000"),
                            good.replacingOccurrences(of: "jobName: target", with: "jobName: other"),
                            good.replacingOccurrences(of: "maxTimeDiffSeconds: -1", with: "maxTimeDiffSeconds: 9223372036854775807"),
                            good + "props:\n  c.crash.create: 'yes'\n", "garbage: [", "", good]
        for round in 1...200 {
            let path = nodes.randomElement(using: &random)!
            let value: String? = switch Int.random(in: 0..<6, using: &random) {
            case 0: nil  // deleted
            case 1: configValues.randomElement(using: &random)!
            case 2: ["ENABLED", "DISABLED", "MAINTENANCE", "disabled", ""].randomElement(using: &random)!
            case 3: ["10.9.9.9@-@1", me.id, "jobInstanceId: \(me.id)\nserverIp: 10.9.9.9\n", "\u{1B}[2J", "😀"].randomElement(using: &random)!
            default:
                if case .scalar(let text) = GeneratedConfiguration.values.randomElement(using: &random)! { text } else { "x" }
            }
            if let value {
                if try await peer.exists(path, watch: nil) != nil {
                    _ = try? await peer.setData(path, data: [UInt8](utf8: value), version: nil)
                } else {
                    try? await peer.ensurePath(path)
                    _ = try? await peer.setData(path, data: [UInt8](utf8: value), version: nil)
                }
            } else {
                try? await peer.deleteRecursively(path)
            }
            // A name no host would write, now and then.
            if round % 25 == 0 { try? await peer.ensurePath("/bad\u{1B}[31mname") }
            // The canary's last fire has ended (a fire that found it running would be skipped).
            let canary = harness.host.runtimes["canary"]
            _ = await eventually { canary?.isRunning == false }
            harness.advance(toSecond: Int64(round))
            let instant = (HostHarness.start / 1000 + Int64(round)) * 1000
            let fired = await harness.events.waitFor { if case .fireEnded(let end) = $0 { end.job == "canary" && end.fireTime == instant } else { false } }
            #expect(fired, "round \(round) of seed \(Self.seed): the host stopped firing after \(path) = \(value.map { LogText.quoted($0) } ?? "(deleted)")")
            if !fired { break }
        }
        // Whatever happened, a good configuration brings the job back.
        if try await peer.exists("/target", watch: nil) == nil { try await peer.put("/target", "c-echo") }
        try await peer.put("/target/config", good.replacingOccurrences(of: "shardingTotalCount: 3", with: "shardingTotalCount: 2"))
        let outcome = await eventually {
            harness.host.runtimes["target"]?.job.configuration.shardingTotalCount == 2 || harness.host.incapableJobs["target"] != nil
                || !harness.host.isActive("target")
        }
        #expect(outcome, "the target job is neither running, set aside nor shut down: \(harness.log.messages.suffix(30))")
        #expect(!harness.log.messages.contains { $0.contains("\n") || $0.contains("\u{1B}") })
        await harness.host.shutdown()
    }
}
