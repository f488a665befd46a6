// ZooKeeper costs of coordination, on a real ZooKeeper server (Debian's package, started here on a
// free loopback port):
//  1. writes per fire per job: client-side counts of write requests (ZooKeeperRegistry.statistics),
//     checked against the server's own counts (the zxid from `srvr`, and `mntr`), with 1, 10 and 100
//     items, monitorExecution off and on;
//  2. the time from a membership change (a host joins or leaves) to the new assignment in the
//     registry, with 100 items and 10 hosts;
//  3. the largest job a configuration accepts (1,024 items, the longest names): how long its
//     fires take, first, steady, and after a resharding.
// Run with scripts/benchmark; results in docs/performance.md.
import Foundation
import Logging
import ShardworkSDK
import ShardworkCore
import ShardworkTestSupport

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ZooKeeperBenchmark: \(message)\n".utf8))
    exit(1)
}

func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

let binDirectory = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
    .deletingLastPathComponent().path
let logger = {
    var logger = Logger(label: "benchmark")
    logger.logLevel = .error
    return logger
}()
let providers = ProviderRegistry()
_ = PluginLoader(logger: logger).loadAll(PluginSearchPath(), into: providers)
guard (try? providers.resolve(.jobType, "log-item")) != nil else { fail("the example-jobs plugin is not in \(binDirectory)") }

let ensemble: ZooKeeperEnsemble
do {
    ensemble = try await ZooKeeperEnsemble.start()
} catch {
    fail("\(error)")
}
let scratch = try TemporaryDirectory("shardwork-zk-benchmark")

func registry(_ namespace: String) async -> ZooKeeperRegistry {
    var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace)
    configuration.sessionTimeoutMilliseconds = 10_000
    do {
        return try await ZooKeeperRegistry.connect(configuration, logger: logger)
    } catch {
        fail("\(error)")
    }
}

func host(_ yaml: String, registry: ZooKeeperRegistry, ip: String) async -> ShardworkHost {
    do {
        let configuration = try HostConfigurationReader.parse(yaml)
        let host = try await ShardworkHost(
            configuration: configuration, providers: providers, registry: registry, instance: .local(ip: ip), logger: logger)
        try await host.start()
        return host
    } catch {
        fail("\(error)")
    }
}

/// `mntr` counters that move with requests.
func monitor() async -> [String: Int64] {
    guard let values = try? await ensemble.monitor() else { return [:] }
    return values.compactMapValues { Int64($0) }
}

// MARK: 1. Writes per fire

