import Foundation
@testable import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// Fires armed ahead of their instant and started together, by the instant's wave (see
/// `JobRuntime.arm(deadline:)`), on a host driven by a manual clock.
@Suite("Fire waves", .stopsWhatItStarts)
struct FireWaveTests {
    /// The instant `seconds` whole seconds after the harness's start.
    static func instant(_ seconds: Int64) -> Int64 { (HostHarness.start / 1000 + seconds) * 1000 }

    /// Moves the clock to just before the instant `second` and waits until every one of
    /// `runtimes` has its fire for that instant armed.
    static func arm(_ runtimes: [JobRuntime], forSecond second: Int64, in harness: HostHarness,
                    sourceLocation: SourceLocation = #_sourceLocation) async {
        harness.clock.advance(to: instant(second) - 100)
        let armed = await eventually { runtimes.allSatisfy { $0.armedDeadline == instant(second) } }
        #expect(armed, "not every fire of :0\(second) was armed", sourceLocation: sourceLocation)
    }

    /// Jobs of the `c-echo` type, one item each, firing every second.
    static func echoJobs(_ names: [String]) -> String {
        "jobs:\n" + names.map(echoJob).joined()
    }

    /// One entry of a `jobs:` list: a `c-echo` job of one item firing every second.
    static func echoJob(_ name: String) -> String {
        "  - jobName: \(name)\n    jobType: c-echo\n    cron: \"* * * * * ?\"\n    shardingTotalCount: 1\n"
    }

    /// One entry of a `jobs:` list: a `c-wait` job whose one item takes two seconds, firing at :01
    /// and :03 only.
    static func slowJob(_ name: String) -> String {
        "  - jobName: \(name)\n    jobType: c-wait\n    cron: \"1,3 * * * * ?\"\n    shardingTotalCount: 1\n"
            + "    props:\n      c.wait.ms: 2000\n"
    }

    /// How many times item 0 of a one-item echo job started for the instant `second`.
    static func echoes(of job: String, at second: Int64, in harness: HostHarness) -> Int {
        harness.lines(containing: "echo \(job) item 0/1").filter { $0.contains("fired \(instant(second))") }.count
    }

    /// Writes a new configuration for a job into the registry and waits until the host applied it.
    static func apply(_ configuration: JobConfiguration, in harness: HostHarness) async throws {
        let path = "/\(configuration.jobName)/config"
        let job = configuration.jobName
        let applied: @Sendable (HostEvent.Kind) -> Bool = { if case .configurationApplied(job: job, _) = $0 { true } else { false } }
        let before = harness.events.count(applied)
        _ = try await harness.registry.setData(path, data: [UInt8](utf8: ElasticJobYAML.encode(configuration)), version: nil)
        #expect(await harness.events.waitFor(count: before + 1, applied))
    }

