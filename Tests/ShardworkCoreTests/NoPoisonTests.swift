import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// A job can fail; the host cannot. Providers that crash or hang while they are made are tried in
/// a separate process first, and the job is set aside on the host, which runs the rest.
@Suite("No poison: jobs whose providers crash or hang", .timeLimit(.minutes(3)), .stopsWhatItStarts)
struct NoPoisonTests {
    static let sturdy = """
          - jobName: sturdy
            jobType: c-echo
            cron: "* * * * * ?"
            shardingTotalCount: 1
        """

    @Test("a job of the host's own file whose provider crashes while it is made is set aside at start; the host starts and fires the rest",
          arguments: [("c.crash.create", "crashed a separate trial process (Segmentation fault, signal 11)"),
                      ("c.hang.create", "did not finish within 1.0 seconds in a separate trial process, which was killed")])
    func configuredJob(property: String, reason: String) async throws {
        let harness = try await HostHarness("""
            plugins:
              preflightTimeoutSeconds: 1
            jobs:
              - jobName: fragile
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                props:
                  \(property): yes
            \(Self.sturdy)
            """)
        try await harness.host.start()
        #expect(harness.host.runtimes["fragile"] == nil && harness.host.runtimes["sturdy"] != nil)
        let recorded = try #require(harness.host.incapableJobs["fragile"])
        #expect(recorded.contains("making its providers \(reason)"), "\(recorded)")
        #expect(try await harness.string("/fragile/incapable/\(HostHarness.instance.id)")?.contains(reason) == true)
        // The job is in the registry for the cluster to see, without an instance of this host.
        #expect(try await harness.registry.exists("/fragile/config", watch: nil) != nil)
        #expect(try await harness.registry.exists("/fragile/instances/\(HostHarness.instance.id)", watch: nil) == nil)
        #expect(await harness.events.waitFor { if case .jobSetAside(job: "fragile", _) = $0 { true } else { false } })
        #expect(harness.events.kinds(job: "fragile").count { if case .jobSetAside = $0 { true } else { false } } == 1)
        harness.advance(toSecond: 1)
        await harness.waitForFires("sturdy")
        await harness.host.shutdown()
    }

    @Test("a job added to the cluster whose provider crashes is set aside by the host that would adopt it, and refused by the check the control API makes")
    func addedJob() async throws {
        let harness = try await HostHarness("jobs:\n" + Self.sturdy)
        try await harness.host.start()
        var job = JobConfiguration(jobName: "added", jobType: "c-echo", cron: "* * * * * ?", shardingTotalCount: 2)
        job.props = JobProperties([(key: "c.crash.create", value: "yes")])
        // What `job add` asks the host that serves it: never made there.
        do {
            _ = try await harness.host.validate(job, allowMissingPlugins: false)
            Issue.record("a job whose provider crashes was accepted")
        } catch {
            #expect(error.job == "added" && error.message.contains("crashed a separate trial process"), "\(error)")
        }
        // Written to the registry anyway (another host's API, an older version, a tool).
        try await ClusterOperations(registry: harness.registry).addJob(job, addedBy: "test")
        #expect(await eventually { harness.host.incapableJobs["added"]?.contains("crashed a separate trial process") == true })
        #expect(harness.host.runtimes["added"] == nil)
        harness.advance(toSecond: 1)
        await harness.waitForFires("sturdy")

        // Fixed in the registry: taken up at once.
        job.props = JobProperties()
        try await ClusterOperations(registry: harness.registry).updateConfiguration(job)
        #expect(await eventually { harness.host.runtimes["added"] != nil }, "\(harness.log.messages)")
        await harness.host.shutdown()
    }

    @Test("a new configuration in the registry whose provider crashes sets the running job aside; the host runs on")
    func changedConfiguration() async throws {
        let harness = try await HostHarness("jobs:\n" + Self.sturdy)
        try await harness.host.start()
        var changed = JobConfiguration(jobName: "sturdy", jobType: "c-echo", cron: "* * * * * ?", shardingTotalCount: 1)
        changed.props = JobProperties([(key: "c.crash.create", value: "yes")])
        try await ClusterOperations(registry: harness.registry).updateConfiguration(changed)
        #expect(await eventually { harness.host.incapableJobs["sturdy"]?.contains("crashed a separate trial process") == true })
        #expect(harness.host.runtimes["sturdy"] == nil)
        let stopped: @Sendable (HostEvent.Kind) -> Bool = { if case .jobStopped("sturdy", let reason) = $0 { reason.hasPrefix("set aside") } else { false } }
        #expect(await harness.events.waitFor(stopped))
        #expect(harness.events.count(stopped) == 1)
        await harness.host.shutdown()
    }

