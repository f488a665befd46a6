import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// A host on the embedded registry and the real clock, with the built-in plugins and the Acme
/// example plugin (version 1) copied alone into a plugin directory; its jobs' ledgers tell which
/// version ran each item of each fire.
final class HotLoadHarness: Sendable {
    let directory: TemporaryDirectory
    let log = CapturedLog()
    let host: ShardworkHost
    /// The host's events from its making.
    let events: EventRecorder
    let ledger: String
    let cache: String

    /// `plugins` is the configuration's `plugins:` section without `cacheDirectory`; `jobs` its
    /// `jobs:` list. `{LEDGER}` and `{DIR}` in either are replaced by the ledger file and the
    /// temporary directory.
    init(plugins: String = "", jobs: String) async throws {
        directory = try TemporaryDirectory("shardwork-hotload")
        ledger = directory.file("ledger.jsonl")
        cache = directory.file("cache")
        let pluginDirectory = try directory.subdirectory("plugins")
        try FileManager.default.copyItem(atPath: try await HotLoadTests.acmeV1(), toPath: pluginDirectory + "/libAcmePlugins.so")
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: log.logger()).loadAll(PluginSearchPath(directories: [pluginDirectory]), into: providers)
        guard report.refused.isEmpty else { throw TestSetupError("plugins refused: \(report.refused)") }
        let yaml = """
            plugins:
              cacheDirectory: \(cache)
            \(plugins)
            jobs:
            \(jobs)
            """
            .replacingOccurrences(of: "{LEDGER}", with: ledger)
            .replacingOccurrences(of: "{DIR}", with: directory.path)
        host = try await ShardworkHost(
            configuration: try HostConfigurationReader.parse(yaml), providers: providers,
            registry: EmbeddedRegistryServer().connect(), instance: JobInstance(id: "10.0.0.1@-@7", serverIP: "10.0.0.1"),
            logger: log.logger(), processorCount: 2, workerExecutable: try TestPaths.shardworkBinary)
        events = EventRecorder(host.events)
        TestScope.onEnd { [host] in await host.shutdown() }
    }

    struct Entry: Equatable {
        var job: String
        var item: Int
        var fireTime: Int64
        var version: String
    }

    /// The ledger's lines so far.
    func entries() throws -> [Entry] {
        guard let text = try? String(contentsOfFile: ledger, encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let job = object["job"] as? String, let item = object["item"] as? Int,
                  let fireTime = (object["fireTime"] as? NSNumber)?.int64Value, let version = object["version"] as? String
            else { throw TestSetupError("not a ledger line: \(line)") }
            return Entry(job: job, item: item, fireTime: fireTime, version: version)
        }
    }

    /// The distinct fire times whose items ran on `version`.
    func fireTimes(of version: String) throws -> Set<Int64> {
        Set(try entries().filter { $0.version == version }.map(\.fireTime))
    }

    /// Waits (suspending) until `count` more fires of `version` than `after` are in the ledger.
    func waitForFires(of version: String, count: Int, after: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) async {
        let arrived = await eventually(seconds: 60) { ((try? fireTimes(of: version).count) ?? 0) >= after + count }
        #expect(arrived, "waited for \(count) fires of \(version); ledger: \((try? entries()) ?? [])", sourceLocation: sourceLocation)
    }

    func generations(of plugin: String = "acme") -> [PluginGenerationStatus] {
        host.pluginGenerations().filter { $0.name == plugin }
    }
}

@Suite("Hot-loading plugins", .stopsWhatItStarts)
struct HotLoadTests {
    /// Version 1 of the Acme example: the build every example test shares.
    static func acmeV1() async throws -> String {
        try await ExamplePluginTests.acmeBuild.value
    }

    /// Version 2 (`-DACME_V2`), built once per test run (shared with every test target).
    static var acmeV2Build: Task<String, any Error> { ExampleBuilds.acmeV2 }

    /// Version 2 copied to `name` in a directory of its own under `harness`'s, as a user would
    /// hand it to a host.
    static func acmeV2(in harness: HotLoadHarness, name: String = "libAcmePlugins.so") async throws -> String {
        let built = try await acmeV2Build.value
        let file = try harness.directory.subdirectory("v2") + "/" + name
        try FileManager.default.copyItem(atPath: built, toPath: file)
        return file
    }

