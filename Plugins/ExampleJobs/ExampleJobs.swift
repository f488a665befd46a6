import PluginSupport
import ShardworkSDK
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `log-item`: a simple job that logs its item, the item's parameter and the job parameter.
/// `log-item.work.milliseconds` (default 0) makes each item take that long, to watch overlapping
/// fires and misfires; an item whose parameter is `fail` fails, to watch the error handler.
/// `log-item.ledger` names a file to which each item appends two JSON lines, when it starts and
/// when it ends (job, item, task id, fire time, fencing epoch, start and end in epoch milliseconds,
/// whether the host asked it to stop and whether its epoch was still current at the end): a record
/// of who ran what, when, that the cluster tests read.
struct LogItem: SimpleJob {
    let workMilliseconds: Int
    let ledger: String?

    init(_ setup: ProviderSetup) throws {
        workMilliseconds = try setup.properties["log-item.work.milliseconds"] == nil
            ? 0 : setup.properties.positiveInteger("log-item.work.milliseconds", default: 1)
        ledger = setup.properties["log-item.ledger"]
        if let ledger, ledger.isEmpty || !ledger.hasPrefix("/") {
            throw JobError("log-item.ledger: '\(ledger)' is not an absolute file path; give the file the items append to")
        }
    }

    func execute(_ context: ShardingContext) async throws {
        let start = Self.now()
        var cancelled = false
        if let ledger { Self.append(ledger, context, event: "start", start: start) }
        defer {
            if let ledger {
                Self.append(ledger, context, event: "end", start: start, end: Self.now(), cancelled: cancelled,
                            current: context.isEpochCurrent() ?? true)
            }
        }
        context.logger.info(
            "\(context.jobName) item \(context.shardingItem)/\(context.shardingTotalCount): "
                + "parameter \(context.shardingParameter ?? "(none)"), job parameter '\(context.jobParameter)'")
        // Work in small steps, stopping early when the host asks the item to stop; and look once
        // more before reporting success, as a job that commits its work would.
        let deadline = start + Int64(workMilliseconds)
        while true {
            if context.isCancelled {
                cancelled = true
                throw JobError("item \(context.shardingItem) stopped early: the host asked it to", code: 2)
            }
            guard Self.now() < deadline else { break }
            try? await Task.sleep(for: .milliseconds(min(10, max(1, deadline - Self.now()))))
        }
        if context.shardingParameter == "fail" {
            throw JobError("item \(context.shardingItem) is configured to fail (its parameter is 'fail')", code: 1)
        }
    }
}

extension LogItem {
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// One line, written with a single `write` to a file opened with O_APPEND: lines of several
    /// processes never interleave.
    static func append(
        _ path: String, _ context: ShardingContext, event: String, start: Int64, end: Int64? = nil, cancelled: Bool = false,
        current: Bool = true
    ) {
        var line = "{\"event\":\"\(event)\",\"job\":\(JSONText.string(context.jobName)),\"item\":\(context.shardingItem),"
            + "\"task\":\(JSONText.string(context.taskID)),"
            + "\"fire\":\(context.fireTimeMilliseconds),\"epoch\":\(context.fencingEpoch),\"start\":\(start)"
        if let end { line += ",\"end\":\(end),\"cancelled\":\(cancelled),\"current\":\(current)" }
        line += "}\n"
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else {
            context.logger.error("log-item.ledger: cannot open \(path): errno \(errno)")
            return
        }
        defer { close(fd) }
        _ = line.withCString { write(fd, $0, strlen($0)) }
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
