public import CoreMetrics
import DequeModule
import Foundation
public import Logging
public import ShardworkCore
import Synchronization

/// Writes a host's execution history from its event stream, never on the fire path's threads.
///
/// A reader task takes the host's events as they come and turns them into rows; a writer task
/// hands the rows to the store in batches, one transaction each. Both run on threads of their own
/// at the lowest priority (``BackgroundThreadExecutor``), so that the fire path's threads do not
/// wait for them: on a busy host the history falls behind, never the fires. The
/// writer lets rows gather for ``linger`` before it writes, so that a short item's start and end are
/// one insert of the complete row rather than an insert and an update.
///
/// The queue is bounded: while the database is slow or down, rows wait up to ``capacity`` and the
/// ones that do not fit are dropped and counted (``dropped``, and a warning once a minute with the
/// count). When the database answers again, writing resumes by itself, oldest rows first.
/// ``finish(within:)`` writes what is queued at a graceful shutdown.
public final class HistoryWriter: Sendable {
    public let store: any HistoryStore
    public let capacity: Int
    private let events: HostEvents
    private let instance: JobInstance
    private let hostname: String
    private let retention: Duration?
    private let logger: Logger
    private let state = Mutex(State())
    private let droppedRows = Atomic<Int>(0)
    private let writtenRows = Atomic<Int>(0)
    /// The same figures in the metrics (docs/metrics.md).
    private let rowsQueuedGauge: Gauge
    private let rowsWrittenCounter: Counter
    private let rowsDroppedCounter: Counter
    private let ids = RowIDs()
    /// The subscription being read, for its count of lost events.
    private let subscription = Mutex<HostEventSubscription?>(nil)
    /// Where events become rows, and where rows go to the database.
    private let reading = BackgroundThreadExecutor(name: "history-read")
    private let writing = BackgroundThreadExecutor(name: "history-write")
    /// How long rows gather before a batch smaller than ``batchSize`` is written.
    let linger: Duration

    /// Rows per transaction, at most.
    static let batchSize = 20_000
    /// The longest the writer waits before it tries a failing database again.
    static let longestRetry: Duration = .seconds(30)
    /// How often a count of dropped rows is logged, at most.
    static let dropReportInterval: Duration = .seconds(60)
    /// How often old rows are removed.
    static let purgeInterval: Duration = .seconds(3600)

    private struct State {
        var queue = Deque<HistoryWrite>()
        /// The writer waiting for rows.
        var waiting: CheckedContinuation<Void, Never>?
        /// Executions started and not ended yet, by job and item (a job runs one fire at a time
        /// on a host).
        var open: [String: [Int: ExecutionRecord]] = [:]
        /// Rows taken from the queue and being written now.
        var inFlight = 0
    }

    /// - Parameters:
    ///   - capacity: the most rows that wait for the database.
    ///   - retentionDays: rows older than this are removed every hour; `nil` keeps them.
    ///   - linger: how long rows gather before a batch is written (rows reach the database that
    ///     much later).
    public init(
        store: any HistoryStore, events: HostEvents, instance: JobInstance, hostname: String, capacity: Int = 100_000,
        retentionDays: Int? = nil, linger: Duration = .milliseconds(250), logger: Logger,
        metrics factory: any MetricsFactory = MetricsSystem.factory
    ) {
        rowsQueuedGauge = Gauge(label: MetricNames.historyRowsQueued, dimensions: [], factory: factory)
        rowsWrittenCounter = Counter(label: MetricNames.historyRowsWritten, dimensions: [], factory: factory)
        rowsDroppedCounter = Counter(label: MetricNames.historyRowsDropped, dimensions: [], factory: factory)
        self.linger = linger
        self.store = store
        self.events = events
        self.instance = instance
        self.hostname = hostname
        self.capacity = max(1, capacity)
        self.retention = retentionDays.map { .seconds(Int64($0) * 86_400) }
        self.logger = logger
    }

    deinit {
        reading.stop()
        writing.stop()
    }