    /// The job the tests watch: every second, two items, each appending to the ledger.
    static let reportsJob = """
          - jobName: reports
            jobType: acme-report
            cron: "* * * * * ?"
            shardingTotalCount: 2
            props:
              acme.ledger: "{LEDGER}"
        """

    @Test("a new version loaded while a job fires every second: v1 fires, then v2 fires, no fire missed or doubled")
    func switchesFromTheNextFire() async throws {
        let harness = try await HotLoadHarness(jobs: Self.reportsJob + """

              - jobName: spread
                jobType: log-item
                jobShardingStrategyType: ACME_RENDEZVOUS
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 1
              - jobName: audit
                jobType: log-item
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 1
            """)
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        await harness.waitForFires(of: "1.0.0", count: 2)

        let outcome = try await harness.host.loadPlugin(file: v2).get()
        #expect(outcome.plugin == "acme" && outcome.version == "2.0.0")
        #expect(outcome.generation == 2 && outcome.superseded == 1 && !outcome.alreadyLoaded)
        #expect(outcome.file == v2)
        #expect(outcome.jobsSwitched == ["reports", "spread"])
        #expect(outcome.cachePath == harness.cache + "/libAcmePlugins-\(outcome.sha256.prefix(16)).so")
        #expect(outcome.sha256.count == 64)
        let cacheMode = try FileManager.default.attributesOfItem(atPath: harness.cache)[.posixPermissions] as? Int
        let fileMode = try FileManager.default.attributesOfItem(atPath: outcome.cachePath)[.posixPermissions] as? Int
        #expect(cacheMode == 0o700 && fileMode == 0o755)
        // The recorder reads the host's events on a task of its own: waited for, not looked at once.
        #expect(await harness.events.waitFor { $0 == .pluginLoaded(name: "acme", version: "2.0.0", generation: 2, file: v2) })

        await harness.waitForFires(of: "2.0.0", count: 2)
        await harness.host.shutdown()

        let entries = try harness.entries()
        let byFire = Dictionary(grouping: entries, by: \.fireTime)
        let fireTimes = byFire.keys.sorted()
        // One-second steps: no fire missed (a gap) or doubled (a repeated item below).
        #expect(zip(fireTimes, fireTimes.dropFirst()).allSatisfy { $1 - $0 == 1000 }, "fire times: \(fireTimes)")
        for fireTime in fireTimes {
            let items = byFire[fireTime] ?? []
            #expect(items.map(\.item).sorted() == [0, 1], "fire \(fireTime): \(items)")
            #expect(Set(items.map(\.version)).count == 1, "fire \(fireTime) ran on two versions: \(items)")
        }
        // Every v1 fire before every v2 fire.
        let versions = fireTimes.map { byFire[$0]?.first?.version ?? "" }
        #expect(versions.first == "1.0.0" && versions.last == "2.0.0")
        #expect(versions == versions.sorted(), "\(versions)")

        // Both generations are listed; the jobs that use acme's providers use the current one.
        let generations = harness.generations()
        #expect(generations.map(\.generation) == [1, 2])
        #expect(generations.map(\.state) == [.superseded, .current])
        #expect(generations.map(\.version) == ["1.0.0", "2.0.0"])
        #expect(generations[0].jobs.isEmpty && generations[1].jobs == ["reports", "spread"])
        #expect(generations[0].supersededAt != nil && generations[1].supersededAt == nil)
        #expect(generations[1].file == v2 && generations[1].path == outcome.cachePath)
        #expect(generations[1].providers.map(\.name).sorted() == ["acme-report", "rendezvous"])
        #expect(generations[1].providers.first { $0.name == "rendezvous" }?.kind == "sharding-strategy")
        #expect(harness.host.pluginGenerations().first { $0.name == "standard-sharding" }?.jobs == ["audit", "reports"])
        // As the HTTP API will send it.
        let json = try JSONEncoder().encode(generations)
        #expect(try JSONDecoder().decode([PluginGenerationStatus].self, from: json) == generations)
    }

