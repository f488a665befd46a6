import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("Standard sharding strategies")
struct ShardingStrategyTests {
    @Test("Java's String.hashCode over UTF-16 code units, for every job name in the test data")
    func javaHashCode() throws {
        for vector in try ShardingVector.all() {
            #expect(javaStringHashCode(vector.jobName) == vector.javaHashCode, "job name \(vector.jobName)")
        }
        #expect(javaStringHashCode("📦job") == 1_268_530_900)
        #expect(javaStringHashCode("\u{E9}") == 233)
        #expect(javaStringHashCode("e\u{301}") == 3900)
        #expect(javaStringHashCode("polygenelubricants") == Int32.min)
    }

    @Test("every case of ElasticJob's own strategy classes, keys in order, through the plugin's C table")
    func elasticJobVectors() throws {
        let registry = try TestPlugins.standardRegistry()
        let vectors = try ShardingVector.all()
        #expect(vectors.count == 305)
        for vector in vectors {
            let provider = try registry.resolve(.shardingStrategy, vector.strategy)
            let strategy = try ShardingStrategyInstance(provider, setup: TestPlugins.setup(vector.strategy, job: vector.jobName))
            let result = try strategy.shard(
                jobName: vector.jobName, instances: vector.instances, totalCount: vector.totalCount)
            #expect(result.entries.map(\.instanceID) == vector.expected.map(\.instance), "\(vector.source)")
            #expect(result.entries.map(\.items) == vector.expected.map(\.items), "\(vector.source)")
        }
    }

    @Test("ElasticJob's unit-test cases are among the vectors")
    func unitTestCasesPresent() throws {
        let sources = Set(try ShardingVector.all().map(\.source))
        #expect(sources.filter { $0.hasPrefix("unit-test:") }.count == 11)
    }

    @Test("round-robin where ElasticJob throws: a name hashing to Int32.min with 3 instances")
    func roundRobinMinimumHash() throws {
        let registry = try TestPlugins.standardRegistry()
        let strategy = try ShardingStrategyInstance(
            try registry.resolve(.shardingStrategy, "round-robin"), setup: TestPlugins.setup("round-robin", job: "polygenelubricants"))
        let instances = ["a", "b", "c"]
        let result = try strategy.shard(jobName: "polygenelubricants", instances: instances, totalCount: 10)
        // 2^31 % 3 == 2: rotated left by two.
        #expect(result.entries.map(\.instanceID) == ["c", "a", "b"])
        #expect(result.entries.map(\.items) == [[0, 1, 2, 9], [3, 4, 5], [6, 7, 8]])
        #expect(result.entries.flatMap(\.items).sorted() == Array(0..<10))
        // Powers of two give Java's own answer (offset 0).
        let four = try strategy.shard(jobName: "polygenelubricants", instances: ["a", "b", "c", "d"], totalCount: 4)
        #expect(four.entries.map(\.instanceID) == ["a", "b", "c", "d"])
    }

    @Test("no instances: every strategy returns an empty assignment (ElasticJob's round-robin divides by zero)",
          arguments: ["average", "odd-even", "round-robin"])
    func noInstances(strategyName: String) throws {
        let registry = try TestPlugins.standardRegistry()
        let strategy = try ShardingStrategyInstance(
            try registry.resolve(.shardingStrategy, strategyName), setup: TestPlugins.setup(strategyName))
        #expect(try strategy.shard(jobName: "job", instances: [], totalCount: 5).entries.isEmpty)
    }

    @Test("an instance listed twice is refused before the strategy runs")
    func duplicateInstance() throws {
        let registry = try TestPlugins.standardRegistry()
        let strategy = try ShardingStrategyInstance(
            try registry.resolve(.shardingStrategy, "average"), setup: TestPlugins.setup("average"))
        #expect {
            try strategy.shard(jobName: "job", instances: ["a", "b", "a"], totalCount: 3)
        } throws: { error in
            "\(error)".contains("the instance 'a' is listed twice")
        }
    }

    @Test("the largest assignment: 1,024 items (the most a job may have) over 1,000 instances, each item exactly once", arguments: ["average", "odd-even", "round-robin"])
    func large(strategyName: String) throws {
        let registry = try TestPlugins.standardRegistry()
        let strategy = try ShardingStrategyInstance(
            try registry.resolve(.shardingStrategy, strategyName), setup: TestPlugins.setup(strategyName, job: "bigJob"))
        let instances = (0..<1000).map { "10.0.\($0 / 256).\($0 % 256)@-@\($0)" }
        let total = JobLimits.maximumShardingTotalCount
        let result = try strategy.shard(jobName: "bigJob", instances: instances, totalCount: total)
        #expect(result.entries.count == 1000)
        #expect(Set(result.entries.map(\.instanceID)) == Set(instances))
        #expect(result.entries.flatMap(\.items).sorted() == Array(0..<total))
        #expect(result.entries.allSatisfy { (1...2).contains($0.items.count) })
        #expect(throws: ProviderCallError.self) { try strategy.shard(jobName: "bigJob", instances: instances, totalCount: total + 1) }
    }
}
