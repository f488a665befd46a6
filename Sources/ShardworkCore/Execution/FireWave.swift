import CShardworkPlugin
import CShardworkSupport
import Dispatch
import Glibc
import ShardworkSDK
import Synchronization

// How a burst of fires is started: every fire armed for one instant joins that instant's wave,
// and at the instant the timer hands the whole wave to the worker pool at once. The pool's threads
// take its fires a few at a time and start their items on the spot, with everything made ahead;
// the ends of the fires (start and end events, outcomes, logs, what runs next) wait until every
// fire of the wave has started (20 ms at the most).

/// A scheduled fire prepared ahead of its instant by ``JobRuntime/arm(deadline:)``: its items,
/// their C contexts and the next fire time, worked out from the cached registry snapshot, so that
/// starting it is a few checks and the plugin's call.
///
/// Thousands of fires start in one instant, each touching its own memory for the first time since
/// it was armed, so what starting one reads is kept in this object as far as possible: the checks
/// compare values kept here with the job's and the wave's, and the items' calls read nothing of
/// the job's preparation.
final class ArmedFire: @unchecked Sendable {
    // Everything but the run state is set before the fire is published (`calls` and `contexts`
    // right after init) and read-only afterwards. `failures` is written by the runners of failed
    // items and read by the runner that ended the fire, after `remaining` reached 0.
    /// Strong: the runtime's own reference to its armed fire ends when a wave claims it, the timer
    /// passes it by, another fire is armed or the job stops (which also takes it off its wave).
    let runtime: JobRuntime
    /// The same runtime, called without retaining it: a runtime that is referenced weakly anywhere
    /// keeps its reference count aside, and counting it at every start costs another cache miss.
    let unretainedRuntime: Unmanaged<JobRuntime>
    let deadline: Int64
    /// The fire time after this one.
    let next: Int64?
    /// The preparation it was made from; another one by the instant (a configuration change, a
    /// hot-load) makes it stale.
    let preparation: ObjectIdentifier
    /// The job's snapshot cache and its generation when the fire was made: any registry change
    /// since makes it stale.
    let cache: SnapshotCache
    let cacheGeneration: UInt64
    /// The registry session and fencing generation the items belong to: if either changed by the
    /// instant, the fire is stale.
    let session: Int64?
    let fencingGeneration: UInt64
    /// The items' C contexts, one block in the order of `items` (their strings and host services
    /// belong to `calls`).
    private(set) var contexts: UnsafeMutablePointer<shardwork_item_context>?
    /// A simple job's plugin function, called with `contexts` directly.
    let direct: JobTypeInstance.DirectExecute?
    /// How many more of the pool's threads run items of the fire (its executor's limit, less one).
    let helpers: Int
    /// `items.count`, kept here: the array's own memory is not read when the fire starts.
    let itemCount: Int
    private let nextItem = Atomic<Int>(0)
    private let remaining: Atomic<Int>
    /// The host's cancellation stamp when the fire started (see ``ItemBatchCancellation``).
    let stamp = Atomic<UInt64>(0)
    /// When the fire started (the wave's reading of the clock), written with `stamp` by the runner
    /// that claims it, next to it: a start touches no other cache line for it. (An atomic rather
    /// than a `var`: a class's stored `var` costs an exclusivity check at every access.)
    let startedAt = Atomic<Int64>(0)
    /// The wave the fire joined (set by the board, under its lock; read from other threads).
    /// Once the wave is launched, the wave starts the fire.
    private let joined = Mutex<WeakWave>(WeakWave())

    /// One call per item, in the order of `items`.
    private(set) var calls: [ItemCall] = []
    let jobType: JobTypeInstance
    let streaming: Bool
    /// Items that did not succeed, by their index in `items`.
    private let failures = Mutex<[Int: ItemOutcome]>([:])
    let job: PreparedJob
    let items: [Int]
    let taskID: String

