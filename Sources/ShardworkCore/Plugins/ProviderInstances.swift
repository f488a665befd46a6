import CShardworkPlugin
public import Logging
public import ShardworkSDK

#if canImport(Glibc)
import Glibc
#endif

/// A provider call failed, or a provider refused a job's configuration.
public struct ProviderCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `sharding strategy 'average' of plugin standard-sharding`.
    public var provider: String
    public var status: Int32
    public var message: String
    /// The configuration key at fault, when the provider named one.
    public var field: String?
    /// The provider's own code (a script's exit status, an HTTP status), 0 when there is none.
    public var code: Int32

    public var isInvalidConfiguration: Bool { status == SHARDWORK_INVALID_CONFIGURATION }

    public var description: String {
        if isInvalidConfiguration {
            return "\(provider) refused the configuration" + (field.map { " (property `\($0)`)" } ?? "") + ": \(message)"
        }
        return "\(provider) failed: \(message)"
    }
}

/// What the host makes per job and provider: the provider's instance for that job. The instance is
/// destroyed through the provider's table when the last reference goes.
final class ProviderInstance: @unchecked Sendable {
    // The pointer belongs to the plugin, which allows calls from any thread for these kinds;
    // it is set once and destroyed once, in deinit.
    let provider: RegisteredProvider
    let pointer: UnsafeMutableRawPointer?
    /// The job the instance was made for, for the crash journal.
    let crashContext: CrashContext?
    private let destroy: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?

    typealias Create = @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<shardwork_provider_setup>?,
        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<shardwork_error>?
    ) -> Int32

    init(
        _ provider: RegisteredProvider, setup: ProviderSetup, create: Create?,
        destroy: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?, crashContext: CrashContext?
    ) throws(ProviderCallError) {
        self.provider = provider
        self.destroy = destroy
        self.crashContext = crashContext
        var instance: UnsafeMutableRawPointer?
        let arena = CArena()
        var cSetup = shardwork_provider_setup(
            struct_size: UInt32(MemoryLayout<shardwork_provider_setup>.size),
            job_name: arena.string(setup.jobName),
            provider_name: arena.string(setup.providerName),
            properties: arena.properties(setup.properties))
        var error = ErrorRecord()
        let status = withExtendedLifetime(arena) {
            crashContext.during(.creating) {
                create?(provider.table.context, &cSetup, &instance, &error.value) ?? SHARDWORK_FAILED
            }
        }
        guard status == SHARDWORK_OK else {
            throw error.callError(provider, status: create == nil ? SHARDWORK_FAILED : status)
        }
        pointer = instance
    }

    deinit {
        guard let destroy else { return }
        let pointer = self.pointer
        crashContext.during(.destroying) { destroy(pointer) }
    }
}

/// A sharding strategy made for one job.
public final class ShardingStrategyInstance: Sendable {
    private let instance: ProviderInstance
    private let table: shardwork_sharding_strategy_vtable

    public var provider: RegisteredProvider { instance.provider }

    public init(_ provider: RegisteredProvider, setup: ProviderSetup, crashContext: CrashContext? = nil) throws(ProviderCallError) {
        precondition(provider.kind == .shardingStrategy, "\(provider.label) is not a sharding strategy")
        table = provider.table.vtable.assumingMemoryBound(to: shardwork_sharding_strategy_vtable.self).pointee
        instance = try ProviderInstance(provider, setup: setup, create: table.create, destroy: table.destroy, crashContext: crashContext)
    }

    /// The most items a job may have (``JobLimits/maximumShardingTotalCount``).
    public static let maximumTotalCount = JobLimits.maximumShardingTotalCount