    @Test("every fire armed for an instant starts once from its wave; long items of some jobs hold none of the others back")
    func wideWave() async throws {
        // 48 jobs, six of the wave's chunks: three whose items take seconds (firing at :01 and :03
        // only; the harness starts at :00.5), 45 quick ones, one of which fails an item on purpose.
        var yaml = "host:\n  workerThreads: 4\njobs:\n"
        for index in 0..<3 { yaml += Self.slowJob("slow-\(index)") }
        for index in 0..<45 {
            yaml += """
                  - jobName: quick-\(index)
                    jobType: c-echo
                    cron: "* * * * * ?"
                    shardingTotalCount: 2
                    jobErrorHandlerType: c-recorder
                    shardingItemParameters: "\(index == 7 ? "1=fail" : "0=a")"

                """
        }
        let harness = try await HostHarness(yaml)
        try await harness.host.start()
        let slow = try (0..<3).map { try #require(harness.host.runtimes["slow-\($0)"]) }
        let quick = try (0..<45).map { try #require(harness.host.runtimes["quick-\($0)"]) }
        func echoes(at second: Int64) -> Int {
            harness.lines(containing: "echo quick-").filter { $0.contains("fired \(Self.instant(second))") }.count
        }

        // :01, the first fires: every job shards, so they take the general path.
        harness.advance(toSecond: 1)
        #expect(await eventually { echoes(at: 1) == 89 }, "\(echoes(at: 1)) of 89 echoes at :01")
        #expect(await eventually { slow.allSatisfy { !$0.isRunning } }, "the slow items of :01 ended")
        // And the quick fires of :01 ended too (their items echoed, but a fire ends after them: the
        // failing item's error handler, the end's report): a job still running at :02 would rightly
        // take :02 as a misfire, run after :01 the general way.
        #expect(await eventually { quick.allSatisfy { !$0.isRunning } }, "the quick fires of :01 ended")

        // :02: the quick jobs, armed 250 ms ahead, start from the wave.
        await Self.arm(quick, forSecond: 2, in: harness)
        harness.advance(toSecond: 2)
        #expect(await eventually { echoes(at: 2) == 89 }, "\(echoes(at: 2)) of 89 echoes at :02")
        #expect(await eventually { quick.allSatisfy { !$0.isRunning } })
        #expect(quick.allSatisfy { $0.armedFireCount == 1 })

        // :03: the slow items hold three of the four runners for two seconds; every quick fire of
        // the wave still starts while they run.
        await Self.arm(slow + quick, forSecond: 3, in: harness)
        harness.advance(toSecond: 3)
        #expect(await eventually { echoes(at: 3) == 89 }, "\(echoes(at: 3)) of 89 echoes at :03")
        #expect(harness.lines(containing: "item 0 waited 2000 ms").count == 3, "the quick fires waited for the slow items of :03")
        #expect(await eventually { (slow + quick).allSatisfy { !$0.isRunning } })
        #expect(quick.allSatisfy { $0.armedFireCount == 2 } && slow.allSatisfy { $0.armedFireCount == 1 })
        #expect(harness.lines(containing: "item 0 waited 2000 ms").count == 6)

        // Once per fire, never twice; the failing item went to its error handler every time.
        for second: Int64 in 1...3 {
            for index in 0..<45 {
                let lines = harness.lines(containing: "echo quick-\(index) item 0/2").filter { $0.contains("fired \(Self.instant(second))") }
                #expect(lines.count == 1, "quick-\(index) at :0\(second): \(lines.count) starts of item 0")
            }
        }
        #expect(await eventually {
            harness.lines(containing: "recorded failure: job=quick-7 item=1 origin=1 code=7").count == 3
        })
        await harness.host.shutdown()
    }

