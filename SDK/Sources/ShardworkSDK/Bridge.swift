import CShardworkPlugin
import Dispatch
import Synchronization

/// The C side of every provider kind: `@convention(c)` thunks that turn the host's calls into
/// calls on the Swift instances, and Swift errors into `shardwork_error`s. Nothing thrown here
/// crosses the C boundary, and nothing the host passes in is kept past the call.
enum Bridge {
    typealias CreateFunction = @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<shardwork_provider_setup>?,
        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<shardwork_error>?
    ) -> Int32

    static func vtable(for factory: Provider.Factory) -> UnsafeMutableRawPointer {
        switch factory {
        case .simpleJob, .dataflowJob:
            return allocate(shardwork_job_type_vtable(
                struct_size: UInt32(MemoryLayout<shardwork_job_type_vtable>.size),
                shape: { if case .dataflowJob = factory { UInt32(SHARDWORK_JOB_SHAPE_DATAFLOW) } else { UInt32(SHARDWORK_JOB_SHAPE_SIMPLE) } }(),
                create: create, destroy: destroy,
                execute: { instance, item, error in Bridge.executeSimple(instance, item, error) },
                fetch: { instance, item, batch, count, error in Bridge.fetch(instance, item, batch, count, error) },
                process: { instance, item, batch, error in Bridge.process(instance, item, batch, error) },
                release_batch: { _, batch in
                    if let batch { Unmanaged<DataflowBatch>.fromOpaque(batch).release() }
                }
            ))
        case .shardingStrategy:
            return allocate(shardwork_sharding_strategy_vtable(
                struct_size: UInt32(MemoryLayout<shardwork_sharding_strategy_vtable>.size),
                create: create, destroy: destroy,
                shard: { instance, jobName, ids, count, total, keyOrder, owners, error in
                    Bridge.shard(instance, jobName, ids, count, total, keyOrder, owners, error)
                }
            ))
        case .executorStrategy:
            return allocate(shardwork_executor_strategy_vtable(
                struct_size: UInt32(MemoryLayout<shardwork_executor_strategy_vtable>.size),
                create: create, destroy: destroy,
                thread_count: { instance, processors, threads, error in
                    Bridge.threadCount(instance, processors, threads, error)
                }
            ))
        case .errorHandler:
            return allocate(shardwork_error_handler_vtable(
                struct_size: UInt32(MemoryLayout<shardwork_error_handler_vtable>.size),
                create: create, destroy: destroy,
                handle: { instance, failure, error in Bridge.handle(instance, failure, error) }
            ))
        case .jobListener:
            return allocate(shardwork_job_listener_vtable(
                struct_size: UInt32(MemoryLayout<shardwork_job_listener_vtable>.size),
                create: create, destroy: destroy,
                order: { instance in
                    guard let listener: any JobListener = Bridge.value(instance) else { return Int32.max }
                    return Int32(clamping: listener.order)
                },
                before_fire: { instance, fire, error in Bridge.listen(instance, fire, error, before: true) },
                after_fire: { instance, fire, error in Bridge.listen(instance, fire, error, before: false) }
            ))
        }
    }

    private static func allocate<Table>(_ table: Table) -> UnsafeMutableRawPointer {
        let pointer = UnsafeMutablePointer<Table>.allocate(capacity: 1)
        pointer.initialize(to: table)
        return UnsafeMutableRawPointer(pointer)
    }

    // MARK: Instances

    private static let create: CreateFunction = { context, setupPointer, instanceOut, errorOut in
        guard let context, let setupPointer, let instanceOut else {
            return Bridge.fail(errorOut, JobError("internal: create called without context, setup or result"))
        }
        let provider = Unmanaged<ProviderBox>.fromOpaque(context).takeUnretainedValue()
        let setup = ProviderSetup(setupPointer.pointee, logger: provider.logger)
        do {
            let instance: AnyObject
            switch provider.factory {
            case .simpleJob(let make): instance = InstanceBox<any SimpleJob>(try make(setup))
            case .dataflowJob(let make): instance = InstanceBox<any DataflowJobBox>(try make(setup))
            case .shardingStrategy(let make): instance = InstanceBox<any ShardingStrategy>(try make(setup))
            case .executorStrategy(let make): instance = InstanceBox<any ExecutorStrategy>(try make(setup))
            case .errorHandler(let make): instance = InstanceBox<any ErrorHandler>(try make(setup))
            case .jobListener(let make): instance = InstanceBox<any JobListener>(try make(setup))
            }
            instanceOut.pointee = Unmanaged.passRetained(instance).toOpaque()
            return SHARDWORK_OK
        } catch {
            return Bridge.fail(errorOut, error)
        }
    }

    private static let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
        if let instance { Unmanaged<AnyObject>.fromOpaque(instance).release() }
    }

    static func value<Value: Sendable>(_ instance: UnsafeMutableRawPointer?) -> Value? {
        guard let instance else { return nil }
        return (Unmanaged<AnyObject>.fromOpaque(instance).takeUnretainedValue() as? InstanceBox<Value>)?.value
    }

    // MARK: Errors

    /// Describes `failure` in the host's error record and returns the matching status code.
    static func fail(_ errorOut: UnsafeMutablePointer<shardwork_error>?, _ failure: any Error) -> Int32 {
        switch failure {
        case let failure as ConfigurationError:
            set(errorOut, code: 0, field: failure.field, message: failure.message)
            return SHARDWORK_INVALID_CONFIGURATION
        case let failure as JobError:
            set(errorOut, code: failure.code, field: nil, message: failure.message)
        case is CancellationError:
            set(errorOut, code: 0, field: nil, message: "cancelled")
        default:
            set(errorOut, code: 0, field: nil, message: String(describing: failure))
        }
        return SHARDWORK_FAILED
    }

    private static func set(_ errorOut: UnsafeMutablePointer<shardwork_error>?, code: Int32, field: String?, message: String) {
        guard let errorOut else { return }
        shardwork_error_set(errorOut, code, field, message)
    }

    // MARK: Sharding

    static func shard(
        _ instance: UnsafeMutableRawPointer?, _ jobNamePointer: UnsafePointer<CChar>?,
        _ ids: UnsafePointer<UnsafePointer<CChar>?>?, _ count: UInt32, _ total: UInt32,
        _ keyOrder: UnsafeMutablePointer<UInt32>?, _ owners: UnsafeMutablePointer<Int32>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let strategy: any ShardingStrategy = value(instance), let jobNamePointer,
              count == 0 || (ids != nil && keyOrder != nil), total == 0 || owners != nil
        else {
            return fail(errorOut, JobError("internal: shard called with missing arguments"))
        }
        let instances = (0..<Int(count)).map { String(cStringOrEmpty: ids![$0]) }
        do {
            let assignment = try strategy.shard(
                jobName: String(cString: jobNamePointer), instances: instances, totalCount: Int(total))
            let (order, itemOwners) = try assignment.encoded(instances: instances, totalCount: Int(total))
            for (position, index) in order.enumerated() { keyOrder![position] = UInt32(index) }
            for (item, owner) in itemOwners.enumerated() { owners![item] = Int32(owner ?? -1) }
            return SHARDWORK_OK
        } catch {
            return fail(errorOut, error)
        }
    }

    // MARK: Executor strategies

    static func threadCount(
        _ instance: UnsafeMutableRawPointer?, _ processors: UInt32, _ threads: UnsafeMutablePointer<UInt32>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let strategy: any ExecutorStrategy = value(instance), let threads else {
            return fail(errorOut, JobError("internal: thread_count called with missing arguments"))
        }
        do {
            let count = try strategy.threadCount(processorCount: Int(processors))
            guard count > 0, count <= Int(UInt32.max) else {
                throw JobError("the executor strategy asked for \(count) threads; it must be at least 1")
            }
            threads.pointee = UInt32(count)
            return SHARDWORK_OK
        } catch {
            return fail(errorOut, error)
        }
    }

    // MARK: Error handlers

    static func handle(
        _ instance: UnsafeMutableRawPointer?, _ failurePointer: UnsafePointer<shardwork_job_failure>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let handler: any ErrorHandler = value(instance), let failurePointer else {
            return fail(errorOut, JobError("internal: handle called with missing arguments"))
        }
        let failure = JobFailure(failurePointer.pointee)
        switch runBlocking({ try await handler.handle(failure) }) {
        case .success(.handled): return SHARDWORK_OK
        case .success(.propagate): return SHARDWORK_PROPAGATE
        case .failure(let failure): return fail(errorOut, failure)
        }
    }

    // MARK: Listeners

    static func listen(
        _ instance: UnsafeMutableRawPointer?, _ firePointer: UnsafePointer<shardwork_fire>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?, before: Bool
    ) -> Int32 {
        guard let listener: any JobListener = value(instance), let firePointer else {
            return fail(errorOut, JobError("internal: listener called with missing arguments"))
        }
        let fire = FireInfo(firePointer.pointee)
        let outcome = runBlocking {
            if before { try await listener.beforeFire(fire) } else { try await listener.afterFire(fire) }
        }
        if case .failure(let failure) = outcome { return fail(errorOut, failure) }
        return SHARDWORK_OK
    }

    // MARK: Jobs

    static func executeSimple(
        _ instance: UnsafeMutableRawPointer?, _ item: UnsafePointer<shardwork_item_context>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let job: any SimpleJob = value(instance), let item else {
            return fail(errorOut, JobError("internal: execute called on a job that is not a simple job"))
        }
        return withItemContext(item) { context in
            if case .failure(let failure) = runBlocking({ try await job.execute(context) }) {
                return fail(errorOut, failure)
            }
            return SHARDWORK_OK
        }
    }

    static func fetch(
        _ instance: UnsafeMutableRawPointer?, _ item: UnsafePointer<shardwork_item_context>?,
        _ batchOut: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ countOut: UnsafeMutablePointer<UInt64>?,
        _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let job: any DataflowJobBox = value(instance), let item, let batchOut, let countOut else {
            return fail(errorOut, JobError("internal: fetch called on a job that is not a dataflow job"))
        }
        return withItemContext(item) { context in
            switch runBlocking({ try await job.fetchBatch(context) }) {
            case .success(let batch?):
                batchOut.pointee = Unmanaged.passRetained(batch).toOpaque()
                countOut.pointee = UInt64(batch.count)
            case .success(nil):
                batchOut.pointee = nil
                countOut.pointee = 0
            case .failure(let failure):
                return fail(errorOut, failure)
            }
            return SHARDWORK_OK
        }
    }

    static func process(
        _ instance: UnsafeMutableRawPointer?, _ item: UnsafePointer<shardwork_item_context>?,
        _ batchPointer: UnsafeMutableRawPointer?, _ errorOut: UnsafeMutablePointer<shardwork_error>?
    ) -> Int32 {
        guard let job: any DataflowJobBox = value(instance), let item, let batchPointer else {
            return fail(errorOut, JobError("internal: process called on a job that is not a dataflow job"))
        }
        let batch = Unmanaged<DataflowBatch>.fromOpaque(batchPointer).takeUnretainedValue()
        return withItemContext(item) { context in
            if case .failure(let failure) = runBlocking({ try await job.processBatch(context, batch) }) {
                return fail(errorOut, failure)
            }
            return SHARDWORK_OK
        }
    }

    /// Gives `body` a context whose host services work during the call and are cut off after it
    /// (the host's pointers are only valid until the call returns).
    private static func withItemContext(
        _ item: UnsafePointer<shardwork_item_context>, _ body: (ShardingContext) -> Int32
    ) -> Int32 {
        let link = ItemHostLink(item.pointee)
        defer { link.invalidate() }
        return body(ShardingContext(item.pointee, link: link))
    }
}