    /// Assigns items `0..<totalCount` to `instances` (in the order given). The result is checked:
    /// every given instance appears once, in the strategy's order, and no item is assigned twice.
    public func shard(jobName: String, instances: [String], totalCount: Int) throws(ProviderCallError) -> ShardingAssignment {
        let label = instance.provider.callLabel
        guard (0...Self.maximumTotalCount).contains(totalCount) else {
            throw ProviderCallError(
                provider: label, status: SHARDWORK_FAILED,
                message: "the total count \(totalCount) is outside 0...\(Self.maximumTotalCount)", code: 0)
        }
        var seen = Set<String>()
        for id in instances where !seen.insert(id).inserted {
            throw ProviderCallError(
                provider: label, status: SHARDWORK_FAILED, message: "the instance '\(id)' is listed twice", code: 0)
        }
        let arena = CArena()
        let ids = arena.stringArray(instances)
        var keyOrder = [UInt32](repeating: 0, count: instances.count)
        var owners = [Int32](repeating: -1, count: totalCount)
        var error = ErrorRecord()
        let status = withExtendedLifetime(arena) {
            keyOrder.withUnsafeMutableBufferPointer { keys in
                owners.withUnsafeMutableBufferPointer { owners in
                    instance.crashContext.during(.sharding) {
                        table.shard?(
                            instance.pointer, arena.string(jobName), ids, UInt32(instances.count), UInt32(totalCount),
                            keys.baseAddress, owners.baseAddress, &error.value) ?? SHARDWORK_FAILED
                    }
                }
            }
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
        do {
            return try ShardingAssignment(instances: instances, checkingKeyOrder: keyOrder, owners: owners)
        } catch {
            throw ProviderCallError(provider: label, status: SHARDWORK_FAILED, message: error.description, code: 0)
        }
    }
}

/// An executor strategy made for one job.
public final class ExecutorStrategyInstance: Sendable {
    private let instance: ProviderInstance
    private let table: shardwork_executor_strategy_vtable

    public var provider: RegisteredProvider { instance.provider }

    public init(_ provider: RegisteredProvider, setup: ProviderSetup, crashContext: CrashContext? = nil) throws(ProviderCallError) {
        precondition(provider.kind == .executorStrategy, "\(provider.label) is not an executor strategy")
        table = provider.table.vtable.assumingMemoryBound(to: shardwork_executor_strategy_vtable.self).pointee
        instance = try ProviderInstance(provider, setup: setup, create: table.create, destroy: table.destroy, crashContext: crashContext)
    }

    /// How many items of one fire may run at once, for a machine with `processorCount` processors.
    public func threadCount(processorCount: Int) throws(ProviderCallError) -> Int {
        var threads: UInt32 = 0
        var error = ErrorRecord()
        let status = instance.crashContext.during(.sizing) {
            table.thread_count?(instance.pointer, UInt32(clamping: processorCount), &threads, &error.value) ?? SHARDWORK_FAILED
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
        guard threads > 0 else {
            throw ProviderCallError(
                provider: instance.provider.callLabel, status: SHARDWORK_FAILED,
                message: "it asked for 0 threads; a job needs at least one", code: 0)
        }
        return Int(threads)
    }
}

/// An error handler made for one job. `handle` may block (network handlers): call it from a thread
/// that may wait, never from Swift's cooperative pool.
public final class ErrorHandlerInstance: Sendable {
    private let instance: ProviderInstance
    private let table: shardwork_error_handler_vtable

    public var provider: RegisteredProvider { instance.provider }

    public init(_ provider: RegisteredProvider, setup: ProviderSetup, crashContext: CrashContext? = nil) throws(ProviderCallError) {
        precondition(provider.kind == .errorHandler, "\(provider.label) is not an error handler")
        table = provider.table.vtable.assumingMemoryBound(to: shardwork_error_handler_vtable.self).pointee
        instance = try ProviderInstance(provider, setup: setup, create: table.create, destroy: table.destroy, crashContext: crashContext)
    }

    public func handle(_ failure: JobFailure) throws(ProviderCallError) -> ErrorDisposition {
        let arena = CArena()
        var cFailure = shardwork_job_failure(
            struct_size: UInt32(MemoryLayout<shardwork_job_failure>.size),
            origin: failure.origin.rawValue,
            job_name: arena.string(failure.jobName),
            task_id: arena.string(failure.taskID),
            instance_id: arena.string(failure.instanceID),
            host_name: arena.string(failure.hostName),
            item: Int32(clamping: failure.item ?? -1),
            fire_time_ms: failure.fireTimeMilliseconds,
            message: arena.string(failure.message),
            code: failure.code)
        var error = ErrorRecord()
        let status = withExtendedLifetime(arena) {
            instance.crashContext.during(.handling) {
                table.handle?(instance.pointer, &cFailure, &error.value) ?? SHARDWORK_FAILED
            }
        }
        switch status {
        case SHARDWORK_OK: return .handled
        case SHARDWORK_PROPAGATE: return .propagate
        default: throw error.callError(instance.provider, status: status)
        }
    }
}

/// A job listener made for one job. Its calls may block: call them from a thread that may wait.
public final class JobListenerInstance: Sendable {
    private let instance: ProviderInstance
    private let table: shardwork_job_listener_vtable

