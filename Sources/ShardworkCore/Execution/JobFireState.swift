/// What a fire armed ahead of its instant shows the state machine (``ArmedFire`` in the host; any
/// object in tests).
protocol ArmedFireToken: AnyObject {
    /// The instant it is armed for.
    var deadline: Int64 { get }
    /// The fire time after it, worked out when it was armed.
    var next: Int64? { get }
    /// The job preparation it was made from.
    var preparation: ObjectIdentifier { get }
    /// This host's items of the fire.
    var items: [Int] { get }
    /// Whether its wave has taken it (and will start it, or has).
    var isReleased: Bool { get }
}

/// The fire state of one job on one host, and every decision about its fires, as a value: whether a
/// fire starts, misfires, is missed or waits; what runs after a run ends; what a trigger, a
/// failover claim, a new preparation or a stop does. Its mutating methods change the state and
/// return what to do; ``JobRuntime`` calls them under one lock and does it after unlocking. Nothing
/// here reads a clock, the registry or the job: what a decision needs is passed in.
///
/// One run at a time (ElasticJob's rule for a job on one instance): a fire that comes while one
/// runs is a misfire (kept once with `misfire` on, dropped otherwise), triggers and failover claims
/// wait for the end of the run, and when it ends the next thing to run is, in order, failover work,
/// a kept misfire, a trigger. A kept misfire that the run's own misfire loop did not take (it came
/// during a failover run, or after the loop looked) runs as the fire of the first instant that
/// misfired, with that fire time, not as a second run of the fire it waited for.
struct JobFireState<Armed: ArmedFireToken> {
    // What a wave's start reads and writes comes first (running, stopped, the armed fire, the
    // preparation, the released instant, the current fire): thousands of starts in one instant each
    // touch this memory cold, so it is kept to as few cache lines as it can be.

    /// A run is under way (or handed to a task that starts it).
    private(set) var running = false {
        didSet { if running && !oldValue { runsStarted &+= 1 } }
    }
    /// The job stopped on this host: nothing starts any more.
    private(set) var stopped = false
    /// The job's misfire setting, from its preparation.
    private(set) var misfireEnabled: Bool
    /// A fire came while one was running, and misfire is on: one more run is due, for this instant
    /// (the first that misfired; later ones join it).
    private(set) var misfireInstant: Int64?
    /// A trigger came while one was running: one more run is due.
    private(set) var triggerPending = false
    /// The next scheduled fire, prepared ahead of its instant.
    private(set) var armed: Armed?
    /// The job's preparation now.
    private(set) var preparation: ObjectIdentifier
    /// The instant of the last fire its wave took, and what is known of the fire after it.
    private(set) var released: (deadline: Int64, next: NextFire)?
    /// The armed fire running now, whose items are the current ones.
    private(set) var currentFire: Armed?
    /// How many times the job went from idle to running: equal counts read while idle mean no run
    /// happened in between.
    private(set) var runsStarted: UInt64 = 0
    /// The items of the run under way, once known (the general path learns them from the registry).
    private(set) var currentItems: [Int] = []
    /// Items taken over from a crashed instance, with their claims' epochs, waiting to run.
    private(set) var failoverPending: [Int: UInt64] = [:]
    /// Raised when the job's preparation is replaced: an arming that began before publishes nothing.
    private(set) var armGeneration: UInt64 = 0

    /// While idle, a stamp that changes when a run starts; `nil` while running.
    var idleStamp: UInt64? { running ? nil : runsStarted }

    /// A scheduled fire later than this is a missed fire (the host was paused, the clock jumped,
    /// every worker thread was busy).
    static var lateFireMilliseconds: Int64 { 1_000 }

    init(preparation: ObjectIdentifier, misfireEnabled: Bool) {
        self.preparation = preparation
        self.misfireEnabled = misfireEnabled
    }

    /// The fire after a released one: known when it was armed, or to be worked out from the
    /// schedule (its preparation was replaced meanwhile).
    enum NextFire: Equatable {
        case known(Int64?)
        case fromSchedule
    }

    /// Which items a kept misfire marks in the registry: the running fire's, or, before it knows
    /// them, those assigned to this instance now (ElasticJob's rule).
    enum MisfireMarks: Equatable {
        case items([Int])
        case assignedNow
    }

    // MARK: The timer