/// Runs async work to completion from a host thread. The host calls providers on its own worker
/// threads, never on Swift's cooperative pool, so waiting here cannot starve that pool.
func runBlocking<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) -> Result<Value, any Error> {
    let outcome = BlockingOutcome<Value>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        let result: Result<Value, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        outcome.result.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return outcome.result.withLock { $0 } ?? .failure(JobError("internal: the task ended without a result"))
}

private final class BlockingOutcome<Value: Sendable>: Sendable {
    let result = Mutex<Result<Value, any Error>?>(nil)
}

/// The host's services for one item, valid until the call that received them returns.
final class ItemHostLink: Sendable {
    private struct Pointers: @unchecked Sendable {
        // Valid until invalidate(); every use holds the mutex, and invalidate() takes it.
        let api: UnsafePointer<shardwork_item_host_api>
        let context: UnsafeMutableRawPointer?
    }

    private let pointers: Mutex<Pointers?>

    init(_ item: shardwork_item_context) {
        if let api = item.host, api.pointee.struct_size >= UInt32(MemoryLayout<shardwork_item_host_api>.size) {
            pointers = Mutex(Pointers(api: api, context: item.host_context))
        } else {
            pointers = Mutex(nil)
        }
    }

    func invalidate() { pointers.withLock { $0 = nil } }