    public var provider: RegisteredProvider { instance.provider }

    public init(_ provider: RegisteredProvider, setup: ProviderSetup, crashContext: CrashContext? = nil) throws(ProviderCallError) {
        precondition(provider.kind == .jobListener, "\(provider.label) is not a job listener")
        table = provider.table.vtable.assumingMemoryBound(to: shardwork_job_listener_vtable.self).pointee
        instance = try ProviderInstance(provider, setup: setup, create: table.create, destroy: table.destroy, crashContext: crashContext)
    }

    public var order: Int { Int(instance.crashContext.during(.listening) { table.order?(instance.pointer) ?? Int32.max }) }

    public func beforeFire(_ fire: FireInfo) throws(ProviderCallError) {
        try call(table.before_fire, fire)
    }

    public func afterFire(_ fire: FireInfo) throws(ProviderCallError) {
        try call(table.after_fire, fire)
    }

    private func call(
        _ function: (@convention(c) (UnsafeMutableRawPointer?, UnsafePointer<shardwork_fire>?, UnsafeMutablePointer<shardwork_error>?) -> Int32)?,
        _ fire: FireInfo
    ) throws(ProviderCallError) {
        let arena = CArena()
        let items = fire.items.map { UInt32(clamping: $0) }
        let parameters = arena.optionalStringArray(fire.items.map { fire.itemParameters[$0] })
        let statuses = fire.itemStatuses.map { statuses in fire.items.map { statuses[$0]?.rawValue ?? ItemStatus.notRun.rawValue } }
        var error = ErrorRecord()
        let status = withExtendedLifetime(arena) {
            items.withUnsafeBufferPointer { items in
                withOptionalBuffer(statuses) { statuses in
                    var cFire = shardwork_fire(
                        struct_size: UInt32(MemoryLayout<shardwork_fire>.size),
                        job_name: arena.string(fire.jobName),
                        task_id: arena.string(fire.taskID),
                        sharding_total_count: UInt32(clamping: fire.shardingTotalCount),
                        job_parameter: arena.string(fire.jobParameter),
                        fire_time_ms: fire.fireTimeMilliseconds,
                        item_count: UInt32(items.count),
                        items: items.baseAddress,
                        item_parameters: parameters,
                        item_statuses: statuses)
                    return instance.crashContext.during(.listening) {
                        function?(instance.pointer, &cFire, &error.value) ?? SHARDWORK_FAILED
                    }
                }
            }
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
    }
}

/// One item to run: the sharding context the job sees, and the host's services for it.
public struct ItemInvocation: Sendable {
    public var context: ShardingContext
    public var control: ItemControl
    public var logger: Logger

    public init(context: ShardingContext, control: ItemControl, logger: Logger) {
        self.context = context
        self.control = control
        self.logger = logger
    }
}

/// A job type made for one job. Its calls block until the job's code returns: call them from the
/// job's executor threads, never from Swift's cooperative pool.
public final class JobTypeInstance: Sendable {
    public enum Shape: Sendable, Equatable {
        case simple, dataflow
    }

    private let instance: ProviderInstance
    /// The plugin's pointer for this instance, kept here too: an item's call then reads one object.
    nonisolated(unsafe) private let pointer: UnsafeMutableRawPointer?
    private let table: shardwork_job_type_vtable

    public var provider: RegisteredProvider { instance.provider }
    public let shape: Shape
    /// The job the instance was made for, for the crash journal.
    var crashContext: CrashContext? { instance.crashContext }

    public init(_ provider: RegisteredProvider, setup: ProviderSetup, crashContext: CrashContext? = nil) throws(ProviderCallError) {
        precondition(provider.kind == .jobType, "\(provider.label) is not a job type")
        table = provider.table.vtable.assumingMemoryBound(to: shardwork_job_type_vtable.self).pointee
        shape = table.shape == UInt32(SHARDWORK_JOB_SHAPE_DATAFLOW) ? .dataflow : .simple
        instance = try ProviderInstance(provider, setup: setup, create: table.create, destroy: table.destroy, crashContext: crashContext)
        pointer = instance.pointer
    }

    /// Runs a simple job's item.
    public func execute(_ item: ItemInvocation) throws(ProviderCallError) {
        try execute(ItemCall(item))
    }

