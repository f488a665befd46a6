import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The native job (Plugins/NativeJob) calling functions of a C library the tests build
/// (Tests/Fixtures/native/native_job.c) through libffi.
@Suite("Native job")
struct NativeJobTests {
    let log = CapturedLog()
    let registry = ProviderRegistry()
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory("shardwork-native")
        try TestPlugins.load(try TestPaths.builtInPlugin("ShardworkNativeJob"), into: registry, log: log)
    }

    /// The fixture library, compiled with the system's C compiler into the test's directory.
    func library() async throws -> String {
        let output = directory.file("libnative_job.so")
        try await CPluginBuilder.build(source: TestPaths.fixture("native/native_job.c"), output: output)
        return output
    }

    func job(_ properties: [(String, String)]) throws -> JobTypeInstance {
        try JobTypeInstance(try registry.resolve(.jobType, "native"), setup: TestPlugins.setup("native", properties, job: "ledger"))
    }

    func context(item: Int, parameter: String?, jobParameter: String) -> ShardingContext {
        ShardingContext(jobName: "ledger", taskID: "ledger@-@0,1@-@READY@-@10.0.0.3@-@77", shardingTotalCount: 4,
                        jobParameter: jobParameter, shardingItem: item, shardingParameter: parameter,
                        fireTimeMilliseconds: 1_800_000_123_456, fencingEpoch: 1)
    }

    func run(_ job: JobTypeInstance, _ context: ShardingContext) async throws {
        let logger = log.logger()
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: context, control: ItemControl(), logger: logger))
        }
    }

    @Test("the function gets the context values named in native.arguments; 0 succeeds, non-zero fails with that code")
    func callsWithContext() async throws {
        let library = try await library()
        let out = directory.file("calls.txt")
        let recorder = try job([
            ("native.library", library), ("native.symbol", "record_item"),
            ("native.signature", "i32(i32, str, str, str, i64, i64)"),
            ("native.arguments", "item,itemParameter,jobParameter,jobName,total,fireTime"),
        ])
        try await run(recorder, context(item: 1, parameter: "Shanghai", jobParameter: out))
        try await run(recorder, context(item: 3, parameter: nil, jobParameter: out))
        do {
            try await run(recorder, context(item: 2, parameter: "fail", jobParameter: out))
            Issue.record("a return of 42 did not fail the item")
        } catch let error as ProviderCallError {
            #expect(error.code == 42)
            #expect(error.message == "native job: record_item returned 42")
        }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == """
            ledger item=1 parameter=Shanghai total=4 fire=1800000123456
            ledger item=3 parameter= total=4 fire=1800000123456
            ledger item=2 parameter=fail total=4 fire=1800000123456

            """)
    }

    @Test("64-bit and void returns")
    func returnTypes() async throws {
        let library = try await library()
        let wide = try job([("native.library", library), ("native.symbol", "since_reference"),
                            ("native.signature", "i64(i64)"), ("native.arguments", "fireTime")])
        do {
            try await run(wide, context(item: 0, parameter: nil, jobParameter: ""))
            Issue.record("a non-zero 64-bit return did not fail the item")
        } catch let error as ProviderCallError {
            #expect(error.message == "native job: since_reference returned 123456")
            #expect(error.code == 123_456)
        }
        let nothing = try job([("native.library", library), ("native.symbol", "nothing"), ("native.signature", "void()")])
        try await run(nothing, context(item: 0, parameter: nil, jobParameter: ""))
    }

    @Test("a missing library or symbol, a malformed signature or mismatched arguments are refused at registration, naming the key")
    func validation() async throws {
        let library = try await library()
        let good = [("native.library", library), ("native.symbol", "record_item"),
                    ("native.signature", "i32(i32,str,str,str,i64,i64)"),
                    ("native.arguments", "item,itemParameter,jobParameter,jobName,total,fireTime")]
        func replacing(_ key: String, _ value: String?) -> [(String, String)] {
            var properties = good.filter { $0.0 != key }
            if let value { properties.append((key, value)) }
            return properties
        }
        for (properties, key, text) in [
            (replacing("native.library", nil), "native.library", "The property `native.library` is required."),
            (replacing("native.library", directory.file("libmissing.so")), "native.library", "cannot load '\(directory.file("libmissing.so"))': "),
            (replacing("native.symbol", "no_such_function"), "native.symbol", "'no_such_function' is not in"),
            (replacing("native.symbol", "hidden"), "native.symbol", "'hidden' is not in"),
            (replacing("native.signature", nil), "native.signature", "The property `native.signature` is required."),
            (replacing("native.signature", "i32(i32"), "native.signature", "is not a signature like `i32(i32,str,str)`"),
            (replacing("native.signature", "f64(i32)"), "native.signature", "unknown return type 'f64'"),
            (replacing("native.signature", "i32(i32,,str)"), "native.signature", "an argument type is missing"),
            (replacing("native.arguments", "item,jobName"), "native.arguments", "names 2 values but `native.signature` has 6 arguments"),
            (replacing("native.arguments", "item,itemParameter,jobParameter,hostname,total,fireTime"), "native.arguments", "unknown context value 'hostname'"),
            (replacing("native.arguments", "fireTime,itemParameter,jobParameter,jobName,total,item"), "native.arguments",
             "argument 1 is i32 in `native.signature`, but fireTime needs i64"),
        ] {
            do {
                _ = try job(properties)
                Issue.record("accepted \(properties)")
            } catch let error as ProviderCallError {
                #expect(error.isInvalidConfiguration, "\(error)")
                #expect(error.field == key)
                #expect(error.message.contains(text), "\(error.message)")
            }
        }
    }
}
