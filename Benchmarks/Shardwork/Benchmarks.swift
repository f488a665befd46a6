// Shardwork's benchmarks. Run with scripts/benchmark; results are recorded in docs/performance.md.
import Benchmark

let benchmarks: @Sendable () -> Void = {
    pluginHostBenchmarks()
    registryBenchmarks()
}
