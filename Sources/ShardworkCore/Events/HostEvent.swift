/// Something that happened on a host, as a value: what execution history, metrics, the console and
/// tests read, instead of the log.
///
/// Times are milliseconds since 1970 on the host's scheduler clock (the manual clock in tests).
public struct HostEvent: Sendable, Equatable {
    /// When it happened.
    public var time: Int64
    public var kind: Kind

    public init(time: Int64, kind: Kind) {
        self.time = time
        self.kind = kind
    }

    public enum Kind: Sendable, Equatable {
        /// A run of a job's items on this host began (after the listeners' before-hooks).
        case fireStarted(FireStart)
        /// That run ended: every item's outcome is known and its markers are written.
        case fireEnded(FireEnd)
        /// A fire came while the job's previous fire was still running here. With misfire on it is
        /// kept (`kept`) and runs once after the running one; otherwise it is dropped.
        case misfire(job: String, fireTime: Int64, kept: Bool)
        /// A fire that came more than a second late (the host was paused, the clock jumped, every
        /// worker thread was busy) and was skipped because misfire is off.
        case missedFire(job: String, fireTime: Int64, lateMilliseconds: Int64)
        /// A fire that did not run its items, and why.
        case fireSkipped(job: String, fireTime: Int64, reason: FireSkipReason)
        /// This instance, as the job's leader, wrote a new assignment; `milliseconds` from the fire
        /// finding that a resharding was due to the assignment written (elections and waiting for
        /// running items included).
        case sharded(job: String, items: Int, instances: Int, strategy: String, milliseconds: Int64)
        /// This instance became the job's leader.
        case leaderElected(job: String)
        /// This instance stepped down as the job's leader (its server was disabled).
        case leaderResigned(job: String)
        /// Items running on instances that are gone were queued for failover.
        case failoverQueued(job: String, items: [Int])
        /// This instance claimed a queued item of a crashed instance, with the claim's epoch.
        case failoverTaken(job: String, item: Int, epoch: UInt64)
        /// Items this host asked to stop because it lost its hold on them (fencing); `requeued`
        /// when failover queues them to run again.
        case itemsFenced(job: String, items: [Int], requeued: Bool)
        /// A change of the host's connection to the registry.
        case registry(RegistryChange)
        /// A plugin file was loaded (a new generation), at start or by a hot-load.
        case pluginLoaded(name: String, version: String, generation: Int, file: String)
        /// A plugin file was refused; nothing changed.
        case pluginRefused(file: String, reason: String)
        /// The job runs on this host from now on (configured here, or added to the cluster).
        case jobAdopted(job: String)
        /// The job no longer runs on this host (removed, shut down by a command, stopped).
        case jobStopped(job: String, reason: String)
        /// The host cannot run the job (a plugin is missing, its trial failed, it crashed the
        /// host before); it takes no items of it.
        case jobSetAside(job: String, reason: String)
        /// The job's configuration in the registry changed and this host applied it.
        case configurationApplied(job: String, version: Int)
        /// An operation (trigger, disable, enable, shutdown, remove, configuration change, add)
        /// performed through this host's operations API.
        case operationPerformed(operation: String, job: String, detail: String)
        /// This host found a value of the job's registry state that another tool (or a lost
        /// session) left wrong, and wrote what it should be.
        case registryRepaired(job: String, repair: RegistryRepair)
        /// An item given up on at its timeout still runs (it does not stop when asked): it holds
        /// one of the host's threads and is not started again until it returns. Said once per
        /// such item; `threadsHeld` counts the host's threads held so.
        case itemAbandoned(job: String, item: Int, threadsHeld: Int)
    }

    /// The job the event concerns, if any.
    public var job: String? {
        switch kind {
        case .fireStarted(let start): start.job
        case .fireEnded(let end): end.job
        case .misfire(let job, _, _), .missedFire(let job, _, _), .fireSkipped(let job, _, _), .sharded(let job, _, _, _, _),
             .leaderElected(let job), .leaderResigned(let job), .failoverQueued(let job, _), .failoverTaken(let job, _, _),
             .itemsFenced(let job, _, _), .jobAdopted(let job), .jobStopped(let job, _), .jobSetAside(let job, _),
             .configurationApplied(let job, _), .operationPerformed(_, let job, _), .registryRepaired(let job, _),
             .itemAbandoned(let job, _, _):
            job
        case .registry, .pluginLoaded, .pluginRefused: nil
        }
    }
}

/// The start of a run of a job's items on this host.
public struct FireStart: Sendable, Equatable {
    public var job: String
    /// The cron instant of a scheduled fire (and of its misfire re-run); the moment of a trigger or
    /// failover run.
    public var fireTime: Int64
    public var source: FireSource
    /// This host's items of the fire, ascending.
    public var items: [Int]
    /// Each item's fencing epoch (its owner's, or its failover claim's).
    public var epochs: [Int: UInt64]
    /// When the items started.
    public var startedAt: Int64
    /// The job type's provider, and its plugin's name and version.
    public var jobType: String
    public var plugin: String
    public var pluginVersion: String
    /// ElasticJob's task id of the run: `{job}@-@{items}@-@READY@-@{ip}@-@{pid}`.
    public var taskID: String

    /// From the fire time to the items' start (0 for triggers and failover runs, which start when
    /// they are asked for).
    public var lagMilliseconds: Int64 { max(0, startedAt - fireTime) }

