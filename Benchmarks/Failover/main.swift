// Failover latency: from kill -9 of the host running an item to the item's start on another host,
// with real `shardwork run` processes on a real ZooKeeper server, 20 trials each with session
// timeouts of 2 s and 10 s. Run with scripts/benchmark; results in docs/performance.md.
//
// Usage: FailoverBenchmark [trials]   (default 20)
import Foundation
import ShardworkCore
import ShardworkTestSupport

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("FailoverBenchmark: \(message)\n".utf8))
    exit(1)
}

func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

struct Event: Decodable {
    var event: String
    var item: Int
    var task: String
    var start: Int64
    var ip: String { task.components(separatedBy: "@-@").dropFirst(3).first ?? "" }
}

let binDirectory = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
    .deletingLastPathComponent().path
let shardwork = binDirectory + "/shardwork"
guard FileManager.default.isExecutableFile(atPath: shardwork) else { fail("no shardwork binary in \(binDirectory)") }
let trials = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 20

let ensemble: ZooKeeperEnsemble
do {
    ensemble = try await ZooKeeperEnsemble.start()
} catch {
    fail("\(error)")
}
let directory = try TemporaryDirectory("shardwork-failover-benchmark")

final class Host {
    let process: SpawnedProcess
    let guardian: ChildGuard

    init(ip: String, config: String, log: String) throws {
        process = try SpawnedProcess(shardwork, ["run", "--config", config, "--ip", ip], log: log)
        guardian = try ChildGuard(process.pid)
    }

    func kill9() {
        process.signal(SIGKILL)
        process.waitForExitBlocking()
        guardian.release()
    }
}

func events(_ ledger: String) -> [Event] {
    guard let text = try? String(contentsOfFile: ledger, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(Event.self, from: Data($0.utf8)) }
}

func waitFor(_ ledger: String, seconds: Double, _ condition: (Event) -> Bool) async -> Event? {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if let match = events(ledger).first(where: condition) { return match }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return nil
}

func percentile(_ sorted: [Int64], _ fraction: Double) -> Int64 {
    sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
}

print("## Failover latency: kill -9 to the item's start on another host")
print()
print("| session timeout | trials | p50 | p90 | p99 | max | target (timeout + 500 ms) |")
print("|---:|---:|---:|---:|---:|---:|---|")
for timeout in [2000, 10000] {
    let ledger = directory.file("ledger-\(timeout).jsonl")
    // One item: the instance with the higher id (127.0.0.12) gets it; 127.0.0.11 stays idle and
    // takes it over at once (ElasticJob's notification execution).
    let config = directory.file("host-\(timeout).yaml")
    try """
        registry:
          zookeeper:
            serverLists: "\(ensemble.connectString)"
            namespace: failover-\(timeout)
            sessionTimeoutMilliseconds: \(timeout)
        host:
          shutdownTimeoutSeconds: 2
        plugins:
          preflight: false
        jobs:
          - jobName: latency
            jobType: log-item
            cron: "0/3 * * * * ?"
            shardingTotalCount: 1
            monitorExecution: true
            failover: true
            props:
              log-item.ledger: \(ledger)
              log-item.work.milliseconds: 2500
        """.write(toFile: config, atomically: true, encoding: .utf8)
    let standby = try Host(ip: "127.0.0.11", config: config, log: directory.file("standby-\(timeout).log"))
    var latencies: [Int64] = []
    for trial in 0..<trials {
        let since = now()
        let runner = try Host(ip: "127.0.0.12", config: config, log: directory.file("runner-\(timeout)-\(trial).log"))
        guard await waitFor(ledger, seconds: 30, { $0.event == "start" && $0.ip == "127.0.0.12" && $0.start >= since }) != nil else {
            fail("trial \(trial): the item never started on 127.0.0.12")
        }
        let killed = now()
        runner.kill9()
        guard let taken = await waitFor(ledger, seconds: Double(timeout) / 1000 + 30, {
            $0.event == "start" && $0.ip == "127.0.0.11" && $0.start >= killed
        }) else {
            fail("trial \(trial): the item was never taken over")
        }
        latencies.append(taken.start - killed)
        // Let the taken-over run end before the next trial's host joins.
        try await Task.sleep(for: .seconds(3))
    }
    standby.kill9()
    let sorted = latencies.sorted()
    func ms(_ value: Int64) -> String { "\(value) ms" }
    let p99 = percentile(sorted, 0.99)
    print("| \(timeout / 1000) s | \(sorted.count) | \(ms(percentile(sorted, 0.5))) | \(ms(percentile(sorted, 0.9))) | \(ms(p99)) | "
        + "\(ms(sorted.last!)) | \(p99 <= Int64(timeout) + 500 ? "met" : "not met") |")
}
ensemble.stopAll()
