// Trigger lag: how late items start after their cron instant, with 1, 1,000 and 10,000 jobs that
// each fire every second, on one host with the embedded registry; and the host's threads, resident
// memory and CPU time (per second of wall time, 100 % = one core). Run with scripts/benchmark;
// results in docs/performance.md.
//
// With --history, each host also writes its execution history to a SQLite file (docs/history.md),
// and the table adds the rows written and dropped per second.
//
// With --metrics, each host also records its metrics (docs/metrics.md) into a Prometheus registry,
// and the table adds what one scrape costs at the end of the run: the gauges sampled and the whole
// exposition rendered (median of three), its size and its series.
//
// With --waves, a line per second follows each row: the p50 and max of that second's fires (the lag
// samples in the order they were taken, one job count at a time), to tell one slow second from a
// slow run.
//
// Usage: TriggerLagBenchmark [--history] [--metrics] [--waves] [--warm-up SECONDS] [job counts...]
//        (default: 3 seconds of warm-up; 1 1000 10000 jobs)
import Foundation
import Logging
import Metrics
import Prometheus
import ShardworkCore
import ShardworkHistory

typealias Take = @convention(c) (UnsafeMutablePointer<Int64>?, UInt64) -> UInt64

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("TriggerLagBenchmark: \(message)\n".utf8))
    exit(1)
}

/// Threads and resident memory of this process, from /proc.
func processStatus() -> (threads: Int, residentMegabytes: Double) {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    var threads = 0
    var resident = 0.0
    for line in status.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2 else { continue }
        if parts[0] == "Threads" { threads = Int(parts[1]) ?? 0 }
        if parts[0] == "VmRSS" { resident = (Double(parts[1].split(separator: " ").first ?? "0") ?? 0) / 1024 }
    }
    return (threads, resident)
}

/// CPU time (user and system) this process has used so far, in seconds.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1_000_000 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

func percentile(_ sorted: [Int64], _ fraction: Double) -> Int64 {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
}

let binDirectory = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
    .deletingLastPathComponent().path
let probePath = binDirectory + "/liblag_probe.so"
guard let probeHandle = dlopen(probePath, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE),
      let takeSymbol = dlsym(probeHandle, "lag_probe_take")
else { fail("\(probePath) is missing; scripts/benchmark builds it") }
let take = unsafeBitCast(takeSymbol, to: Take.self)

var logger = Logger(label: "benchmark")
logger.logLevel = .warning
let providers = ProviderRegistry()
let report = PluginLoader(logger: logger).loadAll(PluginSearchPath(files: [probePath]), into: providers)
guard report.refused.isEmpty else { fail("plugins refused: \(report.refused)") }

let counts = CommandLine.arguments.dropFirst().enumerated()
    .filter { $0.offset == 0 || CommandLine.arguments[$0.offset] != "--warm-up" }
    .compactMap { Int($0.element) }