    /// Rows dropped because the queue was full.
    public var dropped: Int { droppedRows.load(ordering: .relaxed) }
    /// Rows handed to the database.
    public var written: Int { writtenRows.load(ordering: .relaxed) }
    /// Rows waiting for the database.
    public var queued: Int { state.withLock { $0.queue.count } }
    /// Rows not written yet: those waiting and those being written now (at most ``capacity``).
    public var held: Int { state.withLock { $0.queue.count + $0.inFlight } }
    /// The host's events lost because the writer fell behind by more than its event buffer.
    public var eventsDropped: Int { subscription.withLock { $0?.dropped } ?? 0 }

    /// Follows the host's events and writes them until the task is cancelled (then what is queued
    /// is left for ``finish(within:)``). Subscribe before the host starts: call it from a task
    /// started first, or use ``subscribe()``.
    public func run() async {
        await run(subscribe())
    }

    /// A subscription made now, for ``run(_:)``: so that no event of a host starting right after is
    /// missed. It takes the host's events in batches, at most every ``eventLinger``: the fire path
    /// then only appends events to a buffer, and wakes the writer a few times a second.
    public func subscribe() -> HostEventSubscription {
        events.subscribe(buffer: HostEvents.defaultBuffer, linger: Self.eventLinger)
    }

    /// How often, at most, the writer takes the events that came.
    static let eventLinger: Duration = .milliseconds(50)

    public func run(_ subscription: HostEventSubscription) async {
        self.subscription.withLock { $0 = subscription }
        await withTaskGroup(of: Void.self) { group in
            group.addTask(executorPreference: writing) { await self.write() }
            if retention != nil { group.addTask(executorPreference: writing) { await self.purgeOldRows() } }
            // Until the host's event stream ends (the host stopped) or the task is cancelled.
            await withTaskExecutorPreference(reading) { await self.read(subscription) }
            // Nobody reads it any more: the host stops making events for it (its count of lost
            // events stays readable).
            subscription.cancel()
            group.cancelAll()
        }
    }

    /// Writes what is queued, for at most `limit`; returns how many rows were left unwritten.
    public func finish(within limit: Duration) async -> Int {
        await withTaskExecutorPreference(writing) { await self.writeQueued(within: limit) }
    }

