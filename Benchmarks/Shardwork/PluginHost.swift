// Benchmarks of the plugin host: loading and registering one plugin, and sharding a large job.
import Benchmark
import Foundation
import Logging
import ShardworkCore
import ShardworkSDK

/// The directory of this executable: the release build directory, where the built-in plugins and
/// (put there by scripts/benchmark) the C example plugin are.
let buildDirectory = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
    .deletingLastPathComponent().path

let quietLogger: Logger = {
    var logger = Logger(label: "benchmark")
    logger.logLevel = .critical
    return logger
}()

/// `count` copies of a plugin under unique paths: `dlopen` returns the cached image for a path (and
/// an inode) it has seen, so every measured load needs a file of its own, as a hot-load would.
func copies(of file: String, count: Int) -> [String] {
    let directory = NSTemporaryDirectory() + "shardwork-bench-\(getpid())-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return (0..<count).map { index in
        let copy = "\(directory)/\(index)-\(URL(fileURLWithPath: file).lastPathComponent)"
        try? FileManager.default.copyItem(atPath: file, toPath: copy)
        return copy
    }
}

let loadIterations = 200

func pluginHostBenchmarks() {
    let plugins = [
        ("standard-sharding (Swift, 3 providers)", "libShardworkStandardSharding.so"),
        ("standard-executors (Swift, 3 providers)", "libShardworkStandardExecutors.so"),
        ("standard-error-handlers (Swift, 3 providers)", "libShardworkStandardErrorHandlers.so"),
        ("hello-c (C, 2 providers)", "libhello_c.so"),
    ]
    for (label, fileName) in plugins {
        let source = "\(buildDirectory)/\(fileName)"
        Benchmark(
            "Load and register a plugin: \(label)",
            configuration: .init(
                metrics: [.wallClock, .mallocCountTotal],
                maxDuration: .seconds(20), maxIterations: loadIterations)
        ) { benchmark, files in
            // Each iteration loads its own copy into a fresh registry.
            let file = files[benchmark.currentIteration % files.count]
            benchmark.startMeasurement()
            switch PluginLoader(logger: quietLogger).load(file) {
            case .success(let plugin):
                do {
                    try ProviderRegistry().register(plugin)
                } catch {
                    benchmark.error("\(error)")
                }
            case .failure(let refusal):
                benchmark.error("\(refusal)")
            }
            benchmark.stopMeasurement()
        } setup: {
            copies(of: source, count: loadIterations + 10)
        }
    }

    Benchmark(
        "Load and register a plugin with a trial load in a child process: standard-sharding",
        configuration: .init(metrics: [.wallClock], maxDuration: .seconds(20), maxIterations: 30)
    ) { benchmark, files in
        let file = files[benchmark.currentIteration % files.count]
        let loader = PluginLoader(logger: quietLogger, preflight: .shardwork(executable: "\(buildDirectory)/shardwork"))
        benchmark.startMeasurement()
        guard case .success(let plugin) = loader.load(file) else {
            benchmark.error("the plugin was refused")
            return
        }
        try? ProviderRegistry().register(plugin)
        benchmark.stopMeasurement()
    } setup: {
        copies(of: "\(buildDirectory)/libShardworkStandardSharding.so", count: 40)
    }

    let instances = (0..<1000).map { "10.0.\($0 / 256).\($0 % 256)@-@\(1000 + $0)" }
    for strategyName in ["average", "odd-even", "round-robin"] {
        Benchmark(
            "Shard 1,024 items (the most a job may have) over 1,000 instances: \(strategyName)",
            configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxDuration: .seconds(10))
        ) { benchmark, strategy in
            for _ in benchmark.scaledIterations {
                blackHole(try? strategy.shard(jobName: "orderSyncJob", instances: instances, totalCount: JobLimits.maximumShardingTotalCount))
            }
        } setup: { () -> ShardingStrategyInstance in
            let registry = ProviderRegistry()
            _ = PluginLoader(logger: quietLogger).loadAll(PluginSearchPath(), into: registry)
            guard let provider = try? registry.resolve(.shardingStrategy, strategyName),
                  let strategy = try? ShardingStrategyInstance(provider, setup: ProviderSetup(jobName: "orderSyncJob", providerName: strategyName))
            else { fatalError("the standard sharding plugin did not load from \(buildDirectory)") }
            return strategy
        }
    }

    // Trying jobs' providers in a separate process before the host makes them: what a host pays
    // at start (all its jobs in one trial process) and for each job it adopts or checks.
    for count in [1, 100] {
        Benchmark(
            "Trial of \(count) job(s)' providers in a separate process",
            configuration: .init(metrics: [.wallClock], maxDuration: .seconds(20), maxIterations: 30)
        ) { benchmark, plans in
            // A new set of trials each time: verdicts are kept by fingerprint.
            let trials = JobTrials(executable: "\(buildDirectory)/shardwork", children: ChildProcessSet(), logger: quietLogger)
            benchmark.startMeasurement()
            let verdicts = trials.verdicts(for: plans, processorCount: 2)
            benchmark.stopMeasurement()
            if verdicts.values.contains(where: { $0 != .passed }) { benchmark.error("a trial did not pass: \(verdicts)") }
        } setup: { () -> [JobPlan] in
            let registry = ProviderRegistry()
            _ = PluginLoader(logger: quietLogger).loadAll(PluginSearchPath(), into: registry)
            return (0..<count).compactMap { index in
                try? JobCatalog.plan(JobConfiguration(jobName: "job-\(index)", jobType: "log-item", cron: "* * * * * ?", shardingTotalCount: 4), providers: registry)
            }
        }
    }
}
