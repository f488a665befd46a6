import Foundation
import Logging
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("Single-host runtime", .stopsWhatItStarts)
struct HostRuntimeTests {
    @Test("running markers of the host's own session, left by a run whose clearing failed, are removed at the next fire, whose items all run")
    func leftoverMarkers() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: batch
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                monitorExecution: true
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("batch")
        // What a run leaves when the connection is lost as it clears its markers (seen after a
        // ZooKeeper restart: the session lived on, and so did the markers, for good).
        _ = try await harness.registry.create("/batch/sharding/0/running", data: Array(HostHarness.instance.id.utf8), mode: .ephemeral)
        harness.advance(toSecond: 2)
        await harness.waitForFires("batch", count: 2)
        #expect(harness.fireEnds("batch").last?.items == [0, 1], "\(harness.events.kinds())")
        #expect(try await harness.registry.exists("/batch/sharding/0/running", watch: nil) == nil)
        await harness.host.shutdown()
    }

    @Test("a fire armed ahead of its instant starts its prepared items once; one whose registry state changed meanwhile takes the general path")
    func armedFires() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
            """)
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        let second = HostHarness.start / 1000 * 1000
        func echoes(_ item: Int, at time: Int64) -> Int {
            harness.lines(containing: "echo orders item \(item)/2").filter { $0.contains("fired \(time)") }.count
        }
        // The first fire shards (the flag is set): the general path.
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders", count: 1)
        #expect(runtime.armedFireCount == 0)

        // Armed 250 ms ahead, released at the instant.
        harness.clock.advance(to: second + 2000 - 100)
        #expect(await eventually { runtime.armedDeadline == second + 2000 }, "\(harness.log.messages)")
        #expect(echoes(0, at: second + 2000) == 0, "nothing runs before the instant")
        harness.advance(toSecond: 2)
        await harness.waitForFires("orders", count: 2)
        #expect(runtime.armedFireCount == 1)
        #expect(echoes(0, at: second + 2000) == 1 && echoes(1, at: second + 2000) == 1)

        // Armed, then an item is disabled before the instant: the stale preparation is dropped.
        harness.clock.advance(to: second + 3000 - 100)
        #expect(await eventually { runtime.armedDeadline == second + 3000 })
        try await harness.registry.create("/orders/sharding/1/disabled", data: [], mode: .persistent)
        harness.advance(toSecond: 3)
        await harness.waitForFires("orders", count: 3)
        #expect(runtime.armedFireCount == 1, "the general path ran it")
        #expect(echoes(0, at: second + 3000) == 1 && echoes(1, at: second + 3000) == 0)
    }

    @Test("jobs fire at their cron instants with ElasticJob's sharding context, and register ElasticJob's layout")
    func firesWithContext() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 0=Beijing,1=Shanghai,2=Guangzhou
                jobParameter: sync
            """)
        try await harness.host.start()
        #expect(try await harness.string("/orders") == "c-echo")
        #expect(try await harness.string("/orders/config")?.contains("shardingTotalCount: 3\n") == true)
        #expect(try await harness.string("/orders/servers/10.0.0.1") == "ENABLED")
        #expect(try await harness.string("/orders/instances/10.0.0.1@-@7") == "jobInstanceId: 10.0.0.1@-@7\nserverIp: 10.0.0.1\n")
        #expect(try await harness.string("/orders/leader/election/instance") == "10.0.0.1@-@7")
        #expect(try await harness.registry.exists("/orders/leader/sharding/necessary", watch: nil) != nil)
        #expect(harness.lines(containing: "echo").isEmpty)

        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        let fireTime = (HostHarness.start / 1000 + 1) * 1000
        for (item, city) in [(0, "Beijing"), (1, "Shanghai"), (2, "Guangzhou")] {
            #expect(harness.lines(containing: "echo orders item \(item)/3 parameter \(city) task orders@-@0,1,2@-@READY@-@10.0.0.1@-@7 fired \(fireTime)").count == 1)
        }
        // The leader sharded at the first fire: every item is this host's, the flag is gone.
        for item in 0..<3 {
            #expect(try await harness.string("/orders/sharding/\(item)/instance") == "10.0.0.1@-@7")
        }
        #expect(try await harness.registry.exists("/orders/leader/sharding/necessary", watch: nil) == nil)

        harness.advance(toSecond: 2)
        await harness.waitForFires("orders", count: 2)
        #expect(harness.lines(containing: "echo orders item 0/3").count == 2)
        await harness.host.shutdown()
        // Seen from another session, as another host would: the instance left, its config stays.
        let peer = harness.registry.server.connect()
        #expect(try await peer.exists("/orders/instances/10.0.0.1@-@7", watch: nil) == nil)
        #expect(try await peer.exists("/orders/leader/election/instance", watch: nil) == nil)
        #expect(try await peer.exists("/orders/config", watch: nil) != nil)
    }

    @Test("one item's failure does not stop the others; it goes to the error handler with its code")
    func failureToErrorHandler() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
                jobErrorHandlerType: c-recorder
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        #expect(harness.lines(containing: "echo orders item 0/3").count == 1)
        #expect(harness.lines(containing: "echo orders item 2/3").count == 1)
        #expect(harness.lines(containing: "recorded failure: job=orders item=1 origin=1 code=7 message=item 1 failed on purpose").count == 1)
        let end = try #require(harness.fireEnds("orders").first)
        #expect(end.items == [0, 1, 2] && end.failedItems == [1])
        #expect(end.outcomes[1] == .failed(message: "item 1 failed on purpose", code: 7))
        await harness.host.shutdown()
    }

    @Test("listeners run before and after each fire, in ascending order, and see the items' outcome")
    func listenerOrder() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                shardingItemParameters: 1=fail
                jobListenerTypes: [c-listener, d-listener]
                props:
                  c.order: 20
                  d.order: 10
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        let sequence = harness.log.messages.compactMap { line -> String? in
            if line.contains("listener: before") { return line.contains("d-listener") ? "d-before" : "c-before" }
            if line.contains("listener: after") { return line.contains("d-listener") ? "d-after" : "c-after" }
            if line.contains("echo orders item") { return "item" }
            return nil
        }
        #expect(sequence == ["d-before", "c-before", "item", "d-after", "c-after"])
        #expect(harness.lines(containing: "d-listener: before fire of orders: 0=pending 1=pending").count == 1)
        #expect(harness.lines(containing: "c-listener: after fire of orders: 0=ok 1=failed").count == 1)
        await harness.host.shutdown()
    }

    @Test("misfire: fires that find the previous one running are recorded and run once after it, never more", arguments: [true, false])
    func misfire(enabled: Bool) async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: slow
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 1
                monitorExecution: true
                misfire: \(enabled)
                props:
                  c.wait.ms: 1000
            """)
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["slow"])
        harness.advance(toSecond: 1)
        // The item is running (its marker is there) when the next two fires come.
        #expect(await eventually { (try? await harness.registry.exists("/slow/sharding/0/running", watch: nil)) != nil })
        // The misfire marker lives only until the run it records ends: a watch sees its creation,
        // however late this test gets to look.
        let misfireMarked = Mutex(false)
        _ = try await harness.registry.exists("/slow/sharding/0/misfire", watch: { event in
            if event.kind == .created { misfireMarked.withLock { $0 = true } }
        })
        harness.advance(toSecond: 2)
        harness.advance(toSecond: 3)
        // Both fires found the first running: kept (once) with misfire on, dropped with it off.
        let misfires = await harness.events.waitFor(count: 2) { if case .misfire(job: "slow", _, _) = $0 { true } else { false } }
        #expect(misfires)
        if enabled {
            #expect(await eventually { misfireMarked.withLock { $0 } })
        }
        #expect(harness.events.kinds(job: "slow").filter { if case .misfire = $0 { true } else { false } } == [
            .misfire(job: "slow", fireTime: (HostHarness.start / 1000 + 2) * 1000, kept: enabled),
            .misfire(job: "slow", fireTime: (HostHarness.start / 1000 + 3) * 1000, kept: enabled),
        ])
        await harness.waitForFires("slow")
        #expect(await eventually { !runtime.isRunning })
        #expect(harness.lines(containing: "item 0 waited 1000 ms").count == (enabled ? 2 : 1))
        // One fire, its items run twice with misfire on (ElasticJob's misfire loop).
        #expect(harness.fireEnds("slow").map(\.runs) == [enabled ? 2 : 1])
        if enabled {
            #expect(try await harness.registry.exists("/slow/sharding/0/misfire", watch: nil) == nil)
        }
        await harness.host.shutdown()
    }

    @Test("dataflow: streaming fetches until nothing comes; without it, one batch per fire", arguments: [true, false])
    func dataflow(streaming: Bool) async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: flow
                jobType: c-countdown
                cron: "* * * * * ?"
                shardingTotalCount: 1
                props:
                  streaming.process: \(streaming)
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("flow")
        #expect(harness.lines(containing: "processed 1+2+3").count == (streaming ? 2 : 1))
        harness.advance(toSecond: 2)
        await harness.waitForFires("flow", count: 2)
        #expect(harness.lines(containing: "processed 1+2+3").count == 2)
        await harness.host.shutdown()
    }

    @Test("an item that hangs past its timeout is given up on; its job and the others keep firing")
    func itemTimeout() async throws {
        let harness = try await HostHarness("""
            host:
              workerThreads: 2
            jobs:
              - jobName: hangs
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 1
                jobErrorHandlerType: c-recorder
                props:
                  c.wait.ms: 3000
                  c.wait.ignore-cancel: yes
                  shardwork.item.timeout.seconds: 0.2
              - jobName: healthy
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("hangs")
        await harness.waitForFires("healthy")
        #expect(harness.lines(containing: "recorded failure: job=hangs item=0 origin=1 code=0 message=the item did not finish within its timeout of 0.2 seconds").count == 1)
        // The hanging item still holds a thread; the pool replaced it, so both jobs fire again.
        harness.advance(toSecond: 2)
        await harness.waitForFires("hangs", count: 2)
        await harness.waitForFires("healthy", count: 2)
        #expect(harness.lines(containing: "echo healthy item 1/2").count == 2)
        await harness.host.shutdown()
    }

    @Test("shutdown waits for running items, then leaves the registry")
    func shutdownDrains() async throws {
        let harness = try await HostHarness("""
            host:
              shutdownTimeoutSeconds: 30
            jobs:
              - jobName: batch
                jobType: c-wait
                shardingTotalCount: 2
                props:
                  c.wait.ms: 300
            """)
        try await harness.host.start()
        try await harness.host.trigger("batch")
        let runtime = try #require(harness.host.runtimes["batch"])
        #expect(await eventually { runtime.isRunning })
        await harness.host.shutdown()
        #expect(harness.lines(containing: "waited 300 ms").count == 2)
        #expect(harness.lines(containing: "stopped after").isEmpty)
    }

    @Test("past the shutdown deadline, running items are asked to stop")
    func shutdownDeadline() async throws {
        let harness = try await HostHarness("""
            host:
              shutdownTimeoutSeconds: 0.2
            jobs:
              - jobName: batch
                jobType: c-wait
                shardingTotalCount: 1
                monitorExecution: true
                props:
                  c.wait.ms: 20000
            """)
        try await harness.host.start()
        try await harness.host.trigger("batch")
        // The item's running marker is written just before it starts: the fire is past its
        // registry work (which the shutdown would otherwise interrupt instead).
        #expect(await eventually { (try? await harness.registry.exists("/batch/sharding/0/running", watch: nil)) != nil })
        await harness.host.shutdown()
        await harness.waitFor("item 0 stopped after")
    }

    @Test("monitorExecution: running markers exist while the items run, written in one transaction, and go after")
    func runningMarkers() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: watched
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 3
                monitorExecution: true
                props:
                  c.wait.ms: 400
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        let registry = harness.registry
        #expect(await eventually { (try? await registry.exists("/watched/sharding/2/running", watch: nil)) != nil })
        var transactions = Set<Int64>()
        for item in 0..<3 {
            let (data, stat) = try await registry.data("/watched/sharding/\(item)/running", watch: nil)
            #expect(String(decoding: data, as: UTF8.self) == "10.0.0.1@-@7")
            #expect(stat.ephemeralOwner != 0)  // failover is off: ephemeral
            transactions.insert(stat.createdTransaction)
        }
        #expect(transactions.count == 1)
        await harness.waitForFires("watched")
        for item in 0..<3 {
            #expect(try await registry.exists("/watched/sharding/\(item)/running", watch: nil) == nil)
        }
        await harness.host.shutdown()
    }

    @Test("trigger runs a one-off job once; triggers during a run add one run, not more")
    func triggers() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: once
                jobType: c-wait
                shardingTotalCount: 1
                props:
                  c.wait.ms: 300
            """)
        try await harness.host.start()
        try await harness.host.trigger("once")
        let runtime = try #require(harness.host.runtimes["once"])
        #expect(await eventually { runtime.isRunning })
        try await harness.host.trigger("once")
        try await harness.host.trigger("once")
        await harness.waitForFires("once", count: 2)
        #expect(await eventually { !runtime.isRunning })
        #expect(harness.lines(containing: "item 0 waited 300 ms").count == 2)
        #expect(harness.fireEnds("once").map(\.source) == [.trigger, .trigger])
        await harness.host.shutdown()
    }

    @Test("executor strategies decide a fire's concurrency", arguments: [
        ("", 4), ("jobExecutorThreadPoolSizeProviderType: SINGLE_THREAD", 1),
        ("jobExecutorThreadPoolSizeProviderType: fixed\n    props:\n      fixed.threads: 3", 3),
    ])
    func executorStrategies(line: String, threads: Int) async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: j
                jobType: c-echo
                shardingTotalCount: 1
                \(line)
            """)
        #expect(harness.host.runtimes["j"]?.job.threadCount == threads)
    }

    @Test("a job the plugins refuse stops the host before anything starts, naming the job and the field", arguments: [
        ("jobType: nope", "job 'bad': jobType: unknown job type 'nope'"),
        ("jobType: c-echo\n    jobShardingStrategyType: AVERAGE_ALLOCATION", "job 'bad': jobShardingStrategyType: unknown sharding strategy 'AVERAGE_ALLOCATION'"),
        ("jobType: c-echo\n    jobExecutorThreadPoolSizeProviderType: fixed", "job 'bad': props.fixed.threads: The property `fixed.threads` is required."),
        ("jobType: c-echo\n    jobListenerTypes: [audit]", "job 'bad': jobListenerTypes: unknown job listener 'audit'"),
        ("jobType: c-echo\n    cron: 0 0 0 * * *", "job 'bad': cron: invalid cron expression '0 0 0 * * *'"),
        ("jobType: c-echo\n    timeZone: Mars/Base", "job 'bad': timeZone: invalid time zone 'Mars/Base'"),
        ("jobType: c-echo\n    props:\n      c.reject: yes", "job 'bad': props.c.reject: the property `c.reject` is set"),
        ("jobType: SCRIPT", "job 'bad': props.script.command.line: The property `script.command.line` is required."),
        ("jobType: c-echo\n    jobErrorHandlerType: webhook", "job 'bad': props.webhook.url: The property `webhook.url` is required."),
    ])
    func refusedJobs(lines: String, phrase: String) async throws {
        do {
            _ = try await HostHarness("""
                jobs:
                  - jobName: bad
                    shardingTotalCount: 1
                    \(lines)
                """)
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains(phrase), "\(error)")
        }
    }

    @Test("process isolation: an item that crashes fails alone; other jobs fire, and the job runs again in a new worker")
    func isolatedCrash() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: fragile
                jobType: c-crash
                cron: "* * * * * ?"
                shardingTotalCount: 2
                shardingItemParameters: 0=crash,1=fine
                jobErrorHandlerType: c-recorder
                props:
                  shardwork.isolation: process
              - jobName: sturdy
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 1
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("fragile")
        await harness.waitForFires("sturdy")
        #expect(harness.lines(containing: "item 1 survived").count == 1)
        #expect(harness.lines(containing: "recorded failure: job=fragile item=0 origin=1 code=0 message=the job's worker process").count == 1)
        #expect(harness.lines(containing: "crashed: Segmentation fault (signal 11)").count >= 1)
        harness.advance(toSecond: 2)
        await harness.waitForFires("fragile", count: 2)
        await harness.waitForFires("sturdy", count: 2)
        #expect(harness.lines(containing: "item 1 survived").count == 2)
        await harness.host.shutdown()
    }

    @Test("process isolation: log lines and failure codes come back from the worker")
    func isolatedEcho() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: far
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                shardingItemParameters: 1=fail
                jobErrorHandlerType: c-recorder
                props:
                  shardwork.isolation: process
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("far")
        #expect(harness.lines(containing: "echo far item 0/2 parameter (none) task far@-@0,1@-@READY@-@10.0.0.1@-@7").count == 1)
        #expect(harness.lines(containing: "recorded failure: job=far item=1 origin=1 code=7 message=item 1 failed on purpose").count == 1)
        await harness.host.shutdown()
    }

    @Test("process isolation: an item that hangs and ignores cancellation is ended by killing its worker")
    func isolatedHang() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: stuck
                jobType: c-wait
                cron: "*/5 * * * * ?"
                shardingTotalCount: 1
                jobErrorHandlerType: c-recorder
                props:
                  c.wait.ms: 60000
                  c.wait.ignore-cancel: yes
                  shardwork.item.timeout.seconds: 0.3
                  shardwork.isolation: process
            """)
        try await harness.host.start()
        harness.advance(toSecond: 5)
        await harness.waitFor("warning: the worker process did not stop a cancelled item within its grace; killing it grace.seconds=2.0 item=0 pid=")
        await harness.waitFor("recorded failure: job=stuck item=0 origin=1 code=0 message=the item did not finish within its timeout of 0.3 seconds")
        // The fire has ended before the next instant (a fire that found it running would be skipped).
        let runtime = try #require(harness.host.runtimes["stuck"])
        #expect(await eventually { !runtime.isRunning })
        harness.advance(toSecond: 10)
        await harness.waitForFires("stuck", count: 2)
        await harness.host.shutdown()
    }
}