print("## ZooKeeper requests per fire, one host, one job firing every second")
print()
print("| items | monitorExecution | fires | client writes / fire | of which multi | client reads / fire | server transactions / fire (zxid) | server requests / fire (`mntr`) |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
let measuredSeconds = 10
for items in [1, 10, 100] {
    for monitorExecution in [false, true] {
        let namespace = "writes-\(items)-\(monitorExecution)"
        let ledger = scratch.file("\(namespace).jsonl")
        let yaml = """
            jobs:
              - jobName: writes
                jobType: log-item
                cron: "* * * * * ?"
                shardingTotalCount: \(items)
                monitorExecution: \(monitorExecution)
                props:
                  log-item.ledger: \(ledger)
            """
        let registry = await registry(namespace)
        let running = await host(yaml, registry: registry, ip: "127.0.0.21")
        // Warm up: registration, election and the first sharding happen around the first fire.
        // Then start the window half-way between two fires, so that every fire inside it has
        // finished its writes before the window closes.
        try await Task.sleep(for: .seconds(3))
        try await Task.sleep(for: .milliseconds(1500 - Int(now() % 1000)))
        let start = now()
        let client0 = registry.statistics.snapshot
        let zxid0 = (try? await ensemble.lastZxid()) ?? 0
        let mntr0 = await monitor()
        try await Task.sleep(for: .seconds(measuredSeconds))
        let client1 = registry.statistics.snapshot
        let zxid1 = (try? await ensemble.lastZxid()) ?? 0
        let mntr1 = await monitor()
        let end = now()
        await running.shutdown()
        // Fires that ran inside the window: their items' lines, by fire time.
        let text = (try? String(contentsOfFile: ledger, encoding: .utf8)) ?? ""
        var fires = Set<Int64>()
        for line in text.split(separator: "\n") {
            guard let range = line.range(of: "\"fire\":"), let fire = Int64(line[range.upperBound...].prefix { $0.isNumber }) else { continue }
            if fire >= start && fire < end { fires.insert(fire) }
        }
        let count = Double(max(fires.count, 1))
        func per(_ value: Int) -> String { String(format: "%.2f", Double(value) / count) }
        func per64(_ value: Int64) -> String { String(format: "%.2f", Double(value) / count) }
        let synced = (mntr1["zk_sync_processor_request_queued"] ?? 0) - (mntr0["zk_sync_processor_request_queued"] ?? 0)
        print("| \(items) | \(monitorExecution ? "on" : "off") | \(fires.count) | \(per(client1.writes - client0.writes)) | "
            + "\(per(client1.multis - client0.multis)) | \(per(client1.reads - client0.reads)) | \(per64(zxid1 - zxid0)) | \(per64(synced)) |")
    }
}

// MARK: 2. Membership change to new assignment

print()
print("## Membership change to new assignment, 100 items, 10 hosts, a fire every second")
print()
let namespace = "membership"
let jobYAML = """
    jobs:
      - jobName: members
        jobType: log-item
        cron: "* * * * * ?"
        shardingTotalCount: 100
        monitorExecution: true
    """
let observer = await registry(namespace)

/// The distinct owners of the 100 items, and whether a resharding is still pending.
func assignment() async -> (owners: Set<String>, pending: Bool) {
    var owners = Set<String>()
    for item in 0..<100 {
        if let owner = try? await observer.string("/members/sharding/\(item)/instance") { owners.insert(owner) }
    }
    let pending = ((try? await observer.exists("/members/leader/sharding/necessary", watch: nil)) ?? nil) != nil
    return (owners, pending)
}

var hosts: [(ShardworkHost, ZooKeeperRegistry)] = []
for index in 1...9 {
    let registry = await registry(namespace)
    hosts.append((await host(jobYAML, registry: registry, ip: "127.0.0.\(30 + index)"), registry))
}
func waitForOwners(_ count: Int, since start: ContinuousClock.Instant) async -> (flag: Duration?, done: Duration) {
    var flagSeen: Duration?
    while true {
        let (owners, pending) = await assignment()
        if pending, flagSeen == nil { flagSeen = ContinuousClock.now - start }
        if owners.count == count && !pending { return (flagSeen, ContinuousClock.now - start) }
        if ContinuousClock.now - start > .seconds(30) { fail("no assignment over \(count) hosts after 30 s") }
        try? await Task.sleep(for: .milliseconds(5))
    }
}
_ = await waitForOwners(9, since: .now)

func ms(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    return String(format: "%.0f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
}
var joins: [Duration] = []
var leaves: [Duration] = []
var joinFlags: [Duration] = []
var leaveFlags: [Duration] = []
for _ in 0..<5 {
    // Start at a random point of the second, so that the wait for the next fire is sampled fairly.
    try await Task.sleep(for: .milliseconds(Int.random(in: 0..<1000)))
    let joining = ContinuousClock.now
    let registry = await registry(namespace)
    let newcomer = await host(jobYAML, registry: registry, ip: "127.0.0.40")
    let joined = await waitForOwners(10, since: joining)
    joins.append(joined.done)
    if let flag = joined.flag { joinFlags.append(flag) }

    try await Task.sleep(for: .milliseconds(Int.random(in: 0..<1000)))
    let leaving = ContinuousClock.now
    await newcomer.shutdown()
    let left = await waitForOwners(9, since: leaving)
    leaves.append(left.done)
    if let flag = left.flag { leaveFlags.append(flag) }
}
for (running, _) in hosts { await running.shutdown() }
await observer.close()
print("| change | trials | resharding flag set after (median) | new assignment after: median | max |")
print("|---|---:|---:|---:|---:|")
for (name, times, flags) in [("a host joins", joins, joinFlags), ("a host leaves", leaves, leaveFlags)] {
    let sorted = times.sorted()
    let flagMedian = flags.sorted().dropFirst(flags.count / 2).first.map(ms) ?? "-"
    print("| \(name) | \(sorted.count) | \(flagMedian) | \(ms(sorted[sorted.count / 2])) | \(ms(sorted.last!)) |")
}

// MARK: 3. The largest job

print()
print("## The largest job: \(JobLimits.maximumShardingTotalCount) items, the longest job name and namespace, monitorExecution and failover")
print()
let largestNamespace = String("largest-job-benchmark".padding(toLength: RegistryNames.maximumNamespaceBytes, withPad: "n", startingAt: 0))
let largestJob = String(repeating: "j", count: RegistryNames.maximumJobNameBytes)
let largestLedger = scratch.file("largest.jsonl")
let largestYAML = """
    jobs:
      - jobName: \(largestJob)
        jobType: log-item
        cron: "0/5 * * * * ?"
        shardingTotalCount: \(JobLimits.maximumShardingTotalCount)
        monitorExecution: true
        failover: true
        props:
          log-item.ledger: \(largestLedger)
    """

/// Each fire's last item end, by fire time, from the ledger.
func lastEnds() -> [Int64: (items: Int, lastEnd: Int64)] {
    var fires: [Int64: (items: Int, lastEnd: Int64)] = [:]
    let text = (try? String(contentsOfFile: largestLedger, encoding: .utf8)) ?? ""
    for line in text.split(separator: "\n") where line.hasPrefix("{\"event\":\"end\"") {
        guard let fireRange = line.range(of: "\"fire\":"), let fire = Int64(line[fireRange.upperBound...].prefix { $0.isNumber }),
              let endRange = line.range(of: "\"end\":"), let end = Int64(line[endRange.upperBound...].prefix { $0.isNumber })
        else { continue }
        let previous = fires[fire] ?? (0, 0)
        fires[fire] = (previous.items + 1, max(previous.lastEnd, end))
    }
    return fires
}

/// The first complete fire after `time`: every item ended. Its instant to its last item's end.
func nextCompleteFire(after time: Int64) async -> Int64 {
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        if let (fire, entry) = lastEnds().filter({ $0.key > time && $0.value.items >= JobLimits.maximumShardingTotalCount }).min(by: { $0.key < $1.key }) {
            return entry.lastEnd - fire
        }
        try? await Task.sleep(for: .milliseconds(100))
    }
    fail("no complete fire of the largest job after \(time)")
}

let startedLargest = now()
var largestHosts: [ShardworkHost] = []
for index in 1...2 {
    largestHosts.append(await host(largestYAML, registry: await registry(largestNamespace), ip: "127.0.0.\(50 + index)"))
}
let firstFire = await nextCompleteFire(after: startedLargest)
let steadyFire = await nextCompleteFire(after: startedLargest + firstFire + 5_000)
let joinedAt = now()
largestHosts.append(await host(largestYAML, registry: await registry(largestNamespace), ip: "127.0.0.53"))
let reshardedFire = await nextCompleteFire(after: joinedAt)
for running in largestHosts { await running.shutdown() }
print("| fire | instant to the last item's end |")
print("|---|---:|")
print("| the first, sharding over 2 hosts | \(firstFire) ms |")
print("| a steady one, 2 hosts | \(steadyFire) ms |")
print("| the one after a third host joined, resharding over 3 | \(reshardedFire) ms |")
ensemble.stopAll()
