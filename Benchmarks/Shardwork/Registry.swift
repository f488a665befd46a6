// Benchmarks of the embedded registry: the cost of the node operations coordination is made of.
import Benchmark
import ShardworkCore

func registryBenchmarks() {
    let payload = [UInt8](utf8: "{\"shardingItem\":3,\"status\":\"running\"}")
    Benchmark(
        "Embedded registry: create + setData + data of one node",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(10))
    ) { benchmark in
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/jobs", data: [], mode: .persistent)
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            let path = "/jobs/job-\(index)"
            try await registry.create(path, data: payload, mode: .ephemeral)
            try await registry.setData(path, data: payload, version: 0)
            blackHole(try await registry.data(path, watch: nil))
        }
        benchmark.stopMeasurement()
        await registry.close()
    }

    Benchmark(
        "Embedded registry: a 10-item job's running markers, written and cleared in two transactions",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(10))
    ) { benchmark in
        let registry = EmbeddedRegistry.standalone()
        for item in 0..<10 { try await registry.ensurePath("/job/sharding/\(item)") }
        let id = [UInt8](utf8: "10.0.0.1@-@4242")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await registry.multi((0..<10).map { .create("/job/sharding/\($0)/running", data: id, mode: .ephemeral) })
            try await registry.multi((0..<10).map { .delete("/job/sharding/\($0)/running", version: nil) })
        }
        benchmark.stopMeasurement()
        await registry.close()
    }
}