    init(
        runtime: JobRuntime, deadline: Int64, job: PreparedJob, jobType: JobTypeInstance, cache: SnapshotCache, cacheGeneration: UInt64,
        items: [Int], taskID: String, next: Int64?, session: Int64?, fencingGeneration: UInt64
    ) {
        self.runtime = runtime
        unretainedRuntime = .passUnretained(runtime)
        self.deadline = deadline
        preparation = ObjectIdentifier(job)
        self.cache = cache
        self.cacheGeneration = cacheGeneration
        self.session = session
        self.fencingGeneration = fencingGeneration
        self.jobType = jobType
        direct = jobType.directExecute
        streaming = job.streamingProcess
        helpers = max(0, min(job.threadCount, items.count) - 1)
        remaining = Atomic(items.count)
        itemCount = items.count
        self.job = job
        self.items = items
        self.taskID = taskID
        self.next = next
    }

    deinit {
        contexts?.deallocate()
    }

    /// Each item's fencing epoch, as its context has it.
    var epochs: [Int: UInt64] {
        Dictionary(uniqueKeysWithValues: calls.map { ($0.invocation.context.shardingItem, $0.invocation.context.fencingEpoch) })
    }

    /// Sets the items' calls, once, before the fire is armed.
    func setCalls(_ calls: [ItemCall]) {
        precondition(self.calls.isEmpty && calls.count == items.count)
        self.calls = calls
        let contexts = UnsafeMutablePointer<shardwork_item_context>.allocate(capacity: calls.count)
        for (index, call) in calls.enumerated() { (contexts + index).initialize(to: call.context.pointee) }
        self.contexts = contexts
    }

    /// Runs items of the fire on this thread until none is left. Returns true when this call ended
    /// the fire's last item: the caller then ends the fire.
    func runItems() -> Bool {
        var ended = false
        while true {
            let index = nextItem.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < itemCount else { return ended }
            let outcome: ItemOutcome
            if let direct, let contexts {
                var error = ErrorRecord()
                let status = direct.call(contexts + index, &error.value)
                if status == SHARDWORK_OK {
                    outcome = .succeeded
                } else {
                    let failure = jobType.callError(error, status: status)
                    outcome = .failed(message: failure.message, code: failure.code)
                }
            } else {
                outcome = JobRuntime.runItem(jobType, streaming: streaming, calls[index]) {
                    unretainedRuntime._withUnsafeGuaranteedRef { $0.reshardingNeeded.load(ordering: .relaxed) }
                }
            }
            if !outcome.succeeded { failures.withLock { $0[index] = outcome } }
            if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { ended = true }
        }
    }

    /// Every item's outcome; read once the fire has ended.
    var outcomesByItem: [Int: ItemOutcome] {
        let failures = failures.withLock { $0 }
        return Dictionary(uniqueKeysWithValues: items.enumerated().map { ($1, failures[$0] ?? .succeeded) })
    }

    /// Whether every item succeeded; read once the fire has ended.
    var allSucceeded: Bool { failures.withLock { $0.isEmpty } }

    /// Whether the fire's wave has been handed to the pool.
    var isReleased: Bool { joined.withLock { $0.wave }?.launched.load(ordering: .acquiring) ?? false }

    fileprivate func join(_ wave: FireWave) { joined.withLock { $0.wave = wave } }

    /// Where starting the fire reads memory: the fire, its runtime's state, its snapshot cache and
    /// its first item's context. Raw addresses, for prefetching without touching reference counts.
    fileprivate var addresses: FireAddresses {
        FireAddresses(
            fire: UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()),
            runtime: UnsafeRawPointer(unretainedRuntime.toOpaque()),
            cache: UnsafeRawPointer(Unmanaged.passUnretained(cache).toOpaque()),
            context: contexts.map { UnsafeRawPointer($0) })
    }
}

/// Weak: a wave holds its fires, and a fire must not hold its wave.
private struct WeakWave {
    weak var wave: FireWave?
}

private struct FireAddresses {
    let fire: UnsafeRawPointer
    let runtime: UnsafeRawPointer
    let cache: UnsafeRawPointer
    let context: UnsafeRawPointer?