    @Test("a job whose items run in a worker process switches too: each fire on one version, none missed or doubled")
    func isolatedJobSwitches() async throws {
        let harness = try await HotLoadHarness(jobs: Self.reportsJob + "\n      shardwork.isolation: process")
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        await harness.waitForFires(of: "1.0.0", count: 2)
        let outcome = try await harness.host.loadPlugin(file: v2).get()
        #expect(outcome.jobsSwitched == ["reports"])
        await harness.waitForFires(of: "2.0.0", count: 2)
        await harness.host.shutdown()
        let byFire = Dictionary(grouping: try harness.entries(), by: \.fireTime)
        let fireTimes = byFire.keys.sorted()
        #expect(zip(fireTimes, fireTimes.dropFirst()).allSatisfy { $1 - $0 == 1000 }, "fire times: \(fireTimes)")
        for fireTime in fireTimes {
            let items = byFire[fireTime] ?? []
            #expect(items.map(\.item).sorted() == [0, 1] && Set(items.map(\.version)).count == 1, "fire \(fireTime): \(items)")
        }
        let versions = fireTimes.map { byFire[$0]?.first?.version ?? "" }
        #expect(versions == versions.sorted() && versions.last == "2.0.0", "\(versions)")
    }

    @Test("a file that is not a plugin is refused with the loader's reasons, and v1 goes on serving")
    func notAPlugin() async throws {
        let harness = try await HotLoadHarness(jobs: Self.reportsJob)
        let bogus = try harness.directory.subdirectory("incoming") + "/libAcmePlugins.so"
        try Data("#!/bin/sh\necho not a plugin\n".utf8).write(to: URL(fileURLWithPath: bogus))
        try await harness.host.start()
        await harness.waitForFires(of: "1.0.0", count: 1)

        let result = await harness.host.loadPlugin(file: bogus)
        guard case .failure(let error) = result else {
            Issue.record("a text file was loaded: \(result)")
            return
        }
        #expect(error.code == .pluginRefused)
        #expect(error.file == bogus)
        #expect(error.inspection?.checks.first { $0.id == "elf" }?.status == .failed)
        #expect(!error.reasons.isEmpty)
        #expect(error.description.contains("was not loaded; nothing changed"))
        #expect(await harness.events.waitFor { if case .pluginRefused(let file, _) = $0 { file == bogus } else { false } })

        let before = try harness.fireTimes(of: "1.0.0").count
        await harness.waitForFires(of: "1.0.0", count: 2, after: before)
        await harness.host.shutdown()
        #expect(try harness.fireTimes(of: "2.0.0").isEmpty)
        #expect(harness.generations().map(\.generation) == [1])
    }

    @Test("a v2 that refuses a job's props is refused naming the job and the field, and v1 goes on serving")
    func jobRefusesNewVersion() async throws {
        // v1 takes any positive acme.repeats; v2 at most 10.
        let harness = try await HotLoadHarness(jobs: Self.reportsJob + """

                  acme.repeats: "20"
              - jobName: quiet
                jobType: acme-report
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 1
            """)
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        await harness.waitForFires(of: "1.0.0", count: 1)

        let result = await harness.host.loadPlugin(file: v2)
        guard case .failure(let error) = result else {
            Issue.record("v2 was loaded although it refuses the job's props: \(result)")
            return
        }
        #expect(error.code == .jobsRefused)
        #expect(error.plugin == "acme" && error.version == "2.0.0")
        #expect(error.reasons.count == 1)
        let reason = try #require(error.reasons.first)
        #expect(reason.job == "reports")
        #expect(reason.field == "props.acme.repeats")
        #expect(reason.message.contains("should be at most 10 in version 2.0.0, got 20"))
        #expect(error.description.contains("job 'reports': props.acme.repeats:"))

        let before = try harness.fireTimes(of: "1.0.0").count
        await harness.waitForFires(of: "1.0.0", count: 2, after: before)
        await harness.host.shutdown()
        #expect(try harness.fireTimes(of: "2.0.0").isEmpty)
        let generations = harness.generations()
        #expect(generations.map(\.generation) == [1])
        #expect(generations.first?.jobs == ["quiet", "reports"])
    }

