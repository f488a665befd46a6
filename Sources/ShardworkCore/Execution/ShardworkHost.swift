public import Foundation
public import Logging
public import ServiceLifecycle
import ShardworkSDK
import Synchronization

/// A Shardwork host: its jobs, registered in the registry, fired by one timer, kept in step with
/// the other hosts of the cluster.
///
/// `start()` registers every job (and throws if the registry refuses one) and starts firing.
/// As a swift-service-lifecycle `Service`, `run()` waits for graceful shutdown (SIGTERM, SIGINT in a
/// `ServiceGroup`) and then drains: no new fire starts, running items get up to
/// `host.shutdownTimeoutSeconds` to finish, then they are asked to stop, and the host leaves the
/// registry.
///
/// The host wires its collaborators together, each owning one concern (docs/architecture.md):
/// ``ClusterSyncer`` keeps each job in step with the cluster (sync, failover, reconcile, the
/// periodic check), ``SessionSupervisor`` follows the registry session and fences, ``JobAdoption``
/// decides which jobs run here (registration, jobs added and removed, jobs it cannot run, a lost
/// namespace), and ``PluginHotLoading`` loads new plugin versions. They share a ``HostContext``.
public final class ShardworkHost: Service, Sendable {
    public let configuration: HostConfiguration
    public let registry: any RegistryCenter
    public let services: HostServices
    /// What happens on this host, as values: fires, leadership, failover, fencing, the registry
    /// session, plugins, jobs and operations (see ``HostEvent``).
    public var events: HostEvents { services.events }
    /// The jobs that run on this host now, by name: those of the configuration, and jobs added to the
    /// cluster while it runs.
    public var runtimes: [String: JobRuntime] { context.runtimes }

    let context: HostContext
    let adoption: JobAdoption
    let syncer: ClusterSyncer
    let supervisor: SessionSupervisor
    let hotLoading: PluginHotLoading
    /// Jobs of the host's own file that it set aside while preparing them (their providers crashed
    /// or hung a trial, or the host died for them before); `start()` records them as jobs this host
    /// cannot run, and they are looked at again when their configuration or plugins change.
    let setAsideAtStart: [(job: JobConfiguration, reason: String)]

    /// The timer key of the host's periodic check (job names cannot contain `/`).
    static let maintenanceKey = "/maintenance"
    static let maintenanceIntervalMilliseconds: Int64 = 5_000
    /// How long before its instant a fire is prepared.
    static let armLeadMilliseconds: Int64 = 250
    /// How long a stopping host waits for its background work (registry looks, scans) once it is
    /// cancelled and the registry closed: what has not ended by then waits on something that
    /// ignores cancellation, and must not hold the stop.
    static let backgroundStopLimit: Duration = .seconds(2)

