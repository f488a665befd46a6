import ShardworkSDK

/// ElasticJob's AVG_ALLOCATION: `total / n` consecutive items to each instance in the given order,
/// then the remainder one each to the first instances.
///
/// 3 instances and 8 items give `[0, 1, 6]`, `[2, 3, 7]`, `[4, 5]`; no instances give no entries.
struct AverageAllocation: ShardingStrategy {
    func shard(jobName: String, instances: [String], totalCount: Int) -> ShardingAssignment {
        guard !instances.isEmpty else { return ShardingAssignment() }
        let perInstance = totalCount / instances.count
        var entries = instances.enumerated().map { index, instance in
            ShardingAssignment.Entry(
                instanceID: instance, items: Array(index * perInstance ..< (index + 1) * perInstance))
        }
        let remainder = totalCount % instances.count
        for index in 0..<remainder {
            entries[index].items.append(perInstance * instances.count + index)
        }
        return ShardingAssignment(entries)
    }
}

/// ElasticJob's ODEVITY: when the job name's Java hash code is even (including zero and negative
/// even values) the instance order is reversed; then items are allocated as by ``AverageAllocation``.
struct OddEvenAllocation: ShardingStrategy {
    func shard(jobName: String, instances: [String], totalCount: Int) -> ShardingAssignment {
        let ordered = javaStringHashCode(jobName) % 2 == 0 ? Array(instances.reversed()) : instances
        return AverageAllocation().shard(jobName: jobName, instances: ordered, totalCount: totalCount)
    }
}

/// ElasticJob's ROUND_ROBIN: the instances are rotated left by `|hash(jobName)| % n`, then items
/// are allocated as by ``AverageAllocation``.
///
/// Where ElasticJob throws, this returns a valid result instead:
/// - no instances: an empty assignment (Java divides by zero);
/// - a name whose hash is `Int32.min` (`"polygenelubricants"`): Java's `Math.abs` stays negative and
///   the rotation indexes out of bounds unless `n` is a power of two. Here the offset is
///   `2^31 % n`, the true absolute value, which equals Java's result whenever Java has one.
struct RoundRobinAllocation: ShardingStrategy {
    func shard(jobName: String, instances: [String], totalCount: Int) -> ShardingAssignment {
        guard !instances.isEmpty else { return ShardingAssignment() }
        let hash = Int64(javaStringHashCode(jobName))
        let offset = Int(abs(hash) % Int64(instances.count))
        let rotated = Array(instances[offset...] + instances[..<offset])
        return AverageAllocation().shard(jobName: jobName, instances: rotated, totalCount: totalCount)
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "standard-sharding", version: "0.1.0", providers: [
        .shardingStrategy(name: "average", aliases: ["AVG_ALLOCATION"]) { _ in AverageAllocation() },
        .shardingStrategy(name: "odd-even", aliases: ["ODEVITY"]) { _ in OddEvenAllocation() },
        .shardingStrategy(name: "round-robin", aliases: ["ROUND_ROBIN"]) { _ in RoundRobinAllocation() },
    ])
}
