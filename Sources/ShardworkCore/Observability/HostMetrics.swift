public import CoreMetrics
import Foundation
import Synchronization

/// A host's figures through swift-metrics (docs/metrics.md): counters and histograms from its event
/// stream, and gauges from a look at its state every second.
///
/// Off the fire path, as the history is: the fire path only appends its events to a buffer; a
/// thread of its own at the lowest priority (``BackgroundThreadExecutor``) takes them at most
/// every ``eventLinger`` and records them. The back end is whatever the process bootstrapped
/// (`MetricsSystem.bootstrap`), or the factory given: a service that embeds ``ShardworkHost`` keeps
/// its own; `shardwork run` exports to Prometheus.
///
/// Subscribe before the host starts (``subscribe()``), then ``run(_:)`` until the host stops.
public final class HostMetrics: Sendable {
    /// What the build reports in `shardwork_build_info`.
    public struct Build: Sendable {
        public var version: String
        public var toolchain: String

        public init(version: String, toolchain: String = Build.toolchain) {
            self.version = version
            self.toolchain = toolchain
        }

        /// The Swift compiler that built this code.
        public static var toolchain: String {
            #if compiler(>=6.3)
            "swift-6.3"
            #elseif compiler(>=6.2)
            "swift-6.2"
            #else
            "swift-6"
            #endif
        }
    }

    /// How often, at most, the metrics take the events that came.
    public static let eventLinger: Duration = .milliseconds(100)
    /// How often the gauges are brought up to date.
    public static let sampleInterval: Duration = .seconds(1)

    private let host: ShardworkHost
    private let factory: any MetricsFactory
    private let reading = BackgroundThreadExecutor(name: "metrics-read")
    private let handlers: HostHandlers
    private let jobs = Mutex<[String: JobHandlers]>([:])
    private let subscription = Mutex<HostEventSubscription?>(nil)

    public init(host: ShardworkHost, build: Build, factory: any MetricsFactory = MetricsSystem.factory) {
        self.host = host
        self.factory = factory
        handlers = HostHandlers(factory: factory)
        Gauge(label: MetricNames.buildInfo, dimensions: [
            ("version", build.version), ("abi", "\(PluginABI.major).\(PluginABI.minor)"), ("toolchain", build.toolchain),
        ], factory: factory).record(1)
    }

    deinit {
        reading.stop()
    }

    /// A subscription made now, for ``run(_:)``: so that no event of a host starting right after is
    /// missed.
    public func subscribe() -> HostEventSubscription {
        host.events.subscribe(buffer: HostEvents.defaultBuffer, linger: Self.eventLinger)
    }

    /// Records the host's events and samples its state every ``sampleInterval`` until the host's
    /// event stream ends (it stopped) or the task is cancelled.
    public func run(_ subscription: HostEventSubscription) async {
        self.subscription.withLock { $0 = subscription }
        await withTaskGroup(of: Void.self) { group in
            group.addTask(executorPreference: reading) {
                while !Task.isCancelled {
                    self.sample()
                    try? await Task.sleep(for: Self.sampleInterval)
                }
            }
            await withTaskExecutorPreference(reading) {
                for await event in subscription { self.record(event) }
            }
            subscription.cancel()
            group.cancelAll()
        }
        sample()
    }

    // MARK: Events

