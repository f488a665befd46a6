import Foundation
import ShardworkCore
import ShardworkHistory
import ShardworkTestSupport
import Testing

@Suite("Execution history of a cluster on PostgreSQL", .timeLimit(.minutes(5)))
struct HistoryClusterTests {
    @Test("three hosts on ZooKeeper write one PostgreSQL history; after one is killed with -9 it matches the ledger item for item, failover runs marked, none left running that completed")
    func matchesTheLedger() async throws {
        let postgres = try await SharedPostgres.server()
        let login = try await postgres.createDatabase()
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let tracing = """
            tracing:
              type: postgresql
              postgresql:
                host: \(login.host)
                port: \(login.port)
                database: \(login.database)
                user: \(login.user)
                password: \(login.password)
            """
        let job = cluster.job("traced", total: 3, cron: "0/5 * * * * ?", failover: true, workMilliseconds: 2000)
        let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        for ip in ips { try cluster.start(ip, jobs: job, extra: tracing) }
        #expect(await waitUntil(seconds: 60) { await cluster.instances("traced").count == 3 }, "\(cluster.logs())")
        let victim = try #require(await cluster.waitForEvent(seconds: 60) { $0.isStart && $0.ip == "127.0.0.13" }, "\(cluster.logs())")
        let killed = now()
        await cluster.stop("127.0.0.13", signal: SIGKILL)
        // Its item runs again elsewhere (a failover run: its fire time is when it was taken, not a
        // whole five seconds), then the survivors fire on the schedule once more.
        let recovered = try #require(await cluster.waitForEvent(seconds: 60) { event in
            event.isEnd && event.item == victim.item && event.ip != "127.0.0.13" && event.start >= killed
                && event.cancelled == false && event.fire % 5000 != 0
        }, "\(cluster.logs())")
        _ = await cluster.waitForEvent(seconds: 60) { $0.isEnd && $0.start > recovered.end ?? 0 && $0.fire % 5000 == 0 }
        await cluster.stopAll()

        let store = PostgresHistoryStore(.init(
            host: login.host, port: login.port, database: login.database, username: login.user, password: login.password))
        let rows = try await store.executions(ExecutionQuery(jobName: "traced", limit: ExecutionQuery.maximumLimit))
        await store.close()
        let survivors = Set(cluster.events.filter { $0.ip != "127.0.0.13" }.map(\.instance))
        let ends = cluster.events.filter { $0.isEnd && $0.job == "traced" && survivors.contains($0.instance) }
        #expect(!ends.isEmpty)
        // Every execution the surviving hosts ended is one completed row, with the same instance,
        // item and fire; those that ran as they should succeeded.
        for end in ends {
            let matching = rows.filter { $0.instanceID == end.instance && $0.item == end.item && $0.fireTime == end.fire }
            #expect(matching.count == 1 && matching.first?.completeTime != nil, "\(end): \(matching)")
            if end.cancelled == false { #expect(matching.first?.outcome == .succeeded, "\(end): \(matching)") }
        }
        // The run that took over the killed host's item says so.
        let failover = rows.first { $0.instanceID == recovered.instance && $0.item == recovered.item && $0.fireTime == recovered.fire }
        #expect(failover?.source == .failover && failover?.elasticJobSource == "FAILOVER", "\(String(describing: failover))")
        // No row of the survivors is left running; nothing is in the history that their ledger lacks.
        let survivorRows = rows.filter { survivors.contains($0.instanceID) }
        #expect(survivorRows.allSatisfy { $0.completeTime != nil }, "\(survivorRows.filter { $0.completeTime == nil })")
        #expect(survivorRows.count == ends.count, "\(survivorRows.count) rows for \(ends.count) ledger ends")
    }
}