let withHistory = CommandLine.arguments.contains("--history")
let perWave = CommandLine.arguments.contains("--waves")
let withMetrics = CommandLine.arguments.contains("--metrics")
let prometheus = PrometheusCollectorRegistry()
if withMetrics {
    var factory = PrometheusMetricsFactory(registry: prometheus)
    factory.durationHistogramBuckets = MetricNames.histogramBuckets
    MetricsSystem.bootstrap(factory)
}
// `--warm-up SECONDS`: longer for what starts slowly (the metrics' first series at 10,000 jobs).
let warmUpSeconds = CommandLine.arguments.firstIndex(of: "--warm-up").flatMap { index in
    CommandLine.arguments.dropFirst(index + 1).first.flatMap { Int($0) }
} ?? 3
let measuredSeconds = 10
print("| jobs | fires measured | p50 | p90 | p99 | max | threads | resident memory | CPU |"
    + (withHistory ? " history rows written/s | dropped |" : "") + (withMetrics ? " scrape | scrape size | series |" : ""))
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + (withHistory ? "---:|---:|" : "") + (withMetrics ? "---:|---:|---:|" : ""))
for jobs in counts.isEmpty ? [1, 1_000, 10_000] : counts {
    var yaml = "host:\n  shutdownTimeoutSeconds: 5\njobs:\n"
    for index in 0..<jobs {
        yaml += "  - jobName: probe-\(index)\n    jobType: lag-probe\n    cron: \"* * * * * ?\"\n    shardingTotalCount: 1\n"
    }
    let configuration: HostConfiguration
    let host: ShardworkHost
    var writer: HistoryWriter?
    var writing: Task<Void, Never>?
    var metrics: HostMetrics?
    var recording: Task<Void, Never>?
    let database = NSTemporaryDirectory() + "/shardwork-lag-history-\(getpid())-\(jobs).sqlite"
    do {
        configuration = try HostConfigurationReader.parse(yaml)
        host = try await ShardworkHost(configuration: configuration, providers: providers, registry: EmbeddedRegistry.standalone(), logger: logger)
        if withHistory {
            let store = try SQLiteHistoryStore(path: database)
            try await store.prepare()
            let history = HistoryWriter(store: store, events: host.events, instance: host.services.instance, hostname: "benchmark", logger: logger)
            let subscription = history.subscribe()
            writing = Task { await history.run(subscription) }
            writer = history
        }
        if withMetrics {
            let hostMetrics = HostMetrics(host: host, build: .init(version: "benchmark"))
            let subscription = hostMetrics.subscribe()
            recording = Task { await hostMetrics.run(subscription) }
            metrics = hostMetrics
        }
        try await host.start()
    } catch {
        fail("\(error)")
    }
    try await Task.sleep(for: .seconds(warmUpSeconds))
    var buffer = [Int64](repeating: 0, count: 8 * 1024 * 1024)
    _ = buffer.withUnsafeMutableBufferPointer { take($0.baseAddress, UInt64($0.count)) }  // drop the warm-up
    let cpuBefore = cpuSeconds()
    let writtenBefore = writer?.written ?? 0
    let droppedBefore = writer?.dropped ?? 0
    var status = processStatus()
    try await Task.sleep(for: .seconds(measuredSeconds))
    status = processStatus()
    let cpu = (cpuSeconds() - cpuBefore) / Double(measuredSeconds)
    let count = buffer.withUnsafeMutableBufferPointer { take($0.baseAddress, UInt64($0.count)) }
    let written = (writer?.written ?? 0) - writtenBefore
    let dropped = (writer?.dropped ?? 0) - droppedBefore
    // One scrape as the metrics endpoint answers it, timed while the jobs still fire.
    var scrape = ""
    if let metrics {
        var times: [Double] = []
        var size = 0
        var exposition: [UInt8] = []
        for _ in 0..<3 {
            let started = ContinuousClock.now
            metrics.sample()
            exposition = prometheus.emitToBuffer()
            let elapsed = ContinuousClock.now - started
            times.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
            size = exposition.count
        }
        let series = exposition.split(separator: UInt8(ascii: "\n")).filter { $0.first != UInt8(ascii: "#") }.count
        scrape = String(format: " %.1f ms | %.1f MB | %d |", times.sorted()[1], Double(size) / 1_048_576, series)
    }
    await host.shutdown()
    await recording?.value
    await writing?.value
    _ = await writer?.finish(within: .seconds(30))
    await writer?.store.close()
    for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: database + suffix) }
    let lags = buffer.prefix(Int(count)).sorted()
    func ms(_ microseconds: Int64) -> String { String(format: "%.2f ms", Double(microseconds) / 1000) }
    print("| \(jobs) | \(count) (expected about \(jobs * measuredSeconds)) | \(ms(percentile(lags, 0.5))) | \(ms(percentile(lags, 0.9))) | \(ms(percentile(lags, 0.99))) | "
        + "\(ms(lags.last ?? 0)) | \(status.threads) | \(String(format: "%.0f MB", status.residentMegabytes)) | \(String(format: "%.1f %%", cpu * 100)) |"
        + (withHistory ? " \(written / measuredSeconds) | \(dropped) |" : "") + scrape)
    if perWave {
        let taken = Array(buffer.prefix(Int(count)))
        let waves = stride(from: 0, to: taken.count, by: jobs).map { start in taken[start..<min(start + jobs, taken.count)].sorted() }
        print("  per second (p50 / max): " + waves.map { "\(ms(percentile($0, 0.5))) / \(ms($0.last ?? 0))" }.joined(separator: ", "))
    }
}