    @Test("the same content again is answered 'already loaded'; an older generation's content serves again as a new one")
    func identicalContent() async throws {
        let harness = try await HotLoadHarness(jobs: Self.reportsJob)
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        let first = try await harness.host.loadPlugin(file: v2).get()
        #expect(first.generation == 2 && !first.alreadyLoaded)

        // The same bytes under another name.
        let copy = try await Self.acmeV2(in: harness, name: "libAcmePlugins-copy.so")
        let again = try await harness.host.loadPlugin(file: copy).get()
        #expect(again.alreadyLoaded)
        #expect(again.generation == 2 && again.cachePath == first.cachePath && again.jobsSwitched.isEmpty)
        #expect(again.description.contains("already loaded as generation 2"))
        #expect(harness.generations().map(\.generation) == [1, 2])

        // Version 1's bytes: its image is still loaded and serves again, as generation 3.
        let back = try await harness.host.loadPlugin(file: try await Self.acmeV1()).get()
        #expect(back.version == "1.0.0" && back.generation == 3 && back.superseded == 2 && back.jobsSwitched == ["reports"])
        #expect(harness.generations().map(\.state) == [.superseded, .superseded, .current])
        let before = try harness.fireTimes(of: "1.0.0").count
        await harness.waitForFires(of: "1.0.0", count: 1, after: before)
        await harness.host.shutdown()
    }

    @Test("the generation limit counts images refused after loading, and reaching it says to restart")
    func generationLimit() async throws {
        let harness = try await HotLoadHarness(plugins: "  maxGenerations: 1", jobs: Self.reportsJob + """

                  acme.repeats: "20"
            """)
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        // Loaded, then refused by the job: its image stays mapped and counts.
        let refused = await harness.host.loadPlugin(file: v2)
        #expect(refused.failureCode == .jobsRefused)
        // The same content needs no new image: the same answer, not the limit.
        #expect(await harness.host.loadPlugin(file: v2).failureCode == .jobsRefused)

        // Different content needs a new image.
        let other = try await Self.acmeV2(in: harness, name: "libAcmePlugins-patched.so")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: other))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0]))
        try handle.close()
        let result = await harness.host.loadPlugin(file: other)
        guard case .failure(let error) = result else {
            Issue.record("loaded past the limit: \(result)")
            return
        }
        #expect(error.code == .generationLimit)
        #expect(error.description.contains("its limit (plugins.maxGenerations)"))
        #expect(error.description.contains("restart the host to reclaim their memory"))
        #expect(harness.generations().map(\.generation) == [1])
        await harness.host.shutdown()
    }

    @Test("a plugin put into the watched directory is loaded once it stops changing")
    func watchedDirectory() async throws {
        let harness = try await HotLoadHarness(
            plugins: "  watchDirectory: \"{DIR}/watch\"\n  watchIntervalSeconds: 0.2", jobs: Self.reportsJob)
        let watch = try harness.directory.subdirectory("watch")
        let v2 = try await Self.acmeV2(in: harness)
        try await harness.host.start()
        await harness.waitForFires(of: "1.0.0", count: 1)
        try FileManager.default.copyItem(atPath: v2, toPath: watch + "/libAcmePlugins.so")

        let switched = await eventually(seconds: 60) { harness.generations().last?.jobs == ["reports"] && harness.generations().count == 2 }
        #expect(switched, "log:\n\(harness.log.messages.joined(separator: "\n"))")
        let current = try #require(harness.generations().last)
        #expect(current.version == "2.0.0" && current.file == watch + "/libAcmePlugins.so")
        await harness.waitForFires(of: "2.0.0", count: 1)
        // Loaded once: later polls see the same size and time.
        try await Task.sleep(for: .seconds(1))
        #expect(harness.events.count { if case .pluginLoaded(_, "2.0.0", _, _) = $0 { true } else { false } } == 1)
        await harness.host.shutdown()
    }
}

extension Result where Failure == PluginHotLoadError {
    var failureCode: PluginHotLoadError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}