    /// After the call, an item is over: report it as cancelled.
    func isCancelled() -> Bool {
        pointers.withLock { pointers in
            guard let pointers, let check = pointers.api.pointee.is_cancelled else { return true }
            return check(pointers.context) != 0
        }
    }

    func isEpochCurrent(_ epoch: UInt64) -> Bool? {
        pointers.withLock { pointers in
            guard let pointers, let check = pointers.api.pointee.is_epoch_current else { return nil }
            switch check(pointers.context, epoch) {
            case 1: return true
            case 0: return false
            default: return nil
            }
        }
    }

    /// Returns false when the item is over and the message was not delivered.
    func log(_ level: LogLevel, _ message: String) -> Bool {
        pointers.withLock { pointers in
            guard let pointers, let log = pointers.api.pointee.log else { return false }
            log(pointers.context, level.rawValue, message)
            return true
        }
    }
}

// MARK: Converting the host's C values

extension String {
    init(cStringOrEmpty pointer: UnsafePointer<CChar>?) {
        self = pointer.map { String(cString: $0) } ?? ""
    }
}

extension ProviderSetup {
    init(_ setup: shardwork_provider_setup, logger: PluginLogger) {
        var entries: [(key: String, value: String)] = []
        if let items = setup.properties.items {
            for index in 0..<Int(setup.properties.count) {
                entries.append((String(cStringOrEmpty: items[index].key), String(cStringOrEmpty: items[index].value)))
            }
        }
        self.init(
            jobName: String(cStringOrEmpty: setup.job_name),
            providerName: String(cStringOrEmpty: setup.provider_name),
            properties: JobProperties(entries),
            logger: logger
        )
    }
}

