import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

/// What the ledger says after a chaos run.
struct ChaosSummary: CustomStringConvertible {
    var starts = 0
    var completions = 0
    var cancelled = 0
    /// Item starts with no successful completion of the same item at the same or a newer epoch
    /// that began no earlier. (An instance whose failover run was stopped by fencing, and whose
    /// claim outlived the fence in the same session, runs the item again under the same epoch.)
    var lost: [LedgerEvent] = []
    /// Every ledger line of the lost starts' items from their start on: what became of them.
    var lostHistory: [LedgerEvent] = []
    var staleOverlaps: [String] = []

    init(_ events: [LedgerEvent], before: Int64) {
        let ends = events.filter(\.isEnd)
        starts = events.filter { $0.isStart && $0.start < before }.count
        completions = ends.filter { $0.cancelled == false }.count
        cancelled = ends.filter { $0.cancelled == true }.count
        for start in events where start.isStart && start.start < before {
            let completed = ends.contains { end in
                end.job == start.job && end.item == start.item && end.cancelled == false
                    && end.start >= start.start && end.epoch >= start.epoch
            }
            if !completed { lost.append(start) }
        }
        lostHistory = events.filter { event in
            lost.contains { $0.job == event.job && $0.item == event.item && event.start >= $0.start }
        }
        staleOverlaps = overlapsWithStaleEpochs(events)
    }

    var description: String {
        "\(starts) item starts, \(completions) completions, \(cancelled) stopped by fencing, \(lost.count) never completed, "
            + "\(staleOverlaps.count) overlapping runs without a newer epoch"
    }
}

@Suite("Chaos: hosts killed, stopped and ZooKeeper restarted at random", .timeLimit(.minutes(30)))
struct ChaosTests {
    /// SHARDWORK_CHAOS_SECONDS sets how long faults go on (default 60, the CI run); the README
    /// shows the long run.
    @Test("no item of a failover job is lost, no two runs of an item overlap without a newer epoch, every host fires again")
    func chaos() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seconds = Double(environment["SHARDWORK_CHAOS_SECONDS"] ?? "") ?? 60
        let seed = UInt64(environment["SHARDWORK_CHAOS_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max)
        var random = SplitMix64(seed: seed)
        print("chaos: seed \(seed) (SHARDWORK_CHAOS_SEED replays it), faults for \(Int(seconds)) s")

        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.stopAll() }
        let cluster = try await Cluster(ensemble: ensemble, sessionTimeout: 2000)
        let jobs = cluster.job("chaos-a", total: 4, cron: "0/3 * * * * ?", failover: true, workMilliseconds: 1200) + "\n"
            + cluster.job("chaos-b", total: 3, cron: "0/4 * * * * ?", failover: true, workMilliseconds: 2000)
        let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        for ip in ips { try cluster.start(ip, jobs: jobs) }
        #expect(await waitUntil {
            let a = await cluster.instances("chaos-a").count
            let b = await cluster.instances("chaos-b").count
            return a == 3 && b == 3
        })

        var faults: [String] = []
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            try await Task.sleep(for: .milliseconds(Int.random(in: 2000...5000, using: &random)))
            let ip = ips.randomElement(using: &random)!
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                faults.append("kill -9 \(ip)")
                await cluster.stop(ip, signal: SIGKILL)
                try await Task.sleep(for: .milliseconds(Int.random(in: 500...3000, using: &random)))
                try cluster.start(ip, jobs: jobs)
            case 1:
                let pause = Int.random(in: 1000...4000, using: &random)
                faults.append("SIGSTOP \(ip) for \(pause) ms")
                cluster.hosts[ip]?.signal(SIGSTOP)
                try await Task.sleep(for: .milliseconds(pause))
                cluster.hosts[ip]?.signal(SIGCONT)
            default:
                let down = Int.random(in: 300...1500, using: &random)
                faults.append("ZooKeeper down for \(down) ms")
                await ensemble.stop(1)
                try await Task.sleep(for: .milliseconds(down))
                try await ensemble.restart(1)
            }
        }
        let quiet = now()
        print("chaos: \(faults.count) faults: \(faults.joined(separator: "; "))")

        // Faults stop: every host fires again, and what was taken over gets done.
        for ip in ips {
            let again = await cluster.waitForEvent(seconds: 60) { $0.isEnd && $0.ip == ip && $0.start > quiet && $0.cancelled == false }
            #expect(again != nil, "\(ip) did not fire again after the faults stopped: \(cluster.logs())")
        }
        try await Task.sleep(for: .seconds(10))
        let summary = ChaosSummary(cluster.events, before: quiet)
        print("chaos: \(summary)")
        #expect(summary.starts > 0)
        #expect(summary.lost.isEmpty, "seed \(seed): never completed: \(summary.lost.prefix(10)); their items' ledger since: \(summary.lostHistory.prefix(40)) \(cluster.logs())")
        #expect(summary.staleOverlaps.isEmpty, "seed \(seed): \(summary.staleOverlaps.prefix(10))")
        await cluster.stopAll()
    }
}