    /// Records one event of the host.
    public func record(_ event: HostEvent) {
        switch event.kind {
        case .fireStarted(let start):
            let job = jobHandlers(start.job)
            if start.source == .schedule {
                job.handled(instant: start.fireTime)
                if !start.items.isEmpty { job.timer(MetricNames.startLag).recordMilliseconds(start.lagMilliseconds) }
            }
        case .fireEnded(let end):
            guard !end.outcomes.isEmpty else { return }
            let job = jobHandlers(end.job)
            job.fire(source: end.source, succeeded: end.succeeded).increment()
            let runs = end.runDetails.isEmpty ? [ItemsRunDetail(outcomes: end.outcomes, itemTimes: end.itemTimes)] : end.runDetails
            let duration = job.timer(MetricNames.itemDuration)
            for run in runs {
                for (item, outcome) in run.outcomes {
                    job.item(outcome).increment()
                    let times = run.itemTimes[item] ?? ItemTimes(startedAt: end.startedAt, endedAt: end.endedAt)
                    duration.recordMilliseconds(max(0, times.endedAt - times.startedAt))
                }
            }
        case .misfire(let name, let fireTime, let kept):
            let job = jobHandlers(name)
            job.handled(instant: fireTime)
            job.counter(MetricNames.misfires, ["kept": kept ? "true" : "false"]).increment()
        case .missedFire(let name, let fireTime, _):
            let job = jobHandlers(name)
            job.handled(instant: fireTime)
            job.counter(MetricNames.missedFires).increment()
        case .fireSkipped(let name, let fireTime, let reason):
            let job = jobHandlers(name)
            job.handled(instant: fireTime)
            job.skipped(reason).increment()
        case .sharded(let name, _, _, _, let milliseconds):
            let job = jobHandlers(name)
            job.counter(MetricNames.resharding).increment()
            job.timer(MetricNames.reshardingDuration).recordMilliseconds(milliseconds)
        case .leaderElected(let name):
            jobHandlers(name).counter(MetricNames.leaderChanges, ["change": "elected"]).increment()
        case .leaderResigned(let name):
            jobHandlers(name).counter(MetricNames.leaderChanges, ["change": "resigned"]).increment()
        case .failoverQueued(let name, let items):
            jobHandlers(name).counter(MetricNames.failoverQueued).increment(by: Int64(items.count))
        case .failoverTaken(let name, _, _):
            jobHandlers(name).counter(MetricNames.failoverTaken).increment()
        case .itemsFenced(let name, let items, _):
            jobHandlers(name).counter(MetricNames.itemsFenced).increment(by: Int64(items.count))
        case .registry(let change):
            handlers.registryEvent(change).increment()
        case .pluginLoaded:
            handlers.pluginGenerationsLoaded.increment()
        case .pluginRefused:
            handlers.pluginFilesRefused.increment()
        case .jobAdopted(let name), .configurationApplied(let name, _):
            // From now (or with its new cron) the job is due at its next instant.
            jobHandlers(name).handled(instant: event.time, restart: true)
        case .jobStopped(let name, _), .jobSetAside(let name, _):
            // No longer due here: its next-fire gauge goes (its counters stay, they are history).
            jobs.withLock { $0[name] }?.forgetNextFire()
        case .operationPerformed, .registryRepaired, .itemAbandoned:
            // Said in the log; the stuck item is seen in the worker threads busy.
            break
        }
    }

    private func jobHandlers(_ job: String) -> JobHandlers {
        if let known = jobs.withLock({ $0[job] }) { return known }
        let made = JobHandlers(job: job, factory: factory)
        return jobs.withLock { jobs in
            if let known = jobs[job] { return known }
            jobs[job] = made
            return made
        }
    }

    // MARK: Gauges

    /// Brings the gauges up to date with the host's state: called every ``sampleInterval``, and by
    /// an exporter before it answers a scrape.
    public func sample() {
        let readiness = host.readiness()
        handlers.ready.record(readiness.ready ? 1 : 0)
        handlers.registryConnected.record(readiness.registryConnected ? 1 : 0)
        handlers.fenced.record(readiness.fenced ? 1 : 0)
        handlers.jobs.record(readiness.jobs)
        handlers.jobsSetAside.record(readiness.jobsSetAside)
        if let last = host.registry.lastContact {
            let silence = host.services.clock.monotonicNow() - last
            handlers.registrySilence.record(Double(silence.nanoseconds) / 1e9)
        }
        let load = host.services.pool.load
        handlers.workerThreads.record(load.threads)
        handlers.workerThreadsBusy.record(load.busy)
        handlers.workerQueueLength.record(load.queued)
        handlers.workerThreadsStuck.record(load.stuck)
        handlers.pluginGenerations.record(host.pluginGenerationCount)
        if let lost = subscription.withLock({ $0?.dropped }) { handlers.eventsLost(total: lost) }
        let runtimes = host.runtimes
        for (name, runtime) in runtimes {
            guard let schedule = runtime.job.schedule else { continue }
            jobHandlers(name).updateNextFire(schedule)
        }
    }
}

