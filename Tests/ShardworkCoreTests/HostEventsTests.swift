import Foundation
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing

@Suite("Host events", .stopsWhatItStarts)
struct HostEventsTests {
    @Test("a subscriber's iteration ends when the host stops")
    func endsWithHost() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 1
            """)
        let subscription = harness.host.events.subscribe()
        let reading = Task {
            var count = 0
            for await _ in subscription { count += 1 }
            return count
        }
        try await harness.host.start()
        await harness.host.shutdown()
        #expect(await reading.value >= 1, "at least the job's adoption")
        #expect(!harness.host.events.isObserved)
        // Subscribed after the host stopped: nothing will come, and the iteration says so at once.
        var late = 0
        for await _ in harness.host.events.subscribe() { late += 1 }
        #expect(late == 0 && !harness.host.events.isObserved)
    }

    @Test("a fire is a start and an end event: items, source, epochs, plugin and version, outcomes, times")
    func fireEvents() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
            """)
        try await harness.host.start()
        let runtime = try #require(harness.host.runtimes["orders"])
        let first = (HostHarness.start / 1000 + 1) * 1000
        harness.advance(toSecond: 1)
        await harness.waitForFires("orders")
        // The leader shards at the first fire, then runs it.
        let kinds = harness.events.kinds(job: "orders")
        #expect(kinds.contains(.leaderElected(job: "orders")))
        #expect(kinds.contains { if case .sharded(job: "orders", items: 3, instances: 1, _, _) = $0 { true } else { false } })
        let start = try #require(harness.events.fireStarts("orders").first)
        #expect(start.fireTime == first && start.source == .schedule && start.items == [0, 1, 2])
        #expect(start.startedAt == first && start.lagMilliseconds == 0, "the manual clock stands still")
        #expect(start.jobType == "c-echo" && start.plugin == "c-test" && !start.pluginVersion.isEmpty)
        #expect(start.epochs.keys.sorted() == [0, 1, 2])
        let end = try #require(harness.fireEnds("orders").first)
        #expect(end.fireTime == first && end.source == .schedule && end.items == [0, 1, 2] && end.runs == 1)
        #expect(end.outcomes[0] == .succeeded && end.outcomes[2] == .succeeded)
        #expect(end.failedItems == [1] && !end.succeeded && end.fenced.isEmpty)
        #expect(end.startedAt == first && end.endedAt >= end.startedAt)
        let startIndex = try #require(kinds.firstIndex { if case .fireStarted = $0 { true } else { false } })
        let endIndex = try #require(kinds.firstIndex { if case .fireEnded = $0 { true } else { false } })
        #expect(startIndex < endIndex)

        // The next fire is armed ahead and started by its wave: the same events.
        harness.clock.advance(to: first + 1000 - 100)
        #expect(await eventually { runtime.armedDeadline == first + 1000 })
        harness.advance(toSecond: 2)
        await harness.waitForFires("orders", count: 2)
        #expect(runtime.armedFireCount == 1)
        let armedStart = try #require(harness.events.fireStarts("orders").last)
        #expect(armedStart.fireTime == first + 1000 && armedStart.source == .schedule && armedStart.items == [0, 1, 2])
        #expect(armedStart.epochs == start.epochs && armedStart.plugin == "c-test")
        let armedEnd = try #require(harness.fireEnds("orders").last)
        #expect(armedEnd.fireTime == first + 1000 && armedEnd.failedItems == [1] && armedEnd.startedAt == first + 1000)

        // A trigger runs at the moment it is asked for.
        harness.clock.advance(to: first + 1500)
        runtime.trigger()
        await harness.waitForFires("orders", count: 3)
        let triggered = try #require(harness.fireEnds("orders").last)
        #expect(triggered.source == .trigger && triggered.fireTime == first + 1500)
        #expect(harness.events.dropped == 0)
        await harness.host.shutdown()
    }

    @Test("a fire late by more than a second with misfire off is a missed fire, and runs nothing")
    func missedFire() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0/10 * * * * ?"
                shardingTotalCount: 1
                misfire: false
            """)
        try await harness.host.start()
        let start = HostHarness.start / 1000
        let instant = (start / 10 + 1) * 10 * 1000
        // The clock jumps past the instant by 3 s (the host was paused): the timer comes late.
        harness.clock.advance(to: instant + 3000)
        let missed = await harness.events.waitFor { if case .missedFire(job: "orders", _, _) = $0 { true } else { false } }
        #expect(missed)
        #expect(harness.events.kinds(job: "orders").contains(.missedFire(job: "orders", fireTime: instant, lateMilliseconds: 3000)))
        #expect(harness.fireEnds("orders").isEmpty)
        await harness.host.shutdown()
    }

    @Test("operations through a host's API are events of that host")
    func operations() async throws {
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 2
            """)
        try await harness.host.start()
        let operations = harness.host.operations
        _ = try await operations.disableItem(job: "orders", item: 1)
        _ = try await operations.enableItem(job: "orders", item: 1)
        _ = try await operations.trigger(job: "orders")
        let performed = await harness.events.waitFor(count: 3) { if case .operationPerformed = $0 { true } else { false } }
        #expect(performed)
        #expect(harness.events.kinds().filter { if case .operationPerformed = $0 { true } else { false } } == [
            .operationPerformed(operation: "disable", job: "orders", detail: "item 1"),
            .operationPerformed(operation: "enable", job: "orders", detail: "item 1"),
            .operationPerformed(operation: "trigger", job: "orders", detail: "1 instance(s)"),
        ])
        // The trigger reaches the host through the registry, and runs the job.
        await harness.waitForFires("orders")
        #expect(harness.fireEnds("orders").first?.source == .trigger)
        await harness.host.shutdown()
    }
}

