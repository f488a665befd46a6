import ShardworkSDK

/// ElasticJob's CPU: twice the number of processors.
struct ProcessorBound: ExecutorStrategy {
    func threadCount(processorCount: Int) -> Int { max(1, processorCount * 2) }
}

/// ElasticJob's SINGLE_THREAD: one item at a time.
struct SingleThread: ExecutorStrategy {
    func threadCount(processorCount: Int) -> Int { 1 }
}

/// A fixed number of threads from the job's `fixed.threads` property (required, a positive integer).
struct Fixed: ExecutorStrategy {
    static let threadsKey = "fixed.threads"
    let threads: Int

    init(_ setup: ProviderSetup) throws {
        _ = try setup.properties.required(Self.threadsKey)
        threads = try setup.properties.positiveInteger(Self.threadsKey, default: 1)
    }

    func threadCount(processorCount: Int) -> Int { threads }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "standard-executors", version: "0.1.0", providers: [
        .executorStrategy(name: "cpu", aliases: ["CPU"]) { _ in ProcessorBound() },
        .executorStrategy(name: "single-thread", aliases: ["SINGLE_THREAD"]) { _ in SingleThread() },
        .executorStrategy(name: "fixed", aliases: ["FIXED"]) { setup in try Fixed(setup) },
    ])
}