    public init(
        job: String, fireTime: Int64, source: FireSource, items: [Int], epochs: [Int: UInt64], startedAt: Int64,
        jobType: String, plugin: String, pluginVersion: String, taskID: String = ""
    ) {
        self.job = job
        self.fireTime = fireTime
        self.source = source
        self.items = items
        self.epochs = epochs
        self.startedAt = startedAt
        self.jobType = jobType
        self.plugin = plugin
        self.pluginVersion = pluginVersion
        self.taskID = taskID
    }
}

/// When one item of a run started and ended, on the host's clock.
public struct ItemTimes: Sendable, Equatable {
    public var startedAt: Int64
    public var endedAt: Int64

    public init(startedAt: Int64, endedAt: Int64) {
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

/// One run of a fire's items: a fire runs its items again, in the same fire, for each misfire that
/// came while they ran (ElasticJob's misfire loop).
public struct ItemsRunDetail: Sendable, Equatable {
    public var outcomes: [Int: ItemOutcome]
    public var itemTimes: [Int: ItemTimes]

    public init(outcomes: [Int: ItemOutcome], itemTimes: [Int: ItemTimes]) {
        self.outcomes = outcomes
        self.itemTimes = itemTimes
    }
}

/// The end of a run of a job's items on this host.
public struct FireEnd: Sendable, Equatable {
    public var job: String
    public var fireTime: Int64
    public var source: FireSource
    public var items: [Int]
    /// Every item's outcome; an item absent here did not run (its run was vetoed or held back).
    public var outcomes: [Int: ItemOutcome]
    /// Items stopped by fencing (their outcome is the failure they reported when asked to stop).
    public var fenced: [Int]
    /// How many times the items ran: more than 1 when misfires re-ran them in the same fire.
    public var runs: Int
    public var startedAt: Int64
    public var endedAt: Int64
    /// When each item of the (last) run started and ended. Empty for a fire started armed (a job
    /// without listeners or running markers, whose items start in the fire's wave): its items ran
    /// between ``startedAt`` and ``endedAt``.
    public var itemTimes: [Int: ItemTimes]
    /// Every run of the items in order, when they ran more than once (``runs`` > 1): the first is
    /// the fire's own, the others misfire re-runs. Empty when they ran once (``outcomes`` and
    /// ``itemTimes`` are that run).
    public var runDetails: [ItemsRunDetail]

    public var durationMilliseconds: Int64 { max(0, endedAt - startedAt) }
    /// Items whose outcome is not success, ascending.
    public var failedItems: [Int] { outcomes.filter { !$0.value.succeeded }.keys.sorted() }
    public var succeeded: Bool { outcomes.values.allSatisfy(\.succeeded) }

    public init(
        job: String, fireTime: Int64, source: FireSource, items: [Int], outcomes: [Int: ItemOutcome], fenced: [Int] = [],
        runs: Int, startedAt: Int64, endedAt: Int64, itemTimes: [Int: ItemTimes] = [:], runDetails: [ItemsRunDetail] = []
    ) {
        self.job = job
        self.fireTime = fireTime
        self.source = source
        self.items = items
        self.outcomes = outcomes
        self.fenced = fenced
        self.runs = runs
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.itemTimes = itemTimes
        self.runDetails = runDetails
    }

    /// When `item` started and ended (the fire's times for a fire started armed).
    public func times(of item: Int) -> ItemTimes {
        itemTimes[item] ?? ItemTimes(startedAt: startedAt, endedAt: endedAt)
    }
}

/// Why a fire did not run its items.
public enum FireSkipReason: Sendable, Equatable {
    /// The registry connection is down or silent, or the host is fenced: no new item starts.
    case registryUnavailable
    /// A resharding was due and the new assignment did not settle in time.
    case shardingDidNotSettle
    /// A registry request of the fire failed.
    case registryFailed(String)
    /// A listener's failure made the error handler abort the fire.
    case aborted
    /// The job stopped on this host (removed, or the host is stopping) while the fire waited for
    /// a resharding.
    case jobStopped
}

/// What a host wrote back into a job's registry state (``HostEvent/Kind/registryRepaired(job:repair:)``).
public enum RegistryRepair: Sendable, Equatable {
    /// This instance's node was gone (its session lives on): registered again.
    case instanceRegisteredAgain
    /// This instance's node held another value (`found`): written again.
    case instanceRewritten(found: String)
    /// The leader node named an instance no session owns and that is not live (`leader`): removed,
    /// so that an election can happen.
    case strayLeaderRemoved(leader: String)
    /// Items were assigned to instances that are gone: a resharding is flagged for the next fire.
    case reshardingForGoneOwners(items: [Int], instances: [String])
}

/// A change of a host's connection to its registry.
public enum RegistryChange: Sendable, Equatable {
    /// The connection is down; no new item starts until it is back.
    case connectionLost
    /// The connection is back on the same session; items may start again.
    case connectionRestored(session: Int64)
    /// The session expired: its ephemeral nodes (instances, leadership) are gone.
    case sessionExpired
    /// A new session, on which the host has registered every job again; items may start again.
    case sessionRenewed(session: Int64)
    /// The host fenced its running items: it could not hear from the registry in time.
    case fenced(reason: String)
    /// The registry answered again after the host fenced; items may start.
    case heardAgain
    /// The namespace was deleted (or deleted and made again) and this host wrote its jobs back.
    case namespaceRestored
}
