import Dispatch
import Foundation
import Synchronization

/// How one item of a fire ended.
public enum ItemOutcome: Sendable, Equatable {
    case succeeded
    /// The job's code reported a failure (or threw).
    case failed(message: String, code: Int32)
    /// The item ran past the job's item timeout; it was asked to stop and the fire went on.
    case timedOut(seconds: Double)

    public var succeeded: Bool { self == .succeeded }

    public var failureMessage: String? {
        switch self {
        case .succeeded: nil
        case .failed(let message, _): message
        case .timedOut(let seconds): "the item did not finish within its timeout of \(seconds) seconds; it was asked to stop"
        }
    }

    public var code: Int32 {
        if case .failed(_, let code) = self { return code }
        return 0
    }
}

/// Runs the items of one fire on the worker pool, at most `concurrency` at once, and reports each
/// item's outcome. One item's failure does not stop the others. An item that outlives `timeout` is
/// counted as timed out and asked to stop (its `isCancelled` turns true); the pool replaces its
/// thread and the fire finishes without it.
package final class ItemBatch: Sendable {
    /// Runs one item (blocking); `isCancelled` tells whether the item has been asked to stop.
    package typealias Run = @Sendable (_ item: Int, _ isCancelled: @escaping @Sendable () -> Bool) -> ItemOutcome

    private struct State {
        var pending: ArraySlice<Int>
        var running: Set<Int> = []
        var outcomes: [Int: ItemOutcome] = [:]
        var cancelled: Set<Int> = []
        /// The host's cancellation, and its stamp when the batch started.
        var cancellation: ItemBatchCancellation?
        var stamp: UInt64 = 0
        var completion: (@Sendable ([Int: ItemOutcome]) -> Void)?
    }

    private let state: Mutex<State>
    private let total: Int
    private let pool: WorkerPool
    private let timeout: Double?
    private let stuck: StuckItems?
    private let run: Run

    private init(items: [Int], pool: WorkerPool, timeout: Double?, stuck: StuckItems?, run: @escaping Run) {
        state = Mutex(State(pending: items[...]))
        total = items.count
        self.pool = pool
        self.timeout = timeout
        self.stuck = stuck
        self.run = run
    }

    /// Runs `items` and returns when every one has an outcome. `cancellation` lets the caller ask
    /// every running item to stop (the host's shutdown deadline).
    /// `stuck` records the items given up on at their timeout that have not returned yet.
    package static func run(
        _ items: [Int], concurrency: Int, pool: WorkerPool, timeout: Double?,
        cancellation: ItemBatchCancellation? = nil, stuck: StuckItems? = nil, run: @escaping Run
    ) async -> [Int: ItemOutcome] {
        guard !items.isEmpty else { return [:] }
        return await withCheckedContinuation { continuation in
            ItemBatch(items: items, pool: pool, timeout: timeout, stuck: stuck, run: run).start(
                concurrency: concurrency, cancellation: cancellation, completion: { continuation.resume(returning: $0) })
        }
    }

    /// Starts the batch: at most `concurrency` runners go to the pool, and `completion` is called
    /// once, on the thread of the last item to end, with every outcome.
    private func start(
        concurrency: Int, cancellation: ItemBatchCancellation?, completion: @escaping @Sendable ([Int: ItemOutcome]) -> Void
    ) {
        state.withLock {
            $0.completion = completion
            $0.cancellation = cancellation
            $0.stamp = cancellation?.stamp ?? 0
        }
        let accepted = pool.submit(contentsOf: Array(repeating: { self.runner() }, count: max(1, min(concurrency, total))))
        guard !accepted else { return }
        // The host is stopping and its pool takes no work: the items end, not run, at once.
        while let item = next() {
            _ = finish(item, .failed(message: "not run: the host is stopping", code: 0))
        }
    }

    /// One of the batch's runners: takes items until none is left, or until its item timed out
    /// (then a replacement runner has taken over).
    private func runner() {
        while let item = next() {
            if let timeout {
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [self] in timeOut(item, after: timeout) }
            }
            let outcome = run(item) { [self] in isCancelled(item) }
            if !finish(item, outcome) {
                // This item timed out earlier; the pool counted this thread as stuck.
                stuck?.returned(item)
                pool.releaseStuck()
                return
            }
        }
    }

    private func next() -> Int? {
        state.withLock { state in
            guard let item = state.pending.popFirst() else { return nil }
            state.running.insert(item)
            return item
        }
    }

    private func isCancelled(_ item: Int) -> Bool {
        state.withLock { state in
            state.cancelled.contains(item) || state.cancellation?.isCancelled(since: state.stamp) == true
        }
    }

    /// Records an outcome; returns false when the item had already been given up on.
    private func finish(_ item: Int, _ outcome: ItemOutcome) -> Bool {
        let (recorded, completion, outcomes) = state.withLock { state -> (Bool, (@Sendable ([Int: ItemOutcome]) -> Void)?, [Int: ItemOutcome]) in
            guard state.running.remove(item) != nil else { return (false, nil, [:]) }
            state.outcomes[item] = outcome
            return (true, takeCompletion(&state), state.outcomes)
        }
        completion?(outcomes)
        return recorded
    }

    private func timeOut(_ item: Int, after seconds: Double) {
        let (timedOut, completion, morePending, outcomes) = state.withLock {
            state -> (Bool, (@Sendable ([Int: ItemOutcome]) -> Void)?, Bool, [Int: ItemOutcome]) in
            guard state.running.remove(item) != nil else { return (false, nil, false, [:]) }
            state.outcomes[item] = .timedOut(seconds: seconds)
            state.cancelled.insert(item)
            return (true, takeCompletion(&state), !state.pending.isEmpty, state.outcomes)
        }
        guard timedOut else { return }
        stuck?.givenUp(item)
        pool.markStuck()
        if morePending { pool.submit { [self] in runner() } }
        completion?(outcomes)
    }

    private func takeCompletion(_ state: inout State) -> (@Sendable ([Int: ItemOutcome]) -> Void)? {
        guard state.outcomes.count == total, let completion = state.completion else { return nil }
        state.completion = nil
        return completion
    }
}