/// The host-wide handlers, made once.
private final class HostHandlers: Sendable {
    let ready, registryConnected, fenced, jobs, jobsSetAside, registrySilence: Gauge
    let workerThreads, workerThreadsBusy, workerQueueLength, workerThreadsStuck, pluginGenerations: Gauge
    let pluginGenerationsLoaded, pluginFilesRefused: Counter
    private let registryEvents: [String: Counter]
    private let factory: any MetricsFactory
    private let lostEvents: Counter
    private let lostCounted = Mutex(0)

    init(factory: any MetricsFactory) {
        self.factory = factory
        func gauge(_ label: String) -> Gauge { Gauge(label: label, dimensions: [], factory: factory) }
        ready = gauge(MetricNames.ready)
        registryConnected = gauge(MetricNames.registryConnected)
        fenced = gauge(MetricNames.fenced)
        jobs = gauge(MetricNames.jobs)
        jobsSetAside = gauge(MetricNames.jobsSetAside)
        registrySilence = gauge(MetricNames.registrySilence)
        workerThreads = gauge(MetricNames.workerThreads)
        workerThreadsBusy = gauge(MetricNames.workerThreadsBusy)
        workerQueueLength = gauge(MetricNames.workerQueueLength)
        workerThreadsStuck = gauge(MetricNames.workerThreadsStuck)
        pluginGenerations = gauge(MetricNames.pluginGenerations)
        pluginGenerationsLoaded = Counter(label: MetricNames.pluginGenerationsLoaded, dimensions: [], factory: factory)
        pluginFilesRefused = Counter(label: MetricNames.pluginFilesRefused, dimensions: [], factory: factory)
        lostEvents = Counter(label: MetricNames.eventsLost, dimensions: [], factory: factory)
        registryEvents = Dictionary(uniqueKeysWithValues: Self.registryEventNames.map { name in
            (name, Counter(label: MetricNames.registryEvents, dimensions: [("event", name)], factory: factory))
        })
    }

    static let registryEventNames = [
        "connection_lost", "connection_restored", "session_expired", "session_renewed", "fenced", "heard_again", "namespace_restored",
    ]

    func registryEvent(_ change: RegistryChange) -> Counter {
        let name = switch change {
        case .connectionLost: "connection_lost"
        case .connectionRestored: "connection_restored"
        case .sessionExpired: "session_expired"
        case .sessionRenewed: "session_renewed"
        case .fenced: "fenced"
        case .heardAgain: "heard_again"
        case .namespaceRestored: "namespace_restored"
        }
        // Every name is made at the start; a case added without one is made now rather than trap.
        return registryEvents[name] ?? Counter(label: MetricNames.registryEvents, dimensions: [("event", name)], factory: factory)
    }

    /// The subscription's count of lost events, as a counter.
    func eventsLost(total: Int) {
        let delta = lostCounted.withLock { counted -> Int in
            defer { counted = max(counted, total) }
            return total - counted
        }
        if delta > 0 { lostEvents.increment(by: Int64(delta)) }
    }
}

/// One job's handlers, each made when an event first needs it: a job that never fails has no
/// `failed` series, one that never failed over no failover series (docs/metrics.md).
private final class JobHandlers: Sendable {
    let job: String
    private let factory: any MetricsFactory
    private struct Lazy {
        var counters: [String: Counter] = [:]
        var timers: [String: CoreMetrics.Timer] = [:]
        /// The last cron instant the host handled (fired, skipped, missed), or when the job came or
        /// changed; and the next-fire gauge with the instant it was computed from.
        var handled: Int64?
        var nextFire: (gauge: Gauge, from: Int64)?
        /// The schedule's instants after some handled instant, computed a batch at a time: a job
        /// that fires every second costs one cron computation every ``upcomingBatch`` seconds.
        var upcoming: [Int64] = []
    }
    static let upcomingBatch = 32
    private let lazy = Mutex(Lazy())

