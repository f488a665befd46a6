/// Decides which instance runs which items of a job.
///
/// The host shards on the job's leader, at the first fire after a membership change. A strategy is
/// a pure function of its inputs: the same instances in the same order give the same assignment.
public protocol ShardingStrategy: Sendable {
    /// Assigns items `0..<totalCount` to `instances`, which the host gives in a stable order.
    /// Every instance should appear in the result, in the order the strategy chooses.
    func shard(jobName: String, instances: [String], totalCount: Int) throws -> ShardingAssignment
}

/// Decides how many items of one fire of a job run at once. The host owns the threads.
public protocol ExecutorStrategy: Sendable {
    func threadCount(processorCount: Int) throws -> Int
}

/// Deals with the failures of a job: logs them, sends them somewhere, or makes them abort the fire.
///
/// The host awaits `handle` within the fire, after its items ran, on a worker thread that every job
/// shares, and the SDK runs this async code on Swift's cooperative pool. So a handler must not block
/// inside it, and one that waits on the network holds up its job's fire and a worker thread: queue
/// the message and send it in the background instead. Throwing means the handler itself failed;
/// the host logs that.
public protocol ErrorHandler: Sendable {
    func handle(_ failure: JobFailure) async throws -> ErrorDisposition
}

/// Runs before and after each fire of a job on this host.
public protocol JobListener: Sendable {
    /// Listeners of one job run in ascending order; ties keep the configuration's order.
    var order: Int { get }
    func beforeFire(_ fire: FireInfo) async throws
    func afterFire(_ fire: FireInfo) async throws
}

extension JobListener {
    public var order: Int { Int(Int32.max) }
}

/// A job that runs once per item per fire (ElasticJob's `SimpleJob`).
///
/// The host calls `execute` for different items of one fire at once, up to the executor strategy's
/// thread count. A thrown error fails the item and goes to the job's error handler; the other
/// items go on.
public protocol SimpleJob: Sendable {
    func execute(_ context: ShardingContext) async throws
}

/// A job that fetches data and processes it (ElasticJob's `DataflowJob`).
///
/// Without `streaming.process` the host fetches once and processes the batch if it is not empty.
/// With `streaming.process: true` it fetches and processes until a fetch returns nothing, the job
/// needs resharding, or the item is cancelled.
public protocol DataflowJob: Sendable {
    associatedtype Item: Sendable
    func fetch(_ context: ShardingContext) async throws -> [Item]
    func process(_ context: ShardingContext, items: [Item]) async throws
}

/// The five kinds of provider a plugin can offer.
public enum ProviderKind: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case jobType = 1
    case shardingStrategy = 2
    case executorStrategy = 3
    case errorHandler = 4
    case jobListener = 5

    /// The kind's name in configuration, messages and the CLI.
    public var description: String {
        switch self {
        case .jobType: "job type"
        case .shardingStrategy: "sharding strategy"
        case .executorStrategy: "executor strategy"
        case .errorHandler: "error handler"
        case .jobListener: "job listener"
        }
    }
}

/// One named implementation a plugin offers: a kind, a name, aliases and a factory that makes an
/// instance for each job that names it. The factory should validate `setup.properties` and throw a
/// ``ConfigurationError`` naming the key at fault.
public struct Provider: Sendable {
    enum Factory: Sendable {
        case simpleJob(@Sendable (ProviderSetup) throws -> any SimpleJob)
        case dataflowJob(@Sendable (ProviderSetup) throws -> any DataflowJobBox)
        case shardingStrategy(@Sendable (ProviderSetup) throws -> any ShardingStrategy)
        case executorStrategy(@Sendable (ProviderSetup) throws -> any ExecutorStrategy)
        case errorHandler(@Sendable (ProviderSetup) throws -> any ErrorHandler)
        case jobListener(@Sendable (ProviderSetup) throws -> any JobListener)
    }

    public let name: String
    public let aliases: [String]
    let factory: Factory

    public var kind: ProviderKind {
        switch factory {
        case .simpleJob, .dataflowJob: .jobType
        case .shardingStrategy: .shardingStrategy
        case .executorStrategy: .executorStrategy
        case .errorHandler: .errorHandler
        case .jobListener: .jobListener
        }
    }

    public static func simpleJob(
        name: String, aliases: [String] = [], make: @escaping @Sendable (ProviderSetup) throws -> any SimpleJob
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .simpleJob(make))
    }

    public static func dataflowJob<Job: DataflowJob>(
        name: String, aliases: [String] = [], make: @escaping @Sendable (ProviderSetup) throws -> Job
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .dataflowJob { setup in TypedDataflowJob(try make(setup)) })
    }

    public static func shardingStrategy(
        name: String, aliases: [String] = [],
        make: @escaping @Sendable (ProviderSetup) throws -> any ShardingStrategy
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .shardingStrategy(make))
    }

    public static func executorStrategy(
        name: String, aliases: [String] = [],
        make: @escaping @Sendable (ProviderSetup) throws -> any ExecutorStrategy
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .executorStrategy(make))
    }

    public static func errorHandler(
        name: String, aliases: [String] = [], make: @escaping @Sendable (ProviderSetup) throws -> any ErrorHandler
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .errorHandler(make))
    }

    public static func jobListener(
        name: String, aliases: [String] = [], make: @escaping @Sendable (ProviderSetup) throws -> any JobListener
    ) -> Provider {
        Provider(name: name, aliases: aliases, factory: .jobListener(make))
    }
}

/// A dataflow job with its item type erased, so the bridge can hold any of them.
protocol DataflowJobBox: Sendable {
    /// Fetches a batch; `nil` when there is no data.
    func fetchBatch(_ context: ShardingContext) async throws -> DataflowBatch?
    func processBatch(_ context: ShardingContext, _ batch: DataflowBatch) async throws
}

/// One fetched batch, held by the host between `fetch` and `process`.
final class DataflowBatch: Sendable {
    let items: any Sendable
    let count: Int

    init(items: any Sendable, count: Int) {
        self.items = items
        self.count = count
    }
}

struct TypedDataflowJob<Job: DataflowJob>: DataflowJobBox {
    let job: Job

    init(_ job: Job) { self.job = job }

    func fetchBatch(_ context: ShardingContext) async throws -> DataflowBatch? {
        let items = try await job.fetch(context)
        return items.isEmpty ? nil : DataflowBatch(items: items, count: items.count)
    }

    func processBatch(_ context: ShardingContext, _ batch: DataflowBatch) async throws {
        guard let items = batch.items as? [Job.Item] else {
            throw JobError("internal: a dataflow batch was handed to a job of another type")
        }
        try await job.process(context, items: items)
    }
}