    /// Prepares every job of `configuration` against `providers` (throws before anything starts
    /// when one is invalid).
    ///
    /// With a `workerExecutable` and `plugins.preflight` on, each job's providers are first tried in
    /// a separate process (``JobTrials``); with a `crashJournal`, a job this host died for before is
    /// refused while it is unchanged. A job either of them condemns is set aside rather than
    /// failing the host: the host starts without it. The trial runs on a thread of its own, never
    /// holding one of Swift's cooperative threads.
    public init(
        configuration: HostConfiguration, providers: ProviderRegistry, registry: any RegistryCenter,
        clock: any SchedulerClock = SystemClock(), instance: JobInstance = .local(), logger: Logger,
        processorCount: Int = ProcessInfo.processInfo.activeProcessorCount, workerExecutable: String? = nil,
        pluginLoader: PluginLoader? = nil, crashJournal: CrashJournal? = nil
    ) async throws(HostConfigurationError) {
        self.configuration = configuration
        self.registry = registry
        // The host's trial processes are killed when it stops: a hot-load under way never holds
        // its shutdown.
        let children = ChildProcessSet()
        var loader = pluginLoader ?? PluginHotLoading.defaultLoader(configuration.plugins, logger: logger, workerExecutable: workerExecutable)
        loader.preflight?.children = children
        var trials: JobTrials?
        if configuration.plugins.preflight, let workerExecutable {
            trials = JobTrials(
                executable: workerExecutable, children: children,
                limit: .milliseconds(Int64((configuration.plugins.preflightTimeoutSeconds * 1000).rounded())), logger: logger)
        }
        let preparation = JobPreparation(
            providers: providers, processorCount: processorCount, workerExecutable: workerExecutable, trials: trials,
            journal: crashJournal)
        var jobs: [PreparedJob] = []
        var setAside: [(job: JobConfiguration, reason: String)] = []
        let requests = configuration.jobs.indices.map { index in
            JobPreparation.Request(
                job: configuration.jobs[index], locate: JobCatalog.locator(configuration, index: index), file: configuration.file)
        }
        let outcomes = await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: preparation.prepare(requests)) }
        }
        for (request, outcome) in zip(requests, outcomes) {
            switch outcome {
            case .prepared(let job?): jobs.append(job)
            case .prepared(nil): setAside.append((request.job, "it was not prepared"))
            case .refused(let error): throw error
            case .setAside(let reason): setAside.append((request.job, reason))
            }
        }
        setAsideAtStart = setAside
        let pool = WorkerPool(size: configuration.host.workerThreads ?? WorkerPool.defaultSize)
        var fencingFraction: Double?
        if case .zookeeper(let zookeeper) = configuration.registry { fencingFraction = zookeeper.cancelItemsAtSessionFraction }
        services = HostServices(
            pool: pool, instance: instance, clock: clock, logger: logger, workerExecutable: workerExecutable,
            fencingFraction: fencingFraction, children: children)
        var runtimes: [String: JobRuntime] = [:]
        for job in jobs {
            runtimes[job.name] = JobRuntime(
                job: job, coordinator: JobCoordinator(registry: registry, job: job.name, instance: instance, events: services.events),
                services: services)
        }
        context = HostContext(
            configuration: configuration, registry: registry, services: services,
            timer: TimerService(clock: clock, armLeadMilliseconds: Self.armLeadMilliseconds), logger: logger, providers: providers,
            preparation: preparation, runtimes: runtimes)
        let adoption = JobAdoption(context: context)
        self.adoption = adoption
        syncer = ClusterSyncer(context: context, adoption: adoption)
        supervisor = SessionSupervisor(context: context)
        hotLoading = PluginHotLoading(context: context, loader: loader) { await adoption.reconsiderIncapableJobs() }
        context.handleSyncs { [weak syncer] runtime in await syncer?.sync(runtime) }
    }

    /// Registers every job and starts firing. A job the registry refuses (another job type under the
    /// same name) stops the start before anything fires.
    public func start() async throws {
        let first = context.lifecycle.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        try await registerAtStart()
        let runtimes = self.runtimes
        let maintenanceInterval = Self.maintenanceIntervalMilliseconds
        // Fires are armed ahead of their instant and started in waves (see ``JobRuntime/arm(deadline:)``).
        context.timer.start(
            handler: { [weak self] key, deadline, now in
                guard let self else { return nil }
                if key == Self.maintenanceKey {
                    // Off the timer's thread: with thousands of jobs it takes a while.
                    context.background.spawn("periodic check") { self.maintain(now: now) }
                    return now + maintenanceInterval
                }
                return context.table.withLock { $0[key] }?.timerFired(deadline: deadline, now: now)
            },
            arm: { [weak self] key, deadline in
                guard let self, key != Self.maintenanceKey else { return }
                context.table.withLock { $0[key] }?.arm(deadline: deadline)
            },
            release: { [weak self] now in self?.releaseWaves(now: now) })
        let now = services.clock.now()
        for runtime in runtimes.values {
            context.schedule(runtime, after: now)
            context.requestSync(runtime)
        }
        context.timer.schedule(Self.maintenanceKey, at: now + maintenanceInterval)
        supervisor.start { [adoption] in
            await adoption.registerAgain()
            await adoption.rewriteIncapable()
            await adoption.adoptJobs()
        }
        await adoption.adoptJobs()
        hotLoading.startWatching()
        hotLoading.cleanCache(logger: context.logger)
        context.lifecycle.withLock { $0.registered = true }
        let scheduled = runtimes.values.filter { $0.job.schedule != nil }.count
        context.logger.notice("host started", metadata: [
            "instance": "\(services.instance.id)", "jobs": "\(runtimes.count)", "jobs.scheduled": "\(scheduled)",
            "jobs.oneOff": "\(runtimes.count - scheduled)", "workers": "\(services.pool.size)",
        ])
    }

    /// How many session expiries during the start's registration a host rides out (registering
    /// again on each new session) before the start fails.
    static let expiriesAtStart = 3

    /// Registers every job of the host's file, in one registry session: a session that expires
    /// meanwhile took the instance nodes made so far with it, so once the registry has opened a
    /// new one (it does by itself), every job is registered again (each step writes what is
    /// missing). A host paused or cut off for longer than its session while it starts thus
    /// starts rather than exits; after ``expiriesAtStart`` expiries, or when no new session comes
    /// within the connection timeout, the start fails.
    private func registerAtStart() async throws {
        var adopted: Set<String> = []
        var expiries = 0
        while true {
            let session = registry.sessionID
            do {
                for runtime in runtimes.values.sorted(by: { $0.name < $1.name }) {
                    do {
                        try await retryingUncertain("register the job", job: runtime.name) { try await adoption.register(runtime) }
                        if adopted.insert(runtime.name).inserted { services.events.publish(.jobAdopted(job: runtime.name)) }
                    } catch let error as JobRegistrationError where error.setsAside {
                        await adoption.setAside(runtime, reason: error.message)
                    }
                }
                for (job, reason) in setAsideAtStart {
                    await adoption.setAsideBeforeRegistration(job, reason: reason)
                }
                let namespace = try await retryingUncertain("read the namespace") { try await registry.exists("/", watch: nil) }
                adoption.namespaceCreated.withLock { $0 = namespace?.createdTransaction }
                // Done in one session: the nodes made are all there.
                if registry.sessionID == session { return }
            } catch let error as RegistryError where error.code == .sessionExpired || error.code.isUncertain {
                // Uncertain here means no answer for twice the session timeout (``retryingUncertain``):
                // the server has expired the session by then; the client learns it on reconnecting.
                guard expiries < Self.expiriesAtStart else { throw error }
            }
            // Expired with no error seen (the session changed between two steps) counts the same.
            guard expiries < Self.expiriesAtStart else { throw RegistryError(.sessionExpired) }
            expiries += 1
            context.logger.warning("registry: the session expired during the start; registering every job again on a new one", metadata: [
                "expiries": "\(expiries)"])
            try await awaitSession(after: session)
        }
    }

    /// Returns once the registry has a session other than `old` (the registry opens one by itself
    /// after an expiry), or throws when the registry closes or none comes within the time the
    /// start gives a connection.
    private func awaitSession(after old: Int64?) async throws {
        let states = registry.sessionStates()
        let limit: Duration = if case .zookeeper(let zookeeper) = configuration.registry {
            .milliseconds(zookeeper.connectionTimeoutMilliseconds)
        } else {
            .seconds(15)
        }
        let renewed = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await state in states {
                    switch state {
                    case .connected(let id) where id != old: return true
                    case .closed: return false
                    default: continue
                    }
                }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        guard renewed else {
            context.logger.error("registry: no new session after the expiry during the start", metadata: ["waited": "\(limit)"])
            throw RegistryError(.sessionExpired)
        }
    }

    /// Runs a registry step of the start again while its outcome is uncertain (the connection to
    /// ZooKeeper was lost, or a request went unanswered for a session timeout), for up to twice
    /// the session timeout: a host whose connection comes back within its session starts, rather
    /// than exiting on a blip. The steps of a registration are safe to repeat: they write what is
    /// missing, and the same values again. A session that expires meanwhile is left to
    /// ``registerAtStart()``; any other error ends the start.
    private func retryingUncertain<Result>(
        _ step: String, job: String? = nil, _ body: () async throws -> Result
    ) async throws -> Result {
        let clock = services.clock
        let deadline = clock.monotonicNow() + (registry.sessionTimeout ?? .zero) * 2
        var pause = Duration.milliseconds(50)
        while true {
            do {
                return try await body()
            } catch let error as RegistryError where error.code.isUncertain && clock.monotonicNow() + pause < deadline {
                var metadata: Logger.Metadata = ["step": "\(step)", "error": "\(LogText.escaped(error.description))", "retry.in": "\(pause)"]
                if let job { metadata["job"] = "\(LogText.escaped(job))" }
                context.logger.warning("registry: no certain answer during the start; trying again", metadata: metadata)
                try await clock.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
            }
        }
    }

    /// The periodic check: jobs whose registry state changed sync, reconciles that are due run, and
    /// the namespace is scanned for jobs to adopt.
    private func maintain(now: Int64) {
        adoption.rescan()
        syncer.maintain(now: now)
    }

    /// The timer's release at an instant: every wave due starts now, on the worker pool, and the
    /// timer's own work on the same keys waits until their fires have started (at most 20 ms;
    /// runners held up in other jobs' long items do not hold the timer longer).
    /// A wave that comes more than a second late (the host was paused) is not started: its fires
    /// go the general way, as missed fires.
    private func releaseWaves(now: Int64) {
        let waves = services.fireBoard.takeDue(now: now)
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
            context.background.spawn("end held fires") { wave.endHeldFires() }
        }
    }

    // MARK: Operations

    /// ElasticJob's `triggerAllInstances`: every instance of the job runs it once now (its own items).
    public func trigger(_ jobName: String) async throws {
        _ = try self.runtime(jobName)
        try await operations.trigger(job: jobName)
    }

    /// Asks `instanceID` to stop running the job (ElasticJob's `JobOperateAPI.shutdown`), through an
    /// explicit command node rather than by deleting its instance node.
    public func requestShutdown(_ jobName: String, instance instanceID: String) async throws {
        try await self.runtime(jobName).coordinator.requestShutdown(of: instanceID)
    }

    private func runtime(_ jobName: String) throws -> JobRuntime {
        guard let runtime = runtimes[jobName] else {
            throw JobRegistrationError(job: jobName, message: "no such job on this host; its jobs are \(runtimes.keys.sorted().joined(separator: ", "))")
        }
        return runtime
    }

    /// Whether the job still runs on this host (false after a shutdown command).
    public func isActive(_ jobName: String) -> Bool {
        context.isActive(jobName)
    }

    /// The operation APIs over this host's registry: with ZooKeeper they act on the whole cluster.
    public var operations: ClusterOperations { ClusterOperations(registry: registry, logger: context.logger, events: services.events) }

    // MARK: Jobs this host cannot run

    /// The providers `job` names that this host has not loaded, described; `nil` when it has them all.
    public func missingProviders(_ job: JobConfiguration) -> String? {
        adoption.missingProviders(job)
    }

    /// The jobs of the registry this host cannot run, with the reasons.
    public var incapableJobs: [String: String] {
        adoption.incapableJobs
    }

    /// Plugins changed: every job this host could not run is looked at again.
    public func reconsiderIncapableJobs() async {
        await adoption.reconsiderIncapableJobs()
    }

    /// Checks a job the way start-up does, against this host's plugins (see
    /// ``JobAdoption/validate(_:allowMissingPlugins:)``).
    public func validate(_ job: JobConfiguration, allowMissingPlugins: Bool) async throws(HostConfigurationError) -> String? {
        try await adoption.validate(job, allowMissingPlugins: allowMissingPlugins)
    }

    // MARK: Plugins

    /// Loads a new version of a plugin (or a new plugin) into the running host, as a new generation
    /// (see ``PluginHotLoading/loadPlugin(file:label:)``).
    public func loadPlugin(file: String, label: String? = nil) async -> Result<PluginLoadOutcome, PluginHotLoadError> {
        await hotLoading.loadPlugin(file: file, label: label)
    }

    /// How many plugin generations the host holds (the start's and the hot-loaded ones): cheap,
    /// unlike ``pluginGenerations()``, which describes each.
    public var pluginGenerationCount: Int { context.providers.generations.count }

    /// Every generation of every plugin, in load order, with the jobs that use it now.
    public func pluginGenerations() -> [PluginGenerationStatus] {
        hotLoading.pluginGenerations()
    }

    /// Writes an uploaded plugin file where ``loadPlugin(file:label:)`` can take it: a private
    /// directory beside the plugin cache. The caller removes it after the load (the cache keeps its
    /// own copy).
    public func stagePluginUpload(bytes: [UInt8], name: String) throws -> String {
        try hotLoading.stageUpload(bytes: bytes, name: name)
    }

    // MARK: Stopping

    /// Kills the host's trial processes (trial loads of plugins, trials of jobs), now and from now
    /// on: the hot-loads and job checks waiting on them end at once, refused. Called when the host
    /// begins to stop, so that none of them holds its shutdown (or the control API's, which waits
    /// for the requests it serves).
    public func abandonChildProcesses() {
        services.children.stop()
    }

    /// Whether the host should be sent work now, and why not (docs/metrics.md, `GET /readyz`):
    /// started with every job registered, not stopping, its registry session up and the host not
    /// fenced. Cheap: flags only, no registry request.
    public func readiness() -> HostReadiness {
        let (registered, stopped) = context.lifecycle.withLock { ($0.registered, $0.stopped) }
        let connected = services.registryConnected.load(ordering: .acquiring)
        let fenced = services.fenced.load(ordering: .acquiring)
        var reasons: [String] = []
        if stopped {
            reasons.append("the host is stopping")
        } else if !registered {
            reasons.append("the host has not registered its jobs yet")
        }
        if !connected { reasons.append("the registry session is down") }
        if fenced { reasons.append("the host is fenced: the registry has not answered within the fencing fraction of the session timeout") }
        return HostReadiness(
            registered: registered, stopping: stopped, registryConnected: connected, fenced: fenced, jobs: runtimes.count,
            jobsSetAside: adoption.incapable.withLock { $0.count }, reasons: reasons)
    }

    /// Waits for graceful shutdown, then drains (see ``shutdown()``).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops firing, waits up to the configured deadline for running fires, asks the items still
    /// running to stop, and leaves the registry.
    public func shutdown() async {
        let first = context.lifecycle.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        let logger = context.logger
        abandonChildProcesses()
        context.timer.stop()
        // Fires armed for instants the stopped timer will not reach hold their runtimes; and with
        // the waves gone, stopping each job does not look for its fire in them.
        services.fireBoard.close()
        for runtime in runtimes.values { runtime.stop() }
        var busy = runtimes.values.filter(\.isRunning)
        if !busy.isEmpty {
            let timeout = configuration.host.shutdownTimeoutSeconds
            logger.notice("stopping: waiting for running jobs", metadata: ["jobs": "\(busy.count)", "timeout.seconds": "\(timeout)"])
            // Whichever comes first: every running job idle, or the deadline.
            let waiting = busy
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for runtime in waiting { await runtime.untilIdle() }
                }
                group.addTask { [clock = services.clock] in
                    try? await clock.sleep(for: .milliseconds(Int64(timeout * 1000)))
                }
                await group.next()
                group.cancelAll()
            }
            busy = busy.filter(\.isRunning)
        }
        if !busy.isEmpty {
            let names = busy.map(\.name).sorted().joined(separator: ",")
            logger.warning("stopping: the shutdown deadline passed with jobs still running; asking their items to stop", metadata: ["jobs": "\(names)"])
            services.cancellation.cancelAll()
        }
        for runtime in runtimes.values {
            runtime.shutdownWorkers()
            await runtime.coordinator.unregister()
        }
        await registry.close()
        let stragglers = await context.background.cancelAndWait(upTo: Self.backgroundStopLimit)
        if !stragglers.isEmpty {
            // Work cancelled that has not run since (on a busy machine, a task may wait that long
            // for a thread); whatever runs of it finds the host stopped.
            logger.notice("stopping: background work still under way; not waiting for it", metadata: ["tasks": "\(stragglers.joined(separator: ","))"])
        }
        services.pool.shutdown()
        logger.notice("host stopped", metadata: ["instance": "\(services.instance.id)"])
        services.events.finish()
    }
}