    /// A simple job type's `execute` and the plugin's instance, for a caller that keeps them next
    /// to contexts it made ahead (an armed fire); `nil` for a dataflow job type.
    var directExecute: DirectExecute? {
        guard shape == .simple, let function = table.execute else { return nil }
        return DirectExecute(function: function, instance: pointer, crashMark: crashContext?.mark)
    }

    struct DirectExecute: @unchecked Sendable {
        // The plugin's function, its instance for this job and the job's crash context, valid
        // while the job type lives.
        let function: @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<shardwork_item_context>?, UnsafeMutablePointer<shardwork_error>?
        ) -> Int32
        let instance: UnsafeMutableRawPointer?
        let crashMark: CrashContext.Mark?

        /// Runs the item of `context`, in the crash journal's view of the job.
        @inline(__always)
        func call(_ context: UnsafePointer<shardwork_item_context>, _ error: UnsafeMutablePointer<shardwork_error>) -> Int32 {
            guard let crashMark else { return function(instance, context, error) }
            return crashMark.during(.running) { function(instance, context, error) }
        }
    }

    /// The error of a failed call through ``directExecute``.
    func callError(_ record: ErrorRecord, status: Int32) -> ProviderCallError {
        record.callError(instance.provider, status: status)
    }

    /// Runs a simple job's item whose C context was made ahead (``ItemCall``).
    func execute(_ call: ItemCall) throws(ProviderCallError) {
        var error = ErrorRecord()
        let status = instance.crashContext.during(.running) {
            table.execute?(pointer, call.context, &error.value) ?? SHARDWORK_FAILED
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
    }

    /// One fetched batch of a dataflow job; released through the plugin when dropped.
    public final class Batch: @unchecked Sendable {
        // The plugin owns the pointer until release_batch, which deinit calls once.
        public let count: Int
        fileprivate let pointer: UnsafeMutableRawPointer?
        private let owner: JobTypeInstance

        fileprivate init(count: Int, pointer: UnsafeMutableRawPointer?, owner: JobTypeInstance) {
            self.count = count
            self.pointer = pointer
            self.owner = owner
        }

        deinit {
            owner.table.release_batch?(owner.instance.pointer, pointer)
        }
    }

    /// Fetches a dataflow job's next batch; `nil` when there is no data.
    public func fetch(_ item: ItemInvocation) throws(ProviderCallError) -> Batch? {
        try fetch(ItemCall(item))
    }

    func fetch(_ call: ItemCall) throws(ProviderCallError) -> Batch? {
        var error = ErrorRecord()
        var batch: UnsafeMutableRawPointer?
        var count: UInt64 = 0
        let status = instance.crashContext.during(.running) {
            table.fetch?(pointer, call.context, &batch, &count, &error.value) ?? SHARDWORK_FAILED
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
        guard count > 0 else {
            if batch != nil { table.release_batch?(instance.pointer, batch) }
            return nil
        }
        return Batch(count: Int(clamping: count), pointer: batch, owner: self)
    }

    /// Processes a batch that ``fetch(_:)`` returned.
    public func process(_ item: ItemInvocation, _ batch: Batch) throws(ProviderCallError) {
        try process(ItemCall(item), batch)
    }

    func process(_ call: ItemCall, _ batch: Batch) throws(ProviderCallError) {
        var error = ErrorRecord()
        let status = instance.crashContext.during(.running) {
            table.process?(pointer, call.context, batch.pointer, &error.value) ?? SHARDWORK_FAILED
        }
        guard status == SHARDWORK_OK else { throw error.callError(instance.provider, status: status) }
    }
}

/// The C view of one item's invocation: its `shardwork_item_context`, the C strings it points to
/// and the host services behind its `host_context`, made once and valid as long as the call object
/// lives. A fire armed ahead of its instant makes them then, so that starting the item at the
/// instant is only the plugin's call.
final class ItemCall: @unchecked Sendable {
    // Written once in init, read-only afterwards; freed in deinit.
    let invocation: ItemInvocation
    let context: UnsafeMutablePointer<shardwork_item_context>
    private let arena = CArena()
    private let services: ItemServices

    /// The host's item services, the same table for every call: the item's own state comes through
    /// `host_context`.
    nonisolated(unsafe) private static let hostAPI: UnsafeMutablePointer<shardwork_item_host_api> = {
        let api = UnsafeMutablePointer<shardwork_item_host_api>.allocate(capacity: 1)
        api.initialize(to: shardwork_item_host_api(
            struct_size: UInt32(MemoryLayout<shardwork_item_host_api>.size),
            is_cancelled: { context in
                guard let context else { return 1 }
                return Unmanaged<ItemServices>.fromOpaque(context).takeUnretainedValue().control.isCancelled ? 1 : 0
            },
            is_epoch_current: { context, epoch in
                guard let context else { return -1 }
                switch Unmanaged<ItemServices>.fromOpaque(context).takeUnretainedValue().control.isEpochCurrent(epoch) {
                case true?: return 1
                case false?: return 0
                case nil: return -1
                }
            },
            log: { context, level, message in
                guard let context else { return }
                let services = Unmanaged<ItemServices>.fromOpaque(context).takeUnretainedValue()
                let logLevel = Logger.Level(pluginLevel: level)
                guard services.logger.logLevel <= logLevel else { return }
                services.logger.log(level: logLevel, "\(LogText.escaped(cString: message))")
            }))
        return api
    }()

    init(_ invocation: ItemInvocation) {
        self.invocation = invocation
        services = ItemServices(control: invocation.control, logger: invocation.logger)
        let item = invocation.context
        context = .allocate(capacity: 1)
        context.initialize(to: shardwork_item_context(
            struct_size: UInt32(MemoryLayout<shardwork_item_context>.size),
            job_name: arena.string(item.jobName),
            task_id: arena.string(item.taskID),
            sharding_total_count: UInt32(clamping: item.shardingTotalCount),
            job_parameter: arena.string(item.jobParameter),
            sharding_item: UInt32(clamping: item.shardingItem),
            sharding_parameter: item.shardingParameter.map { arena.string($0) },
            fire_time_ms: item.fireTimeMilliseconds,
            fencing_epoch: item.fencingEpoch,
            host: Self.hostAPI,
            host_context: Unmanaged.passUnretained(services).toOpaque()))
    }

    deinit {
        context.deinitialize(count: 1)
        context.deallocate()
    }
}

private final class ItemServices: Sendable {
    let control: ItemControl
    let logger: Logger

    init(control: ItemControl, logger: Logger) {
        self.control = control
        self.logger = logger
    }
}

extension RegisteredProvider {
    var callLabel: String { "\(kind) '\(name)' of plugin \(plugin.name)" }
}

// MARK: C values with a lifetime

/// Owns the C strings and arrays made for one call and frees them when the call is over.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ text: String) -> UnsafePointer<CChar> {
        let copy = strdup(text)!
        allocations.append(UnsafeMutableRawPointer(copy))
        return UnsafePointer(copy)
    }