    enum TimerDecision: Equatable {
        /// The instant's wave took the armed fire (or took it earlier): nothing starts here.
        case takenByWave(next: NextFire)
        /// Start a fire on the general path.
        case start(FireSource)
        /// The fire found the job running: kept for one run after it, or dropped. `marks`: the first
        /// kept misfire of a run writes its markers.
        case misfire(kept: Bool, marks: MisfireMarks?)
        /// More than a second late with misfire off: skipped.
        case missed(lateMilliseconds: Int64)
        /// The job is stopped.
        case none
    }

    /// The timer's instant `deadline` came (at `now`). `dropped`: an armed fire no wave took, to
    /// take off its wave.
    mutating func timerFired(deadline: Int64, now: Int64) -> (TimerDecision, dropped: Armed?) {
        if let armed, armed.deadline == deadline, armed.isReleased {
            return (.takenByWave(next: armed.preparation == preparation ? .known(armed.next) : .fromSchedule), nil)
        }
        if let released, released.deadline == deadline { return (.takenByWave(next: released.next), nil) }
        if stopped { return (.none, nil) }
        if running || armed?.isReleased == true {
            // Running, or an earlier fire's wave has it and has not started it yet (every worker
            // thread is busy): this fire found the job running.
            return (misfire(deadline), nil)
        }
        // An armed fire that no wave took (armed too late, or its wave came too late) goes the
        // general way.
        let dropped = armed
        armed = nil
        let late = now - deadline > Self.lateFireMilliseconds
        if late && !misfireEnabled { return (.missed(lateMilliseconds: now - deadline), dropped) }
        running = true
        return (.start(late ? .misfire : .schedule), dropped)
    }

    /// The fire of `instant` found the job running.
    private mutating func misfire(_ instant: Int64) -> TimerDecision {
        guard misfireEnabled else { return .misfire(kept: false, marks: nil) }
        guard misfireInstant == nil else { return .misfire(kept: true, marks: nil) }
        misfireInstant = instant
        let items = currentFire?.items ?? currentItems
        return .misfire(kept: true, marks: items.isEmpty ? .assignedNow : .items(items))
    }

    // MARK: Waves

    enum ReleaseDecision: Equatable {
        /// Start its prepared items now, on this thread.
        case start
        /// Run it on the general path instead: late (as a misfire), or its registry state or
        /// preparation changed since it was armed.
        case stale(late: Bool)
        case misfire(kept: Bool, marks: MisfireMarks?)
        case missed(lateMilliseconds: Int64)
        /// Not the armed fire any more, or the job stopped.
        case none
    }

    /// The fire's wave gives it a thread at `now`. `fresh`: nothing it was armed with changed (the
    /// registry session, fencing, the snapshot; items may start).
    mutating func release(_ fire: Armed, now: Int64, fresh: Bool) -> ReleaseDecision {
        guard !stopped, armed === fire else { return .none }
        armed = nil
        // The fire holds its preparation, so an equal identifier is the same preparation.
        let samePreparation = fire.preparation == preparation
        released = (fire.deadline, samePreparation ? .known(fire.next) : .fromSchedule)
        if running {
            if case .misfire(let kept, let marks) = misfire(fire.deadline) { return .misfire(kept: kept, marks: marks) }
        }
        let late = now - fire.deadline > Self.lateFireMilliseconds
        guard !late, samePreparation, fresh else {
            if late && !misfireEnabled { return .missed(lateMilliseconds: now - fire.deadline) }
            running = true
            return .stale(late: late)
        }
        running = true
        currentFire = fire
        return .start
    }

    // MARK: Arming

    enum ArmDecision {
        /// Published: `fire` is the armed fire now; `replaced` (if any) goes off its wave.
        case armed(replaced: Armed?)
        /// Not published (stopped, the preparation changed, or a wave has the earlier fire).
        case kept
    }

    /// Publishes a fire (or none) armed by an arming that began in `generation`.
    mutating func arm(_ fire: Armed?, generation: UInt64) -> ArmDecision {
        if stopped || armGeneration != generation { return .kept }
        if let earlier = armed, earlier !== fire, earlier.isReleased { return .kept }
        defer { armed = fire }
        return .armed(replaced: armed)
    }

    /// Whether the armed fire is one its wave has and has not started yet.
    var hasPendingReleasedFire: Bool { armed?.isReleased == true }

    /// Drops the armed fire unless its wave has it; returns it, to take it off its wave.
    mutating func dropArmed() -> Armed? {
        guard let fire = armed, !fire.isReleased else { return nil }
        armed = nil
        return fire
    }

