import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("Calling providers through their C tables")
struct ProviderCallTests {
    // MARK: The standard executors and error handlers (Swift plugins)

    @Test("cpu is twice the processors, single-thread is one")
    func standardExecutors() throws {
        let registry = try TestPlugins.standardRegistry()
        let cpu = try ExecutorStrategyInstance(try registry.resolve(.executorStrategy, "CPU"), setup: TestPlugins.setup("CPU"))
        #expect(try cpu.threadCount(processorCount: 2) == 4)
        #expect(try cpu.threadCount(processorCount: 16) == 32)
        let single = try ExecutorStrategyInstance(try registry.resolve(.executorStrategy, "single-thread"), setup: TestPlugins.setup("single-thread"))
        #expect(try single.threadCount(processorCount: 16) == 1)
    }

    @Test("fixed takes its size from fixed.threads")
    func fixedExecutor() throws {
        let registry = try TestPlugins.standardRegistry()
        let provider = try registry.resolve(.executorStrategy, "fixed")
        let fixed = try ExecutorStrategyInstance(provider, setup: TestPlugins.setup("fixed", [("fixed.threads", "6")]))
        #expect(try fixed.threadCount(processorCount: 2) == 6)
    }

    @Test("fixed refuses a missing or bad fixed.threads, naming the property", arguments: [
        ([(String, String)](), "The property `fixed.threads` is required."),
        ([("fixed.threads", "lots")], "The property `fixed.threads` should be an integer, got 'lots'."),
        ([("fixed.threads", "0")], "The property `fixed.threads` should be positive, got 0."),
    ])
    func fixedExecutorRefuses(properties: [(String, String)], message: String) throws {
        let registry = try TestPlugins.standardRegistry()
        let provider = try registry.resolve(.executorStrategy, "fixed")
        do {
            _ = try ExecutorStrategyInstance(provider, setup: TestPlugins.setup("fixed", properties))
            Issue.record("accepted \(properties)")
        } catch {
            #expect(error.isInvalidConfiguration)
            #expect(error.field == "fixed.threads")
            #expect(error.message == message)
            #expect(error.description.contains("executor strategy 'fixed' of plugin standard-executors refused the configuration (property `fixed.threads`)"))
        }
    }

    static func failure(_ message: String, item: Int? = 2) -> JobFailure {
        JobFailure(origin: .item, jobName: "orders", taskID: "orders@-@2@-@READY@-@10.0.0.1@-@7", instanceID: "10.0.0.1@-@7",
                   hostName: "host-a", item: item, fireTimeMilliseconds: 1_700_000_000_000, message: message, code: 3)
    }