    private func writeQueued(within limit: Duration) async -> Int {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let batch = take()
            if batch.isEmpty { break }
            do {
                try await store.apply(Self.coalesced(batch))
                written(batch)
            } catch {
                putBack(batch)
                logger.warning("history: cannot write the queued rows as the host stops", metadata: ["error": "\(LogText.escaped("\(error)"))"])
                break
            }
        }
        let left = queued
        if left > 0 { logger.warning("history: rows not written as the host stopped", metadata: ["rows": "\(left)"]) }
        return left
    }

    // MARK: Reading events

    private func read(_ subscription: HostEventSubscription) async {
        for await event in subscription {
            let rows = rows(for: event)
            if !rows.isEmpty { enqueue(rows) }
        }
    }

    /// The rows an event makes (and the open executions it starts or ends).
    func rows(for event: HostEvent) -> [HistoryWrite] {
        switch event.kind {
        case .fireStarted(let start):
            let records = start.items.map { item in
                ExecutionRecord(
                    id: ids.next(), jobName: start.job, taskID: start.taskID, hostname: hostname, ip: instance.serverIP, item: item,
                    source: start.source, startTime: start.startedAt, fireTime: start.fireTime, fencingEpoch: start.epochs[item] ?? 0,
                    plugin: start.plugin, pluginVersion: start.pluginVersion, instanceID: instance.id)
            }
            state.withLock { state in
                var open = state.open[start.job, default: [:]]
                for record in records { open[record.item] = record }
                state.open[start.job] = open
            }
            var rows = records.map(HistoryWrite.executionStarted)
            if !start.items.isEmpty {
                rows.append(status(start.job, start.taskID, start.items, .staging, "Job '\(start.job)' execute begin.", event.time))
                rows.append(status(start.job, start.taskID, start.items, .running, "", event.time))
            }
            return rows
        case .fireEnded(let end):
            let opened = state.withLock { state -> [Int: ExecutionRecord] in
                let open = state.open[end.job] ?? [:]
                state.open[end.job] = nil
                return open
            }
            let runs = end.runDetails.isEmpty ? [ItemsRunDetail(outcomes: end.outcomes, itemTimes: end.itemTimes)] : end.runDetails
            var rows: [HistoryWrite] = []
            for (index, run) in runs.enumerated() {
                var taskID = ""
                var ended: [HistoryWrite] = []
                for item in end.items {
                    guard let outcome = run.outcomes[item] else { continue }
                    let times = run.itemTimes[item] ?? ItemTimes(startedAt: end.startedAt, endedAt: end.endedAt)
                    // The fire's own run completes the rows its start opened; each misfire re-run is
                    // an execution of its own.
                    var record = (index == 0 ? opened[item] : nil) ?? opened[item].map { opened in
                        var copy = opened
                        copy.id = ids.next()
                        copy.source = .misfire
                        return copy
                    } ?? ExecutionRecord(
                        id: ids.next(), jobName: end.job, taskID: "", hostname: hostname, ip: instance.serverIP, item: item,
                        source: index == 0 ? end.source : .misfire, startTime: times.startedAt, fireTime: end.fireTime, fencingEpoch: 0,
                        plugin: "", pluginVersion: "", instanceID: instance.id)
                    taskID = record.taskID
                    record.startTime = times.startedAt
                    record.completeTime = times.endedAt
                    record.fenced = index == runs.count - 1 && end.fenced.contains(item)
                    switch outcome {
                    case .succeeded: record.outcome = .succeeded
                    case .failed: record.outcome = .failed
                    case .timedOut: record.outcome = .timedOut
                    }
                    record.failureCause = outcome.failureMessage.map { String($0.prefix(ExecutionRecord.failureCauseLimit)) }
                    ended.append(.executionCompleted(record))
                }
                guard !ended.isEmpty else { continue }
                rows += ended
                let failed = run.outcomes.filter { !$0.value.succeeded }.keys.sorted()
                rows.append(failed.isEmpty
                    ? status(end.job, taskID, end.items, .finished, "", event.time)
                    : status(end.job, taskID, end.items, .error,
                             failed.map { "item \($0): \(run.outcomes[$0]?.failureMessage ?? "")" }.joined(separator: "; "), event.time))
            }
            return rows
        default:
            return []
        }
    }

    private func status(_ job: String, _ taskID: String, _ items: [Int], _ state: StatusTraceRecord.State, _ message: String, _ time: Int64) -> HistoryWrite {
        .status(StatusTraceRecord(
            id: ids.next(), jobName: job, taskID: taskID, slaveID: instance.serverIP, items: items, state: state, message: message,
            creationTime: time))
    }

    private func enqueue(_ rows: [HistoryWrite]) {
        let (waiting, lost, queued) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Int, Int) in
            let room = capacity - state.queue.count
            let taken = min(room, rows.count)
            if taken > 0 { state.queue.append(contentsOf: rows.prefix(taken)) }
            defer { state.waiting = nil }
            return (state.waiting, rows.count - taken, state.queue.count)
        }
        rowsQueuedGauge.record(queued)
        if lost > 0 { drop(lost) }
        waiting?.resume()
    }

    private func drop(_ rows: Int) {
        droppedRows.wrappingAdd(rows, ordering: .relaxed)
        rowsDroppedCounter.increment(by: Int64(rows))
    }

    // MARK: Writing

    private func take() -> [HistoryWrite] {
        state.withLock { state in
            let count = min(Self.batchSize, state.queue.count)
            guard count > 0 else { return [] }
            let batch = Array(state.queue.prefix(count))
            state.queue.removeFirst(count)
            state.inFlight = count
            return batch
        }
    }

    /// A batch reached the database.
    private func written(_ batch: [HistoryWrite]) {
        let queued = state.withLock { state in
            state.inFlight = 0
            return state.queue.count
        }
        writtenRows.wrappingAdd(batch.count, ordering: .relaxed)
        rowsWrittenCounter.increment(by: Int64(batch.count))
        rowsQueuedGauge.record(queued)
    }

    /// The batch with each execution that both starts and ends in it written once, complete: its
    /// start is left out, and its completion inserts the whole row.
    static func coalesced(_ batch: [HistoryWrite]) -> [HistoryWrite] {
        var completed = Set<String>()
        for write in batch {
            if case .executionCompleted(let record) = write { completed.insert(record.id) }
        }
        guard !completed.isEmpty else { return batch }
        return batch.filter { write in
            if case .executionStarted(let record) = write { return !completed.contains(record.id) }
            return true
        }
    }

    /// A batch the database refused goes back to the front of the queue (the newest rows beyond the
    /// capacity are dropped then).
    private func putBack(_ batch: [HistoryWrite]) {
        let lost = state.withLock { state -> Int in
            state.inFlight = 0
            state.queue.insert(contentsOf: batch, at: 0)
            let over = state.queue.count - capacity
            if over > 0 { state.queue.removeLast(over) }
            return max(0, over)
        }
        if lost > 0 { drop(lost) }
    }

    private func waitForRows() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if !state.queue.isEmpty || Task.isCancelled { return true }
                    state.waiting = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state in defer { state.waiting = nil }; return state.waiting }?.resume()
        }
    }

    private func write() async {
        var retry: Duration = .seconds(1)
        var failing = false
        var lastDropReport = ContinuousClock.now
        var reportedDrops = 0
        while !Task.isCancelled {
            await waitForRows()
            // Rows gather a moment: a batch is cheaper per row, and an item that ends meanwhile is
            // written once.
            if queued < Self.batchSize { try? await Task.sleep(for: linger) }
            let batch = take()
            guard !batch.isEmpty else { continue }
            do {
                try await store.apply(Self.coalesced(batch))
                written(batch)
                if failing {
                    failing = false
                    logger.notice("history: the database answers again; writing resumed", metadata: ["rows.queued": "\(queued)"])
                }
                retry = .seconds(1)
            } catch {
                putBack(batch)
                if !failing {
                    failing = true
                    logger.warning(
                        "history: cannot write to the database; rows wait in the queue up to its capacity, then are dropped",
                        metadata: ["error": "\(LogText.escaped("\(error)"))", "capacity": "\(capacity)"])
                }
                try? await Task.sleep(for: retry)
                retry = min(retry * 2, Self.longestRetry)
            }
            let drops = dropped
            if drops > reportedDrops, ContinuousClock.now - lastDropReport >= Self.dropReportInterval {
                logger.warning("history: rows dropped, the queue was full", metadata: ["rows.dropped": "\(drops - reportedDrops)", "rows.dropped.total": "\(drops)"])
                reportedDrops = drops
                lastDropReport = ContinuousClock.now
            }
        }
    }

    private func purgeOldRows() async {
        guard let retention else { return }
        while !Task.isCancelled {
            let milliseconds = retention.components.seconds * 1000
            let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - milliseconds
            do {
                let removed = try await store.purge(before: cutoff)
                if removed > 0 { logger.info("history: removed old rows", metadata: ["rows": "\(removed)"]) }
            } catch {
                logger.warning("history: cannot remove old rows", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
            try? await Task.sleep(for: Self.purgeInterval)
        }
    }
}

/// Row ids as ElasticJob writes them (UUID text, version 4 in form), made without a system call
/// per row: 60 random bits chosen once per writer, so ids of hosts sharing a database do not
/// collide, and a counter.
final class RowIDs: Sendable {
    private let prefix: UInt64
    private let counter = Atomic<UInt64>(0)

    init() {
        var random = SystemRandomNumberGenerator()
        // The version nibble (4) sits in the 7th byte.
        prefix = (random.next() & ~0xF000) | 0x4000
    }

    func next() -> String {
        let count = counter.wrappingAdd(1, ordering: .relaxed).oldValue
        // The variant bits (10) lead the 9th byte.
        let suffix = (count & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return String(unsafeUninitializedCapacity: 36) { buffer in
            let digits: StaticString = "0123456789abcdef"
            var index = 0
            func put(_ value: UInt64, nibbles: ClosedRange<Int>) {
                for nibble in nibbles.reversed() {
                    buffer[index] = digits.utf8Start[Int((value >> (UInt64(nibble) * 4)) & 0xF)]
                    index += 1
                }
            }
            put(prefix, nibbles: 8...15)
            buffer[index] = UInt8(ascii: "-"); index += 1
            put(prefix, nibbles: 4...7)
            buffer[index] = UInt8(ascii: "-"); index += 1
            put(prefix, nibbles: 0...3)
            buffer[index] = UInt8(ascii: "-"); index += 1
            put(suffix, nibbles: 12...15)
            buffer[index] = UInt8(ascii: "-"); index += 1
            put(suffix, nibbles: 0...11)
            return index
        }
    }
}