extension ShardingContext {
    init(_ item: shardwork_item_context, link: ItemHostLink) {
        let jobName = String(cStringOrEmpty: item.job_name)
        let shardingItem = Int(item.sharding_item)
        self.init(
            jobName: jobName,
            taskID: String(cStringOrEmpty: item.task_id),
            shardingTotalCount: Int(item.sharding_total_count),
            jobParameter: String(cStringOrEmpty: item.job_parameter),
            shardingItem: shardingItem,
            shardingParameter: item.sharding_parameter.map { String(cString: $0) },
            fireTimeMilliseconds: item.fire_time_ms,
            fencingEpoch: item.fencing_epoch,
            logger: PluginLogger { level, message in _ = link.log(level, message) },
            control: ItemControl(isCancelled: { link.isCancelled() }, isEpochCurrent: { link.isEpochCurrent($0) })
        )
    }
}

extension JobFailure {
    init(_ failure: shardwork_job_failure) {
        self.init(
            origin: FailureOrigin(rawValue: failure.origin) ?? .item,
            jobName: String(cStringOrEmpty: failure.job_name),
            taskID: String(cStringOrEmpty: failure.task_id),
            instanceID: String(cStringOrEmpty: failure.instance_id),
            hostName: String(cStringOrEmpty: failure.host_name),
            item: failure.item >= 0 ? Int(failure.item) : nil,
            fireTimeMilliseconds: failure.fire_time_ms,
            message: String(cStringOrEmpty: failure.message),
            code: failure.code
        )
    }
}

extension FireInfo {
    init(_ fire: shardwork_fire) {
        var items: [Int] = []
        var parameters: [Int: String] = [:]
        var statuses: [Int: ItemStatus]?
        if let itemPointer = fire.items {
            if fire.item_statuses != nil { statuses = [:] }
            for index in 0..<Int(fire.item_count) {
                let item = Int(itemPointer[index])
                items.append(item)
                if let parameter = fire.item_parameters?[index] { parameters[item] = String(cString: parameter) }
                if let status = fire.item_statuses?[index] { statuses?[item] = ItemStatus(rawValue: status) ?? .notRun }
            }
        }
        self.init(
            jobName: String(cStringOrEmpty: fire.job_name),
            taskID: String(cStringOrEmpty: fire.task_id),
            shardingTotalCount: Int(fire.sharding_total_count),
            jobParameter: String(cStringOrEmpty: fire.job_parameter),
            fireTimeMilliseconds: fire.fire_time_ms,
            items: items,
            itemParameters: parameters,
            itemStatuses: statuses
        )
    }
}