    @Test("log logs ElasticJob's message and goes on; throw propagates; ignore is silent")
    func standardErrorHandlers() async throws {
        let log = CapturedLog()
        let registry = try TestPlugins.standardRegistry(log: log)
        let handlers = try ["LOG", "throw", "Ignore"].map { name in
            try ErrorHandlerInstance(try registry.resolve(.errorHandler, name), setup: TestPlugins.setup(name, job: "orders"))
        }
        let dispositions = try await onDedicatedThread {
            try handlers.map { try $0.handle(Self.failure("disk full")) }
        }
        #expect(dispositions == [.handled, .propagate, .handled])
        #expect(log.messages.filter { $0.contains("disk full") } == [
            "error: Job 'orders' exception occur in job processing (item 2, task orders@-@2@-@READY@-@10.0.0.1@-@7): disk full",
        ])
    }

    // MARK: A C plugin of every kind

    func cRegistry(log: CapturedLog = CapturedLog(), defines: [String] = []) async throws -> (ProviderRegistry, TemporaryDirectory) {
        let directory = try TemporaryDirectory()
        let registry = ProviderRegistry()
        try TestPlugins.load(try await CPluginBuilder.testPlugin(in: directory.path, defines: defines), into: registry, log: log)
        return (registry, directory)
    }

    @Test("a C sharding strategy's key order and owners come back as an assignment")
    func cSharding() async throws {
        let (registry, _) = try await cRegistry()
        let strategy = try ShardingStrategyInstance(try registry.resolve(.shardingStrategy, "c_modulo"), setup: TestPlugins.setup("c_modulo"))
        let result = try strategy.shard(jobName: "job", instances: ["a", "b", "c"], totalCount: 7)
        #expect(result.entries.map(\.instanceID) == ["c", "b", "a"])
        #expect(result.items(of: "a") == [0, 3, 6])
        #expect(result.items(of: "b") == [1, 4])
        #expect(result.items(of: "c") == [2, 5])
    }

    @Test("a failing C strategy: its message and code come back")
    func cShardingFails() async throws {
        let (registry, _) = try await cRegistry()
        let strategy = try ShardingStrategyInstance(try registry.resolve(.shardingStrategy, "c-modulo"), setup: TestPlugins.setup("c-modulo"))
        let instances = ["a"]
        do {
            _ = try strategy.shard(jobName: "job", instances: instances, totalCount: 13)
            Issue.record("no error")
        } catch {
            #expect(error.message == "13 items are unlucky")
            #expect(error.code == 13)
            #expect(error.description == "sharding strategy 'c-modulo' of plugin c-test failed: 13 items are unlucky")
        }
    }

    @Test("a C strategy that returns an impossible owner is caught by the host")
    func cShardingBadResult() async throws {
        let (registry, _) = try await cRegistry(defines: ["VARIANT_BAD_SHARDING_RESULT"])
        let strategy = try ShardingStrategyInstance(try registry.resolve(.shardingStrategy, "c-modulo"), setup: TestPlugins.setup("c-modulo"))
        #expect {
            try strategy.shard(jobName: "job", instances: ["a", "b", "c"], totalCount: 4)
        } throws: { error in
            "\(error)".contains("the strategy gave item 0 the owner index 3, but there are 3 instances")
        }
    }

    @Test("create refuses a configuration and names the property")
    func cCreateRefuses() async throws {
        let (registry, _) = try await cRegistry()
        let modulo = try registry.resolve(.shardingStrategy, "c-modulo")
        do {
            _ = try ShardingStrategyInstance(modulo, setup: TestPlugins.setup("c-modulo", [("c.reject", "yes")]))
            Issue.record("accepted")
        } catch {
            #expect(error.isInvalidConfiguration)
            #expect(error.field == "c.reject")
        }
        let executor = try registry.resolve(.executorStrategy, "c-threads")
        #expect(try ExecutorStrategyInstance(executor, setup: TestPlugins.setup("c-threads")).threadCount(processorCount: 2) == 3)
        #expect(try ExecutorStrategyInstance(executor, setup: TestPlugins.setup("c-threads", [("c.threads", "8")])).threadCount(processorCount: 2) == 8)
        #expect(throws: ProviderCallError.self) {
            try ExecutorStrategyInstance(executor, setup: TestPlugins.setup("c-threads", [("c.threads", "-1")]))
        }
    }

    @Test("a C error handler receives the whole failure and may propagate")
    func cErrorHandler() async throws {
        let log = CapturedLog()
        let (registry, _) = try await cRegistry(log: log)
        let handler = try ErrorHandlerInstance(try registry.resolve(.errorHandler, "c-recorder"), setup: TestPlugins.setup("c-recorder"))
        let first = try await onDedicatedThread { try handler.handle(Self.failure("disk full")) }
        let second = try await onDedicatedThread { try handler.handle(Self.failure("please propagate", item: nil)) }
        #expect(first == .handled)
        #expect(second == .propagate)
        #expect(log.contains("recorded failure: job=orders item=2 origin=1 code=3 message=disk full"))
        #expect(log.contains("recorded failure: job=orders item=-1 origin=1 code=3 message=please propagate"))
    }

    @Test("a C listener: its order, and the fire before and after, with item statuses")
    func cListener() async throws {
        let log = CapturedLog()
        let (registry, _) = try await cRegistry(log: log)
        let provider = try registry.resolve(.jobListener, "c-listener")
        #expect(try JobListenerInstance(provider, setup: TestPlugins.setup("c-listener")).order == 5)
        let listener = try JobListenerInstance(provider, setup: TestPlugins.setup("c-listener", [("c.order", "-3")]))
        #expect(listener.order == -3)
        var fire = FireInfo(jobName: "orders", taskID: "t", shardingTotalCount: 3, jobParameter: "", fireTimeMilliseconds: 1,
                            items: [0, 2], itemParameters: [0: "a"])
        let before = fire
        try await onDedicatedThread { try listener.beforeFire(before) }
        fire.itemStatuses = [0: .succeeded, 2: .failed]
        let after = fire
        try await onDedicatedThread { try listener.afterFire(after) }
        #expect(log.contains("c-listener: before fire of orders: 0=pending 2=pending"))
        #expect(log.contains("c-listener: after fire of orders: 0=ok 2=failed"))
        fire.jobParameter = "listener-fails"
        let failing = fire
        await #expect(throws: ProviderCallError.self) { try await onDedicatedThread { try listener.beforeFire(failing) } }
    }

    static func item(_ number: Int, parameter: String?, jobParameter: String = "", epoch: UInt64 = 5) -> ShardingContext {
        ShardingContext(jobName: "orders", taskID: "orders@-@\(number)@-@READY@-@10.0.0.1@-@7", shardingTotalCount: 3,
                        jobParameter: jobParameter, shardingItem: number, shardingParameter: parameter,
                        fireTimeMilliseconds: 1_700_000_000_000, fencingEpoch: epoch)
    }

    @Test("a C simple job sees the sharding context and the host's services; a failure keeps its code")
    func cSimpleJob() async throws {
        let log = CapturedLog()
        let (registry, _) = try await cRegistry()
        let job = try JobTypeInstance(try registry.resolve(.jobType, "c-echo"), setup: TestPlugins.setup("c-echo", job: "orders"))
        #expect(job.shape == .simple)
        let control = ItemControl(isCancelled: { false }, isEpochCurrent: { $0 == 5 })
        let itemLogger = log.logger()
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: Self.item(1, parameter: "Shanghai", jobParameter: "check-host"),
                                           control: control, logger: itemLogger))
        }
        #expect(log.contains("cancelled=0 epoch 5 current=1 epoch 6 current=0"))
        #expect(log.contains("echo orders item 1/3 parameter Shanghai task orders@-@1@-@READY@-@10.0.0.1@-@7 fired 1700000000000"))
        do {
            try await onDedicatedThread {
                try job.execute(ItemInvocation(context: Self.item(2, parameter: "fail"), control: control, logger: itemLogger))
            }
            Issue.record("no failure")
        } catch let error as ProviderCallError {
            #expect(error.code == 7)
            #expect(error.message == "item 2 failed on purpose")
        }
    }

    @Test("a C dataflow job: fetch, process, and an empty fetch at the end")
    func cDataflowJob() async throws {
        let log = CapturedLog()
        let (registry, _) = try await cRegistry()
        let job = try JobTypeInstance(try registry.resolve(.jobType, "c-countdown"), setup: TestPlugins.setup("c-countdown", job: "orders"))
        #expect(job.shape == .dataflow)
        let invocation = ItemInvocation(context: Self.item(0, parameter: nil), control: ItemControl(), logger: log.logger())
        let batches = try await onDedicatedThread {
            var counts: [Int] = []
            while let batch = try job.fetch(invocation) {
                counts.append(batch.count)
                try job.process(invocation, batch)
            }
            return counts
        }
        #expect(batches == [3, 3])
        #expect(log.messages.filter { $0.contains("processed 1+2+3") }.count == 2)
    }
}