    /// Asks for every line that starting the fire reads: the fire's and the runtime's first few
    /// (their hot fields come first), the cache's, the context's.
    func prefetch() {
        for line in 0..<3 { shardwork_prefetch(fire + 64 * line) }
        for line in 0..<3 { shardwork_prefetch(runtime + 64 * line) }
        shardwork_prefetch(cache)
        shardwork_prefetch(cache + 64)
        if let context {
            shardwork_prefetch(context)
            shardwork_prefetch(context + 64)
        }
    }
}

/// What a wave's runner reads now and then rather than for every fire: the registry's session and
/// whether it has gone silent (both take a lock), and the time. The host's own state (whether
/// items may start, the fencing generation) is read for every fire.
struct WaveGate: Sendable {
    let session: Int64?
    let silent: Bool
    /// The scheduler's clock (epoch milliseconds) when the gate was read: a fire that starts more
    /// than a second after its instant is a late one.
    let now: Int64
    /// The coarse monotonic clock's reading when the gate was read.
    let tick: Int64

    init(_ services: HostServices, registry: any RegistryCenter) {
        session = registry.sessionID
        silent = services.registrySilent(registry)
        now = services.clock.now()
        tick = Self.coarseTick()
    }

    /// Whether the gate was read at an earlier tick of the coarse clock (a few milliseconds ago):
    /// then it is read again before the next fire.
    var isOld: Bool { Self.coarseTick() != tick }

    /// `CLOCK_MONOTONIC_COARSE` in nanoseconds: a few nanoseconds to read, a few milliseconds of
    /// resolution.
    private static func coarseTick() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

/// What a runner started and saw end and has not reported yet, in order, readable by another thread
/// when the runner is held up in a long item.
///
/// A fire's start event is published from here after the wave's starts, not as the fire starts:
/// describing thousands of starts and handing them to the event stream would delay the starts
/// behind them. Whoever takes the log publishes the start events it holds before letting go of
/// the log's lock, so a fire's start event always comes before its end, whichever thread ends it.
final class RunnerLog: Sendable {
    private enum Entry {
        case started(ArmedFire)
        case ended(ArmedFire)
    }

    private let entries = Mutex<[Entry]>([])

    /// The fire's items are about to run on this runner; its start event is still to publish.
    func started(_ fire: ArmedFire) { entries.withLock { $0.append(.started(fire)) } }

    /// The fire's items ended on this runner; the fire is still to end.
    func ended(_ fire: ArmedFire) { entries.withLock { $0.append(.ended(fire)) } }

    /// Whether nothing waits to be reported.
    var isEmpty: Bool { entries.withLock { $0.isEmpty } }

    /// Publishes the start events held, and returns the fires to end, in the order they ended.
    func take() -> [ArmedFire] {
        entries.withLock { entries in
            defer { entries.removeAll(keepingCapacity: true) }
            var ended: [ArmedFire] = []
            for entry in entries {
                switch entry {
                case .started(let fire): fire.unretainedRuntime._withUnsafeGuaranteedRef { $0.reportArmedStart(fire) }
                case .ended(let fire): ended.append(fire)
                }
            }
            return ended
        }
    }
}

/// The fires armed for one instant.
///
/// Runners take the fires in chunks of a few: a runner asks for the memory of its next chunk while
/// it starts the fires of the current one, so that the misses of thousands of fires armed a
/// quarter of a second earlier overlap instead of adding up. Each fire of a chunk is still taken
/// one at a time, from the chunk's own counter, and a runner with nothing left takes what other
/// runners left in theirs: a fire never waits for a long item of another job in its chunk.
final class FireWave: @unchecked Sendable {
    // `fires` and `addresses` are appended to under the board's lock until the wave is taken, and
    // only read after; `counters` is made by `launch`, before any runner starts.
    let deadline: Int64
    fileprivate(set) var fires: [ArmedFire] = []
    fileprivate var addresses: [FireAddresses] = []
    /// Set once the wave has been handed to the pool.
    let launched = Atomic<Bool>(false)
    private let nextChunk = Atomic<Int>(0)
    /// Per chunk, the index of its next fire to take, each counter on its own cache line.
    private var counters: UnsafeMutablePointer<Atomic<Int>>?
    private var chunkCount = 0
    /// Entered by every runner at launch and left when it has no fire left to start.
    private let starting = DispatchGroup()
    /// Per runner, the fires it started and saw end; made by `launch`.
    private var logs: [RunnerLog] = []
    /// Whether runners keep the fires they saw end until the wave is started; off once the wave
    /// has taken longer than the timer waits for it.
    private let deferEnds = Atomic<Bool>(true)