@Suite("Host events in a cluster", .stopsWhatItStarts)
struct ClusterEventsTests {
    @Test("failover as events: the crashed host fences; the live host queues its running item, takes it with a newer epoch and runs it")
    func failover() async throws {
        let cluster = try await ClusterHarness("""
            jobs:
              - jobName: batch
                jobType: c-wait
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 2
                monitorExecution: true
                failover: true
                props:
                  c.wait.ms: 6000
            """, hosts: 2)
        // Six seconds of the machine's time: the victim's item still runs when its session expires,
        // even under load (with 1.5 s it once ended first, cleared its marker, and left nothing to
        // fail over).
        try await cluster.startAll()
        let (survivor, victim) = (cluster.hosts[0], cluster.hosts[1])
        try await survivor.host.trigger("batch")
        // Each host runs one item.
        let peer = cluster.server.connect()
        let running = await eventually {
            await (0..<2).asyncAllSatisfy { (try? await peer.exists("/batch/sharding/\($0)/running", watch: nil)) != nil }
        }
        #expect(running)
        let victimStart = try #require(await {
            _ = await victim.events.waitFor { if case .fireStarted = $0 { true } else { false } }
            return victim.events.fireStarts("batch").first
        }())
        let item = try #require(victimStart.items.first)
        victim.registry.expire()

        #expect(await victim.events.waitFor { if case .registry(.fenced) = $0 { true } else { false } })
        #expect(victim.events.kinds().contains(.registry(.sessionExpired)))
        let taken = await survivor.events.waitFor { if case .failoverTaken(job: "batch", item: item, _) = $0 { true } else { false } }
        #expect(taken, "\(survivor.events.kinds())")
        let kinds = survivor.events.kinds(job: "batch")
        #expect(kinds.contains(.failoverQueued(job: "batch", items: [item])))
        let epoch = try #require(kinds.compactMap { if case .failoverTaken(_, item, let epoch) = $0 { epoch } else { nil } }.first)
        #expect(epoch > (victimStart.epochs[item] ?? 0), "a newer epoch than the crashed owner's")
        #expect(await survivor.events.waitFor { if case .fireEnded(let end) = $0 { end.source == .failover } else { false } })
        let rerun = try #require(survivor.events.fireStarts("batch").first { $0.source == .failover })
        #expect(rerun.items == [item] && rerun.epochs == [item: epoch])
        let end = try #require(survivor.events.fireEnds("batch").first { $0.source == .failover })
        #expect(end.outcomes == [item: .succeeded])
        await peer.close()
        await cluster.shutdownAll()
    }
}

extension Sequence {
    func asyncAllSatisfy(_ predicate: (Element) async -> Bool) async -> Bool {
        for element in self where await !predicate(element) { return false }
        return true
    }
}
