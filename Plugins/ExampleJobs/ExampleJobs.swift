import ShardworkSDK
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `log-item`: a simple job that logs its item, the item's parameter and the job parameter.
/// `log-item.work.milliseconds` (default 0) makes each item take that long, to watch overlapping
/// fires and misfires; an item whose parameter is `fail` fails, to watch the error handler.
struct LogItem: SimpleJob {
    let workMilliseconds: Int

    init(_ setup: ProviderSetup) throws {
        workMilliseconds = try setup.properties["log-item.work.milliseconds"] == nil
            ? 0 : setup.properties.positiveInteger("log-item.work.milliseconds", default: 1)
    }

    func execute(_ context: ShardingContext) async throws {
        context.logger.info(
            "\(context.jobName) item \(context.shardingItem)/\(context.shardingTotalCount): "
                + "parameter \(context.shardingParameter ?? "(none)"), job parameter '\(context.jobParameter)'")
        if workMilliseconds > 0 {
            try await Task.sleep(for: .milliseconds(workMilliseconds))
        }
        if context.shardingParameter == "fail" {
            throw JobError("item \(context.shardingItem) is configured to fail (its parameter is 'fail')", code: 1)
        }
    }
}

/// `countdown`: a dataflow job. Each item counts down from `countdown.from` (default 10) to 1,
/// `countdown.batch` (default 3) numbers per fetch. Without `streaming.process` a fire processes one
/// batch; with it, a fire processes batches until the count is done. The next fire starts over.
final class Countdown: DataflowJob {
    let from: Int
    let batchSize: Int
    /// The next number per item, between fetches of one fire.
    private let next = Mutex<[Int: Int]>([:])

    init(_ setup: ProviderSetup) throws {
        from = try setup.properties.positiveInteger("countdown.from", default: 10)
        batchSize = try setup.properties.positiveInteger("countdown.batch", default: 3)
    }

    func fetch(_ context: ShardingContext) async throws -> [Int] {
        next.withLock { next in
            let start = next[context.shardingItem] ?? from
            guard start > 0 else {
                next[context.shardingItem] = nil  // done: the next fire starts over
                return []
            }
            let numbers = Array(stride(from: start, to: max(start - batchSize, 0), by: -1))
            next[context.shardingItem] = start - numbers.count
            return numbers
        }
    }

    func process(_ context: ShardingContext, items: [Int]) async throws {
        context.logger.info("\(context.jobName) item \(context.shardingItem): processed \(items.map(String.init).joined(separator: ", "))")
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "example-jobs", version: "0.1.0", providers: [
        .simpleJob(name: "log-item") { setup in try LogItem(setup) },
        .dataflowJob(name: "countdown") { setup in try Countdown(setup) },
    ])
}