    @Test("a fire whose wave comes while the job's previous fire still runs is a misfire: recorded and run once after it, or skipped with misfire off",
          arguments: [true, false])
    func misfireInWave(misfire: Bool) async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: slow
                jobType: c-wait
                cron: "* * * * * ?"
                shardingTotalCount: 1
                misfire: \(misfire)
                props:
                  c.wait.ms: 3000
            """)
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["slow"])
        // :01 shards and runs; :02 is armed and its wave starts it.
        harness.advance(toSecond: 1)
        await harness.waitForFires("slow")
        await Self.arm([runtime], forSecond: 2, in: harness)
        harness.advance(toSecond: 2)
        #expect(await eventually { runtime.armedFireCount == 1 && runtime.isRunning })
        // :03 is armed while :02 runs; its wave finds the job running.
        await Self.arm([runtime], forSecond: 3, in: harness)
        harness.advance(toSecond: 3)
        await harness.waitForFires("slow", count: misfire ? 3 : 2)
        #expect(await eventually { !runtime.isRunning })
        #expect(runtime.armedFireCount == 1, "the wave did not start the fire that found the job running")
        #expect(harness.lines(containing: "item 0 waited 3000 ms").count == (misfire ? 3 : 2))
        let third = Self.instant(3)
        #expect(harness.events.kinds(job: "slow").filter { if case .misfire = $0 { true } else { false } } == [
            .misfire(job: "slow", fireTime: third, kept: misfire),
        ])
        // With misfire on, the fire of :03 runs after :02's, as a misfire.
        #expect(harness.fireEnds("slow").map(\.source) == (misfire ? [.schedule, .schedule, .misfire] : [.schedule, .schedule]))
        await harness.host.shutdown()
    }

    @Test("a fire whose wave cannot start it before the next instant (every worker busy) starts late, and the next instant counts as a misfire")
    func busyWorkers() async throws {
        let harness = try await HostHarness("""
            host:
              workerThreads: 1
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 1
                misfire: true
            """)
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        await Self.arm([runtime], forSecond: 2, in: harness)
        // The only worker thread is taken by something else across :02 and :03.
        let gate = DispatchSemaphore(value: 0)
        harness.host.services.pool.submit { gate.wait() }
        harness.advance(toSecond: 2)
        harness.clock.advance(to: Self.instant(3) - 100)
        try await Task.sleep(for: .milliseconds(100))
        #expect(runtime.armedDeadline == Self.instant(2), "the fire of :02 stays armed until its wave starts it")
        harness.advance(toSecond: 3)
        #expect(await harness.events.waitFor { $0 == .misfire(job: "orders", fireTime: Self.instant(3), kept: true) })
        gate.signal()
        // :02 runs, then once more for the fire of :03 that found it pending. (The misfire marker
        // written meanwhile changed the job's registry state, so the fire of :02 may take the
        // general path, which runs both in one fire.)
        #expect(await eventually { Self.echoes(of: "orders", at: 2, in: harness) == 2 && !runtime.isRunning }, "\(harness.log.messages)")
        #expect(await harness.events.waitFor { if case .fireEnded(let end) = $0 { end.runs == 2 || end.source == .misfire } else { false } })
        #expect(Self.echoes(of: "orders", at: 3, in: harness) == 0)
        await harness.host.shutdown()
        #expect(Self.echoes(of: "orders", at: 2, in: harness) == 2, "no more runs")
    }

    @Test("fires that ended are ended, and start events said, even while their runner is held up in a later fire's long item")
    func endsNotHeldUp() async throws {
        var yaml = "host:\n  workerThreads: 1\njobs:\n" + Self.slowJob("slow")
        for index in 0..<6 { yaml += Self.echoJob("quick-\(index)") }
        let harness = try await HostHarness(yaml)
        try await harness.host.start()
        let slow = try #require(harness.host.runtimes["slow"])
        let quick = try (0..<6).map { try #require(harness.host.runtimes["quick-\($0)"]) }
        harness.advance(toSecond: 1)
        #expect(await eventually { harness.events.count { if case .fireEnded = $0 { true } else { false } } == 7 && !slow.isRunning })
        harness.advance(toSecond: 2)
        #expect(await eventually { harness.events.count { if case .fireEnded = $0 { true } else { false } } == 13 })
        // A new cron for the slow job (the same instant :03 next) schedules its key again, after
        // the quick jobs' keys: it is armed last, and the one runner starts the quick fires first.
        harness.clock.advance(to: Self.instant(3) - 300)
        var changed = JobConfiguration(jobName: "slow", jobType: "c-wait", cron: "3 * * * * ?", shardingTotalCount: 1)
        // Six seconds of the machine's time: both looks below happen while it runs, even under load.
        changed.props = JobProperties(["c.wait.ms": "6000"])
        try await Self.apply(changed, in: harness)
        await Self.arm(quick + [slow], forSecond: 3, in: harness)
        harness.advance(toSecond: 3)
        let endedMeanwhile = await eventually(seconds: 2.5) {
            let echoed = harness.lines(containing: "echo quick-").filter { $0.contains("fired \(Self.instant(3))") }.count
            return echoed == 6 && quick.allSatisfy { !$0.isRunning } && slow.isRunning
        }
        #expect(endedMeanwhile, "the quick fires stayed running while the slow item held their runner")
        // The runner's start events are said meanwhile too (they wait for the wave's starts, not
        // for its items), each before its fire's end.
        let slowStarted = await eventually(seconds: 2.5) {
            harness.events.fireStarts("slow").contains { $0.fireTime == Self.instant(3) && $0.startedAt == Self.instant(3) } && slow.isRunning
        }
        #expect(slowStarted, "the held-up fire's start event waited for its long item")
        for index in 0..<6 {
            let kinds = harness.events.kinds(job: "quick-\(index)")
            let start = kinds.firstIndex { if case .fireStarted(let start) = $0 { start.fireTime == Self.instant(3) } else { false } }
            let end = kinds.firstIndex { if case .fireEnded(let end) = $0 { end.fireTime == Self.instant(3) } else { false } }
            #expect(start != nil && end != nil && start! < end!, "quick-\(index): its start event came after its end")
        }
        #expect(await eventually { !slow.isRunning })
        await harness.host.shutdown()
    }

    @Test("a new cron applied after a fire was armed: the armed fire is dropped, and the job fires by the new schedule only")
    func cronChangedAfterArming() async throws {
        let harness = try await HostHarness(Self.echoJobs(["orders", "other"]))
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        // Each instant only once both jobs' fires of the one before have ended.
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders", count: 1)
        await harness.waitForFires("other", count: 1)
        harness.advance(toSecond: 2)
        await harness.waitForFires("orders", count: 2)
        await harness.waitForFires("other", count: 2)
        await Self.arm([runtime], forSecond: 3, in: harness)
        let changed = JobConfiguration(jobName: "orders", jobType: "c-echo", cron: "*/5 * * * * ?", shardingTotalCount: 1)
        try await Self.apply(changed, in: harness)
        #expect(runtime.armedDeadline == nil)
        // The other job's wave comes at :03; nothing of orders fires then, and it fires at :05.
        harness.advance(toSecond: 3)
        await harness.waitForFires("other", count: 3)
        harness.advance(toSecond: 4)
        await harness.waitForFires("other", count: 4)
        harness.advance(toSecond: 5)
        await harness.waitForFires("orders", count: 3)
        #expect(Self.echoes(of: "orders", at: 3, in: harness) == 0)
        #expect(Self.echoes(of: "orders", at: 5, in: harness) == 1)
        await harness.host.shutdown()
    }

    @Test("an arming under way when the job's preparation is replaced arms nothing")
    func armingVoidedByReplacement() async throws {
        let harness = try await HostHarness(Self.echoJobs(["orders"]))
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        // Without a cached snapshot the arming reads one on a task; the preparation is replaced
        // (as a configuration change or a hot-load does) before that read comes back.
        runtime.coordinator.invalidateCache()
        runtime.arm(deadline: Self.instant(2))
        runtime.replace(with: runtime.job)
        try await Task.sleep(for: .milliseconds(300))
        #expect(runtime.armedDeadline == nil, "a fire prepared before the replacement was armed")
        // The next arming is not affected.
        await Self.arm([runtime], forSecond: 2, in: harness)
        await harness.host.shutdown()
    }

    @Test("a job stopped after its fire was armed does not fire at that instant")
    func stoppedJob() async throws {
        let harness = try await HostHarness(Self.echoJobs(["orders"]))
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        await Self.arm([runtime], forSecond: 2, in: harness)
        runtime.stop()
        #expect(runtime.armedDeadline == nil)
        harness.advance(toSecond: 2)
        try await Task.sleep(for: .milliseconds(200))
        #expect(harness.lines(containing: "fired \(Self.instant(2))").isEmpty)
        #expect(runtime.armedFireCount == 0)
        await harness.host.shutdown()
    }
}
