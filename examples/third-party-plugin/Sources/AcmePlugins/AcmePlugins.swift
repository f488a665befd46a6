import ShardworkSDK

/// A simple job: reports its item. Its `acme.greeting` property (default "report") shows how a
/// provider reads and validates a job's props when the host creates it.
struct AcmeReport: SimpleJob {
    let greeting: String
    let repeats: Int

    init(_ setup: ProviderSetup) throws {
        greeting = setup.properties["acme.greeting"] ?? "report"
        repeats = try setup.properties.positiveInteger("acme.repeats", default: 1)
    }

    func execute(_ context: ShardingContext) async throws {
        for _ in 0..<repeats {
            try context.checkCancellation()
            context.logger.info(
                "\(greeting) for \(context.jobName) item \(context.shardingItem) of \(context.shardingTotalCount), "
                    + "parameter \(context.shardingParameter ?? "(none)"), epoch \(context.fencingEpoch)")
        }
        if context.shardingParameter == "fail" {
            throw JobError("item \(context.shardingItem) was told to fail", code: 42)
        }
    }
}

/// Rendezvous (highest random weight) hashing: each item goes to the instance with the highest
/// hash of (job, item, instance). When an instance joins or leaves, only the items it gains or
/// loses move; every other item stays where it was, unlike ElasticJob's average allocation.
struct RendezvousSharding: ShardingStrategy {
    func shard(jobName: String, instances: [String], totalCount: Int) -> ShardingAssignment {
        guard !instances.isEmpty else { return ShardingAssignment() }
        var items = Array(repeating: [Int](), count: instances.count)
        for item in 0..<totalCount {
            var best = 0
            var bestWeight: UInt64 = 0
            for (index, instance) in instances.enumerated() {
                let weight = Self.fnv1a("\(jobName)\u{0}\(item)\u{0}\(instance)")
                if index == 0 || weight > bestWeight {
                    best = index
                    bestWeight = weight
                }
            }
            items[best].append(item)
        }
        return ShardingAssignment(instances.indices.map { .init(instanceID: instances[$0], items: items[$0]) })
    }

    /// FNV-1a, 64 bits: stable across processes and platforms, unlike Swift's seeded `Hasher`.
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}

/// The entry the host looks up. One call describes the whole plugin.
@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "acme", version: "1.0.0", providers: [
        .simpleJob(name: "acme-report", aliases: ["ACME_REPORT"]) { setup in try AcmeReport(setup) },
        .shardingStrategy(name: "rendezvous", aliases: ["ACME_RENDEZVOUS"]) { _ in RendezvousSharding() },
    ])
}