/// Lets the host ask every item of the batches running now to stop. Lock-free: a batch takes a
/// stamp when it starts, and its items are cancelled when the stamp has changed since (or when
/// everything is cancelled), so starting and ending a batch costs nothing here.
package final class ItemBatchCancellation: Sendable {
    private let generation = Atomic<UInt64>(0)
    private let everything = Atomic<Bool>(false)

    package init() {}

    /// What a batch starting now records.
    var stamp: UInt64 { generation.load(ordering: .acquiring) }

    /// Whether a batch that started with `stamp` is asked to stop.
    func isCancelled(since stamp: UInt64) -> Bool {
        everything.load(ordering: .acquiring) || generation.load(ordering: .acquiring) != stamp
    }

    /// Every item of the batches running now sees `isCancelled == true`; later batches do not.
    package func cancelRunning() {
        generation.add(1, ordering: .acquiringAndReleasing)
    }

    /// From now on every item of every batch sees `isCancelled == true`.
    package func cancelAll() {
        everything.store(true, ordering: .releasing)
    }
}

/// A job's items that were given up on at their timeout and have not returned: each holds a
/// thread of the host (a thread cannot be stopped), so such an item is not started again until it
/// returns, which bounds what one job's items can hold to one thread per item, and never runs an
/// item twice at once. Each is reported once, when a fire finds it still running.
package final class StuckItems: Sendable {
    private let items = Mutex<[Int: (since: ContinuousClock.Instant, reported: Bool)]>([:])
    private let onReturn: @Sendable (_ item: Int, _ after: Duration) -> Void

    /// `onReturn` is told when an item given up on returns at last, and how long after.
    package init(onReturn: @escaping @Sendable (_ item: Int, _ after: Duration) -> Void = { _, _ in }) {
        self.onReturn = onReturn
    }

    func givenUp(_ item: Int) {
        items.withLock { $0[item] = (ContinuousClock.now, false) }
    }

    /// The item returned: how long after it was given up on, if it was.
    func returned(_ item: Int) {
        if let entry = items.withLock({ $0.removeValue(forKey: item) }) {
            onReturn(item, ContinuousClock.now - entry.since)
        }
    }

    /// The items of `items` still running since they were given up on, and those of them not
    /// reported before (now marked reported).
    func holding(_ items: [Int]) -> (held: Set<Int>, unreported: [Int: Duration]) {
        self.items.withLock { stuck in
            var held = Set<Int>()
            var unreported: [Int: Duration] = [:]
            for item in items {
                guard let entry = stuck[item] else { continue }
                held.insert(item)
                if !entry.reported {
                    stuck[item]?.reported = true
                    unreported[item] = ContinuousClock.now - entry.since
                }
            }
            return (held, unreported)
        }
    }

    /// How many items of the job hold a thread now.
    package var count: Int { items.withLock { $0.count } }
}