    @Test("a hot-loaded version whose providers crash when made is refused, naming the job; the running version stays")
    func hotLoadedVersion() async throws {
        let harness = try await HostHarness("jobs:\n" + Self.sturdy)
        try await harness.host.start()
        let crashing = try await CPluginBuilder.testPlugin(in: harness.plugins.path, named: "libc_next.so", defines: ["VARIANT_CRASH_CREATE"])
        switch await harness.host.loadPlugin(file: crashing) {
        case .success(let outcome):
            Issue.record("loaded: \(outcome)")
        case .failure(let error):
            #expect(error.code == .jobsRefused)
            #expect(error.reasons.contains { $0.job == "sturdy" && $0.message.contains("crashed a separate trial process") }, "\(error)")
        }
        harness.advance(toSecond: 1)
        await harness.waitForFires("sturdy")
        await harness.host.shutdown()
    }
}

/// Item timeouts bound what items that never stop can hold.
@Suite("No poison: items that ignore their timeout", .timeLimit(.minutes(3)), .stopsWhatItStarts)
struct ItemTimeoutTests {
    @Test("an in-process item that ignores its timeout holds one thread, is not started again while it runs, and is reported once")
    func inProcess() async throws {
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
                  c.wait.ms: 20000
                  c.wait.ignore-cancel: yes
                  shardwork.item.timeout.seconds: 0.2
            """)
        try await harness.host.start()
        let pool = harness.host.services.pool
        for second in 1...6 {
            harness.advance(toSecond: Int64(second))
            await harness.waitForFires("hangs", count: second)
        }
        // One run, one held thread: without the rule every fire started the item again, stuck again,
        // and left one more thread behind.
        #expect(harness.lines(containing: "item 0 starts waiting").count == 1)
        #expect(pool.stuckThreads == 1)
        #expect(pool.threads <= pool.size + 1, "\(pool.threads) threads")
        // Said once, with the item and the threads held.
        let abandoned = harness.events.kinds(job: "hangs").filter { if case .itemAbandoned = $0 { true } else { false } }
        #expect(abandoned == [.itemAbandoned(job: "hangs", item: 0, threadsHeld: 1)], "\(abandoned)")
        #expect(harness.lines(containing: "recorded failure: job=hangs item=0 origin=1 code=0 message=not started: its run given up on at its timeout is still running").count == 5)
        await harness.host.shutdown()
    }

    @Test("the pool adds at most its size in threads for items that never return; past that its capacity shrinks, its thread count does not grow")
    func poolCap() {
        let pool = WorkerPool(size: 2)
        let release = DispatchSemaphore(value: 0)
        for _ in 0..<6 {
            pool.submit { release.wait() }
            pool.markStuck()
        }
        #expect(eventuallyBlocking { pool.threads == 4 })
        usleep(100_000)
        #expect(pool.threads == 4 && pool.stuckThreads == 6)
        for _ in 0..<6 {
            release.signal()
            pool.releaseStuck()
        }
        pool.shutdown()
    }

    @Test("an isolated item that ignores its timeout takes only itself down: healthy items sent to its worker finish, then the worker is killed")
    func isolated() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: mixed
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 2
                shardingItemParameters: 0=60000,1=800
                jobErrorHandlerType: c-recorder
                props:
                  c.wait.ignore-cancel: yes
                  shardwork.item.timeout.seconds: 3
                  shardwork.isolation: process
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitFor("recorded failure: job=mixed item=0 origin=1 code=0 message=the item did not finish within its timeout")
        // Item 0 was asked to stop and goes on; 2 s later its worker is condemned. A fire now sends
        // item 1 to that worker while it still serves.
        try await Task.sleep(for: .milliseconds(1500))
        harness.advance(toSecond: 2)
        await harness.waitFor("the worker process did not stop a cancelled item within its grace")
        await harness.waitFor("item 1 waited 800 ms", count: 2)
        await harness.waitForFires("mixed", count: 2)
        #expect(harness.lines(containing: "recorded failure: job=mixed item=1").isEmpty, "\(harness.log.messages)")
        harness.advance(toSecond: 3)
        await harness.waitFor("item 1 waited 800 ms", count: 3)
        #expect(harness.lines(containing: "recorded failure: job=mixed item=1").isEmpty, "\(harness.log.messages)")
        await harness.host.shutdown()
    }
}