    init(job: String, factory: any MetricsFactory) {
        self.job = job
        self.factory = factory
    }

    /// The job's counter `label` with `dimensions` beyond its name.
    func counter(_ label: String, _ dimensions: KeyValuePairs<String, String> = [:]) -> Counter {
        var key = label
        for (_, value) in dimensions { key += " " + value }
        if let known = lazy.withLock({ $0.counters[key] }) { return known }
        let made = Counter(label: label, dimensions: [("job_name", job)] + dimensions.map { ($0.key, $0.value) }, factory: factory)
        return lazy.withLock { lazy in
            if let known = lazy.counters[key] { return known }
            lazy.counters[key] = made
            return made
        }
    }

    /// The job's histogram `label`.
    func timer(_ label: String) -> CoreMetrics.Timer {
        if let known = lazy.withLock({ $0.timers[label] }) { return known }
        let made = CoreMetrics.Timer(label: label, dimensions: [("job_name", job)], factory: factory)
        return lazy.withLock { lazy in
            if let known = lazy.timers[label] { return known }
            lazy.timers[label] = made
            return made
        }
    }

    func fire(source: FireSource, succeeded: Bool) -> Counter {
        counter(MetricNames.fires, ["source": source.rawValue, "outcome": succeeded ? "succeeded" : "failed"])
    }

    func item(_ outcome: ItemOutcome) -> Counter {
        let name = switch outcome {
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .timedOut: "timed_out"
        }
        return counter(MetricNames.items, ["outcome": name])
    }

    func skipped(_ reason: FireSkipReason) -> Counter {
        let name = switch reason {
        case .registryUnavailable: "registry_unavailable"
        case .shardingDidNotSettle: "sharding_did_not_settle"
        case .registryFailed: "registry_failed"
        case .aborted: "aborted"
        case .jobStopped: "job_stopped"
        }
        return counter(MetricNames.firesSkipped, ["reason": name])
    }

    /// The host handled the job's cron instant `instant` (or, `restart`, the job came or changed
    /// then: its next instant counts from there).
    func handled(instant: Int64, restart: Bool = false) {
        lazy.withLock { lazy in
            if restart {
                // The job came or its cron changed: instants computed before do not hold.
                lazy.upcoming = []
                lazy.handled = instant
            } else if (lazy.handled ?? .min) < instant {
                lazy.handled = instant
            }
        }
    }

    /// The next-fire gauge: the next instant after the last one handled, looked at again only when
    /// that changed.
    func updateNextFire(_ schedule: CronExpression) {
        let (due, known) = lazy.withLock { lazy -> (Int64?, [Int64]) in
            guard let handled = lazy.handled, lazy.nextFire?.from != handled else { return (nil, []) }
            return (handled, lazy.upcoming)
        }
        guard let due else { return }
        var upcoming = known
        // Instants computed after an earlier handled one (handled instants only grow, but for a
        // restart, which clears them): the first one after `due` is its next.
        if let index = upcoming.firstIndex(where: { $0 > due }) {
            upcoming.removeFirst(index)
        } else {
            upcoming = schedule.nextFireTimes(after: due, count: Self.upcomingBatch)
        }
        guard let next = upcoming.first else { return }
        let gauge = lazy.withLock { lazy -> Gauge in
            let gauge = lazy.nextFire?.gauge ?? Gauge(label: MetricNames.nextFire, dimensions: [("job_name", job)], factory: factory)
            lazy.nextFire = (gauge, due)
            lazy.upcoming = upcoming
            return gauge
        }
        gauge.record(Double(next) / 1000)
    }

    /// The job no longer runs here: its next-fire series goes.
    func forgetNextFire() {
        let gauge = lazy.withLock { lazy -> Gauge? in
            defer {
                lazy.nextFire = nil
                lazy.handled = nil
                lazy.upcoming = []
            }
            return lazy.nextFire?.gauge
        }
        gauge?.destroy()
    }
}