    /// Drops `fire` if it is still the armed one (its wave had gone when it was added).
    mutating func dropArmed(_ fire: Armed) {
        if armed === fire { armed = nil }
    }

    /// Whether `fire` is still the armed fire.
    func isArmed(_ fire: Armed) -> Bool { armed === fire }

    // MARK: Triggers and failover

    enum RequestDecision: Equatable {
        /// Start a run now.
        case start
        /// Queued: it runs after the run under way.
        case queued
        /// The job is stopped.
        case none
    }

    /// Run once now, or once after the run under way (triggers do not pile up).
    mutating func trigger() -> RequestDecision {
        if stopped { return .none }
        if running {
            triggerPending = true
            return .queued
        }
        running = true
        return .start
    }

    /// Items claimed from a crashed instance: run at once when idle, after the run under way
    /// otherwise (ElasticJob's enquiry execution). Later claims of an item replace earlier ones.
    mutating func failoverClaimed(_ claims: [Int: UInt64]) -> RequestDecision {
        failoverPending.merge(claims) { _, new in new }
        if stopped { return .none }
        if running { return .queued }
        running = true
        return .start
    }

    /// Takes the failover claims waiting to run.
    mutating func takeFailoverClaims() -> [Int: UInt64] {
        defer { failoverPending = [:] }
        return failoverPending
    }

    // MARK: Runs

    /// The general path learned its items.
    mutating func itemsKnown(_ items: [Int]) { currentItems = items }

    /// A run's items ran; whether to run them again at once for a misfire kept meanwhile
    /// (ElasticJob's misfire loop: the same fire runs again), which this consumes.
    mutating func takeMisfire() -> Bool {
        defer { misfireInstant = nil }
        return misfireInstant != nil && !stopped
    }

    /// What runs after a run: its source, and its fire time when it has one of its own (a kept
    /// misfire's instant; a trigger or failover run is timed when it starts).
    struct NextRun: Equatable {
        var source: FireSource
        var fireTime: Int64?

        static var failover: NextRun { NextRun(source: .failover) }
        static var trigger: NextRun { NextRun(source: .trigger) }
        static func misfire(_ instant: Int64) -> NextRun { NextRun(source: .misfire, fireTime: instant) }
    }

    /// A run ended: what runs next (failover work, a kept misfire, a trigger, in that order), or
    /// `nil` when nothing does and the job is idle.
    mutating func runEnded() -> NextRun? {
        currentItems = []
        currentFire = nil
        if !stopped {
            if !failoverPending.isEmpty { return .failover }
            if let instant = misfireInstant {
                misfireInstant = nil
                return .misfire(instant)
            }
            if triggerPending {
                triggerPending = false
                return .trigger
            }
        }
        running = false
        return nil
    }

    // MARK: The job

    /// A new preparation of the job: fires armed with the old one are stale, and an arming under
    /// way publishes nothing. Returns the armed fire to take off its wave, if any.
    mutating func replacePreparation(_ preparation: ObjectIdentifier, misfireEnabled: Bool) -> Armed? {
        self.preparation = preparation
        self.misfireEnabled = misfireEnabled
        armGeneration &+= 1
        return dropArmed()
    }

    /// No fire starts after this; a run under way finishes. Returns the armed fire to take off its
    /// wave.
    mutating func stop() -> Armed? {
        stopped = true
        defer { armed = nil }
        return armed
    }
}

/// How a run's items ended as far as their ownership goes: one rule for both fire paths (the
/// general one, which then clears or queues markers, and the armed one, which has none).
enum ItemsEnding: Equatable {
    /// The registry session the items started in ended while they ran: other instances may own
    /// them now, with newer epochs, and their markers are not this host's to clear.
    case ranPastSession([Int])
    /// Still the session they started in. `fenced`: items that did not succeed after the host had
    /// lost its hold on them (it fenced, or the registry fell silent) and asked them to stop;
    /// `done`: the others, which ended as they would have anyway.
    case kept(done: [Int], fenced: [Int])

    init(items: [Int], outcomes: [Int: ItemOutcome], sameSession: Bool, owned: Bool) {
        guard sameSession else {
            self = .ranPastSession(items)
            return
        }
        let fenced = owned ? [] : items.filter { outcomes[$0]?.succeeded != true }
        let stopped = Set(fenced)
        self = .kept(done: items.filter { !stopped.contains($0) }, fenced: fenced)
    }

    var fenced: [Int] {
        if case .kept(_, let fenced) = self { fenced } else { [] }
    }
}