    private static let chunkSize = 8
    /// Counters eight words apart: 64 bytes, one cache line.
    private static let counterStride = 8

    fileprivate init(deadline: Int64) { self.deadline = deadline }

    deinit {
        guard let counters else { return }
        for chunk in 0..<chunkCount { (counters + chunk * Self.counterStride).deinitialize(count: 1) }
        counters.deallocate()
    }

    /// Hands the wave to the pool: one runner per pool thread (at most one per fire), one lock and
    /// one wake-up.
    func launch(_ services: HostServices, registry: any RegistryCenter) {
        launched.store(true, ordering: .releasing)
        guard !fires.isEmpty else { return }
        chunkCount = (fires.count + Self.chunkSize - 1) / Self.chunkSize
        let counters = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: chunkCount * Self.counterStride)
        for chunk in 0..<chunkCount { (counters + chunk * Self.counterStride).initialize(to: Atomic(chunk * Self.chunkSize)) }
        self.counters = counters
        logs = (0..<min(services.pool.size, fires.count)).map { _ in RunnerLog() }
        for _ in logs { starting.enter() }
        if !services.pool.submit(contentsOf: logs.map { log in { self.run(services, registry: registry, log: log) } }) {
            // The pool has stopped (the host is stopping): no runner will leave the group.
            for _ in logs { starting.leave() }
        }
    }

    /// Waits until every runner of the wave has started all the fires it could, or `timeout`
    /// passed: the timer's own work on the same instant, and the ends of the fires, wait for the
    /// starts, not the other way round. Returns false when a runner is still starting (held up in
    /// a long item, or behind other work on the pool).
    @discardableResult
    func awaitStarts(until deadline: DispatchTime) -> Bool {
        guard !fires.isEmpty else { return true }
        return starting.wait(timeout: deadline) == .success
    }

    /// How long the ends of a wave's fires, and the timer, wait for its starts at the most.
    static let startsWait = DispatchTimeInterval.milliseconds(20)

    /// Reports the starts and ends of the fires that runners hold: a runner held up in a long item
    /// would otherwise keep the jobs of those fires running, and their start events unsaid, until
    /// it returns.
    func endHeldFires() {
        deferEnds.store(false, ordering: .sequentiallyConsistent)
        for log in logs { Self.end(log.take()) }
    }

    private static func end(_ fires: [ArmedFire]) {
        for fire in fires { fire.unretainedRuntime._withUnsafeGuaranteedRef { $0.finishArmed(fire) } }
    }

    /// One runner: takes chunks until none is left, asking for the next chunk's memory before it
    /// starts the current one's fires; then takes what other runners left; then, once every runner
    /// is done starting, publishes the start events of its fires and ends those whose items it saw
    /// end (unless ``endHeldFires()`` did, or the wave took so long that it does so as they end).
    /// What it reads of the registry it reads again whenever the coarse clock has moved on, so that
    /// a runner held up for long does not start fires on a stale view.
    private func run(_ services: HostServices, registry: any RegistryCenter, log: RunnerLog) {
        var gate = WaveGate(services, registry: registry)
        func start(chunk: Int) {
            let counter = counters! + chunk * Self.counterStride
            let end = min((chunk + 1) * Self.chunkSize, fires.count)
            while counter.pointee.load(ordering: .relaxed) < end {
                let index = counter.pointee.wrappingAdd(1, ordering: .relaxed).oldValue
                guard index < end else { return }
                if gate.isOld { gate = WaveGate(services, registry: registry) }
                let fire = fires[index]
                guard fire.unretainedRuntime._withUnsafeGuaranteedRef({ $0.release(fire, gate: gate, log: log) }) else { continue }
                log.ended(fire)
                // Logged after `endHeldFires` looked: reported here and now, before another item
                // can hold it up.
                if !deferEnds.load(ordering: .sequentiallyConsistent) { Self.end(log.take()) }
            }
        }
        func claim() -> Int? {
            let chunk = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            guard chunk < chunkCount else { return nil }
            for index in chunk * Self.chunkSize..<min((chunk + 1) * Self.chunkSize, addresses.count) {
                addresses[index].prefetch()
            }
            return chunk
        }
        var current = claim()
        while let chunk = current {
            current = claim()
            start(chunk: chunk)
        }
        for chunk in 0..<chunkCount { start(chunk: chunk) }
        starting.leave()
        guard !log.isEmpty else { return }
        // Its fires are reported once every runner is done starting (or the timer stopped
        // waiting); a start event is never later than its fire's end.
        if deferEnds.load(ordering: .sequentiallyConsistent) { awaitStarts(until: .now() + Self.startsWait) }
        Self.end(log.take())
    }
}

