import ShardworkSDK

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The plugin's version, chosen when it is built: `-Xswiftc -DACME_V2` builds version 2.0.0, the
/// one that docs/hot-loading.md loads into a running host.
#if ACME_V2
let acmeVersion = "2.0.0"
/// Version 2 reports at most this many times per item; version 1 took any positive count.
let acmeMaximumRepeats = 10
#else
let acmeVersion = "1.0.0"
let acmeMaximumRepeats = Int.max
#endif

/// A simple job: reports its item. Its `acme.greeting` property (default "report") shows how a
/// provider reads and validates a job's props when the host creates it. With `acme.ledger` set to a
/// file, each item also appends one JSON line to it: `{"job","item","fireTime","version"}`.
struct AcmeReport: SimpleJob {
    let greeting: String
    let repeats: Int
    let ledger: String?

    init(_ setup: ProviderSetup) throws {
        greeting = setup.properties["acme.greeting"] ?? "report"
        repeats = try setup.properties.positiveInteger("acme.repeats", default: 1)
        guard repeats <= acmeMaximumRepeats else {
            throw ConfigurationError(
                field: "acme.repeats",
                message: "The property `acme.repeats` should be at most \(acmeMaximumRepeats) in version \(acmeVersion), got \(repeats).")
        }
        ledger = setup.properties["acme.ledger"].flatMap { $0.isEmpty ? nil : $0 }
    }

    func execute(_ context: ShardingContext) async throws {
        for _ in 0..<repeats {
            try context.checkCancellation()
            context.logger.info(
                "\(greeting) for \(context.jobName) item \(context.shardingItem) of \(context.shardingTotalCount), "
                    + "parameter \(context.shardingParameter ?? "(none)"), epoch \(context.fencingEpoch)")
        }
        if let ledger {
            try Self.append(
                "{\"job\":\(Self.json(context.jobName)),\"item\":\(context.shardingItem),"
                    + "\"fireTime\":\(context.fireTimeMilliseconds),\"version\":\(Self.json(acmeVersion))}\n",
                to: ledger)
        }
        if context.shardingParameter == "fail" {
            throw JobError("item \(context.shardingItem) was told to fail", code: 42)
        }
    }

    /// One `write` of the whole line with O_APPEND, so that lines of items running at once never
    /// interleave.
    static func append(_ line: String, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw JobError("cannot open the ledger \(path): errno \(errno)", code: 2) }
        defer { close(descriptor) }
        let bytes = Array(line.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw JobError("cannot write the ledger \(path): errno \(errno)", code: 2) }
    }

    /// A JSON string literal.
    static func json(_ text: String) -> String {
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                quoted += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
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
    ShardworkPlugin.export(host: host, name: "acme", version: acmeVersion, providers: [
        .simpleJob(name: "acme-report", aliases: ["ACME_REPORT"]) { setup in try AcmeReport(setup) },
        .shardingStrategy(name: "rendezvous", aliases: ["ACME_RENDEZVOUS"]) { _ in RendezvousSharding() },
    ])
}