    func stringArray(_ texts: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        optionalStringArray(texts)
    }

    func optionalStringArray(_ texts: [String?]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(texts.count, 1))
        allocations.append(UnsafeMutableRawPointer(array))
        for (index, text) in texts.enumerated() {
            array[index] = text.map(string)
        }
        return UnsafePointer(array)
    }

    func properties(_ properties: JobProperties) -> shardwork_properties {
        let entries = properties.entries
        let items = UnsafeMutablePointer<shardwork_property>.allocate(capacity: max(entries.count, 1))
        allocations.append(UnsafeMutableRawPointer(items))
        for (index, entry) in entries.enumerated() {
            (items + index).initialize(to: shardwork_property(key: string(entry.key), value: string(entry.value)))
        }
        return shardwork_properties(count: UInt32(entries.count), items: items)
    }

    deinit {
        for allocation in allocations { free(allocation) }
    }
}

private func withOptionalBuffer<Element, Result>(
    _ array: [Element]?, _ body: (UnsafePointer<Element>?) -> Result
) -> Result {
    guard let array else { return body(nil) }
    return array.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// A zeroed `shardwork_error` for one call, read back into a `ProviderCallError`.
struct ErrorRecord {
    var value: shardwork_error

    init() {
        value = shardwork_error()
        value.struct_size = UInt32(MemoryLayout<shardwork_error>.size)
    }

    func callError(_ provider: RegisteredProvider, status: Int32) -> ProviderCallError {
        var record = value
        let message = withUnsafeBytes(of: &record.message) { Self.text($0) }
        let field = withUnsafeBytes(of: &record.field) { Self.text($0) }
        return ProviderCallError(
            provider: provider.callLabel, status: status,
            message: message.isEmpty ? "it returned status \(status) without a message" : message,
            field: field.isEmpty ? nil : field, code: record.code)
    }

    /// The text up to the first NUL, or the whole buffer when the plugin did not terminate it.
    private static func text(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