/// The waves of a host, by instant.
final class FireBoard: Sendable {
    private struct State {
        var waves: [Int64: FireWave] = [:]
        /// Instants up to this one have been taken: a fire armed for one of them joins no wave.
        var takenThrough = Int64.min
        /// The host stopped: no fire joins a wave any more.
        var closed = false
    }

    private let state = Mutex(State())

    /// Puts `fire` in its instant's wave; false when that wave has been taken already.
    func add(_ fire: ArmedFire) -> Bool {
        state.withLock { state in
            guard !state.closed, fire.deadline > state.takenThrough else { return false }
            let wave = state.waves[fire.deadline] ?? FireWave(deadline: fire.deadline)
            state.waves[fire.deadline] = wave
            wave.fires.append(fire)
            wave.addresses.append(fire.addresses)
            fire.join(wave)
            return true
        }
    }

    /// Removes and returns the waves due at `now`, earliest first.
    func takeDue(now: Int64) -> [FireWave] {
        state.withLock { state in
            guard state.takenThrough < now else {
                // The wall clock went back: instants from now on can be armed again (every wave up
                // to the old mark is gone already).
                state.takenThrough = min(state.takenThrough, now)
                return []
            }
            state.takenThrough = now
            guard state.waves.keys.contains(where: { $0 <= now }) else { return [] }
            let due = state.waves.values.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            for wave in due { state.waves[wave.deadline] = nil }
            return due
        }
    }

    /// The timer's release at an instant: every wave due starts now, on the worker pool, and the
    /// timer's own work on the same keys waits until their fires have started (at most 20 ms;
    /// runners held up in other jobs' long items do not hold the timer longer).
    /// A wave that comes more than a second late (the host was paused) is not started: its fires
    /// go the general way, as missed fires.
    func launchDue(now: Int64, services: HostServices, registry: any RegistryCenter, background: BackgroundTasks) {
        let waves = takeDue(now: now)
        guard !waves.isEmpty else { return }
        var launched: [FireWave] = []
        for wave in waves where now - wave.deadline <= JobRuntime.lateFireMilliseconds {
            wave.launch(services, registry: registry)
            launched.append(wave)
        }
        let until = DispatchTime.now() + FireWave.startsWait
        for wave in launched where !wave.awaitStarts(until: until) {
            // A runner is held up in a long item: the fires it saw end are ended elsewhere, so
            // that their jobs do not stay running meanwhile.
            background.spawn("end held fires") { wave.endHeldFires() }
        }
    }

    /// Takes `fire` off its wave, if the wave has not been taken yet (its job stopped).
    func remove(_ fire: ArmedFire) {
        state.withLock { state in
            guard let wave = state.waves[fire.deadline], let index = wave.fires.firstIndex(where: { $0 === fire }) else { return }
            wave.fires.remove(at: index)
            wave.addresses.remove(at: index)
        }
    }

    /// Drops every wave not taken yet, and takes no fire from now on (the host stopped).
    func close() {
        // Swapped out under the lock and freed after it: the fires' runtimes may go with them.
        var waves: [Int64: FireWave] = [:]
        state.withLock { state in
            state.closed = true
            swap(&waves, &state.waves)
        }
    }
}

extension ArmedFire: ArmedFireToken {}
