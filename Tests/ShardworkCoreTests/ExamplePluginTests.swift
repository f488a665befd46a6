import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The examples are built the way their READMEs say, and loaded the way a user would load them.
@Suite("Example plugins")
struct ExamplePluginTests {
    /// examples/third-party-plugin, built once per test run (shared with every test target).
    static var acmeBuild: Task<String, any Error> { ExampleBuilds.acmeV1 }

    /// The third-party plugin copied alone into a fresh plugin directory: no SDK beside it, so it
    /// must bind to the host's libShardworkSDK.so.
    func acmePlugin(in directory: TemporaryDirectory) async throws -> String {
        let built = try await Self.acmeBuild.value
        let plugins = try directory.subdirectory("plugins")
        try FileManager.default.copyItem(atPath: built, toPath: plugins + "/libAcmePlugins.so")
        return plugins + "/libAcmePlugins.so"
    }

    @Test("the third-party Swift plugin loads alone and offers a job type and a sharding strategy")
    func thirdPartyLoads() async throws {
        let directory = try TemporaryDirectory()
        let file = try await acmePlugin(in: directory)
        let registry = ProviderRegistry()
        let report = PluginLoader(logger: CapturedLog().logger())
            .loadAll(PluginSearchPath(directories: [URL(fileURLWithPath: file).deletingLastPathComponent().path], includeBuiltIn: false), into: registry)
        #expect(report.refused.isEmpty, "\(report.refused)")
        let info = try #require(report.loaded.first)
        #expect(info.name == "acme" && info.version == "1.0.0")
        #expect(info.toolchain == PluginBuildInfo.current.toolchain)
        #expect(try registry.resolve(.jobType, "ACME_REPORT").name == "acme-report")
        #expect(try registry.resolve(.shardingStrategy, "rendezvous").plugin.file == file)
    }

    @Test("its rendezvous strategy assigns every item once and moves few items when an instance leaves")
    func rendezvous() async throws {
        let directory = try TemporaryDirectory()
        let registry = ProviderRegistry()
        try TestPlugins.load(try await acmePlugin(in: directory), into: registry)
        let strategy = try ShardingStrategyInstance(try registry.resolve(.shardingStrategy, "rendezvous"), setup: TestPlugins.setup("rendezvous"))
        let before = try strategy.shard(jobName: "reports", instances: ["a", "b", "c", "d"], totalCount: 100)
        #expect(before.entries.flatMap(\.items).sorted() == Array(0..<100))
        let after = try strategy.shard(jobName: "reports", instances: ["a", "b", "c"], totalCount: 100)
        let moved = (0..<100).filter { before.owner(of: $0) != after.owner(of: $0) }
        #expect(Set(moved) == Set(before.items(of: "d")))
    }

    @Test("its job runs an item through the host, sees its context, and fails with its code")
    func acmeJob() async throws {
        let directory = try TemporaryDirectory()
        let registry = ProviderRegistry()
        try TestPlugins.load(try await acmePlugin(in: directory), into: registry)
        let provider = try registry.resolve(.jobType, "acme-report")
        let job = try JobTypeInstance(provider, setup: TestPlugins.setup("acme-report", [("acme.greeting", "hi")], job: "reports"))
        let log = CapturedLog()
        let context = ShardingContext(jobName: "reports", taskID: "reports@-@1@-@READY@-@h@-@1", shardingTotalCount: 3,
                                      jobParameter: "", shardingItem: 1, shardingParameter: "Beijing",
                                      fireTimeMilliseconds: 0, fencingEpoch: 9)
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: context, control: ItemControl(), logger: log.logger()))
        }
        #expect(log.contains("hi for reports item 1 of 3, parameter Beijing, epoch 9"))

        var failing = context
        failing.shardingParameter = "fail"
        let failingContext = failing
        do {
            try await onDedicatedThread {
                try job.execute(ItemInvocation(context: failingContext, control: ItemControl(), logger: log.logger()))
            }
            Issue.record("no failure")
        } catch let error as ProviderCallError {
            #expect(error.code == 42)
            #expect(error.message == "item 1 was told to fail")
        }

        // A cancelled item stops before its work.
        do {
            try await onDedicatedThread {
                try job.execute(ItemInvocation(context: context, control: ItemControl(isCancelled: { true }), logger: log.logger()))
            }
            Issue.record("ran although cancelled")
        } catch let error as ProviderCallError {
            #expect(error.message == "cancelled")
        }
    }

    @Test("its job checks its props when it is made for a job")
    func acmeJobProps() async throws {
        let directory = try TemporaryDirectory()
        let registry = ProviderRegistry()
        try TestPlugins.load(try await acmePlugin(in: directory), into: registry)
        let provider = try registry.resolve(.jobType, "acme-report")
        do {
            _ = try JobTypeInstance(provider, setup: TestPlugins.setup("acme-report", [("acme.repeats", "zero")]))
            Issue.record("accepted a bad acme.repeats")
        } catch {
            #expect(error.field == "acme.repeats")
            #expect(error.message == "The property `acme.repeats` should be an integer, got 'zero'.")
        }
    }

    @Test("the C example builds with its Makefile, loads, and runs")
    func cExample() async throws {
        let directory = try TemporaryDirectory()
        guard let make = Subprocess.which("make") else { throw TestSetupError("make is not on the PATH; scripts/test installs it") }
        let build = try await Subprocess.run(make, ["-C", TestPaths.repositoryRoot + "/examples/c-plugin", "OUT=\(directory.path)"])
        #expect(build.succeeded, "\(build.standardError)")
        let registry = ProviderRegistry()
        let info = try TestPlugins.load(directory.file("libhello_c.so"), into: registry)
        #expect(info.name == "hello-c" && info.toolchain == "c")
        let job = try JobTypeInstance(try registry.resolve(.jobType, "HELLO_C"), setup: TestPlugins.setup("hello-c"))
        let log = CapturedLog()
        let context = ShardingContext(jobName: "greetings", taskID: "t", shardingTotalCount: 2, jobParameter: "",
                                      shardingItem: 0, shardingParameter: "world", fireTimeMilliseconds: 0, fencingEpoch: 1)
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: context, control: ItemControl(), logger: log.logger()))
        }
        #expect(log.contains("hello from C: job greetings item 0 of 2 (parameter world)"))
        #expect(try registry.resolve(.errorHandler, "stderr-c").plugin.name == "hello-c")
        #expect(throws: ProviderCallError.self) {
            try JobTypeInstance(try registry.resolve(.jobType, "hello-c"), setup: TestPlugins.setup("hello-c", [("hello.greeting", "")]))
        }
    }
}