/// A host's readiness for work (``ShardworkHost/readiness()``), as `GET /readyz` answers it.
public struct HostReadiness: Sendable, Equatable, Codable {
    /// Ready when nothing is in ``reasons``.
    public var ready: Bool { reasons.isEmpty }
    /// Every job of the host's start is registered (or set aside).
    public var registered: Bool
    public var stopping: Bool
    public var registryConnected: Bool
    public var fenced: Bool
    /// Jobs that run here, and jobs the host cannot run (set aside: not a reason to be unready).
    public var jobs: Int
    public var jobsSetAside: Int
    /// Why the host is not ready, in words; empty when it is.
    public var reasons: [String]

    private enum CodingKeys: String, CodingKey {
        case ready, registered, stopping, registryConnected, fenced, jobs, jobsSetAside, reasons
    }

    public init(registered: Bool, stopping: Bool, registryConnected: Bool, fenced: Bool, jobs: Int, jobsSetAside: Int, reasons: [String]) {
        self.registered = registered
        self.stopping = stopping
        self.registryConnected = registryConnected
        self.fenced = fenced
        self.jobs = jobs
        self.jobsSetAside = jobsSetAside
        self.reasons = reasons
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        registered = try container.decode(Bool.self, forKey: .registered)
        stopping = try container.decode(Bool.self, forKey: .stopping)
        registryConnected = try container.decode(Bool.self, forKey: .registryConnected)
        fenced = try container.decode(Bool.self, forKey: .fenced)
        jobs = try container.decode(Int.self, forKey: .jobs)
        jobsSetAside = try container.decode(Int.self, forKey: .jobsSetAside)
        reasons = try container.decode([String].self, forKey: .reasons)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(ready, forKey: .ready)
        try container.encode(registered, forKey: .registered)
        try container.encode(stopping, forKey: .stopping)
        try container.encode(registryConnected, forKey: .registryConnected)
        try container.encode(fenced, forKey: .fenced)
        try container.encode(jobs, forKey: .jobs)
        try container.encode(jobsSetAside, forKey: .jobsSetAside)
        try container.encode(reasons, forKey: .reasons)
    }
}
