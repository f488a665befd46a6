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
    package var runtimes: [String: JobRuntime] { context.runtimes }

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
                job: job, coordinator: JobCoordinator(
                    registry: registry, job: job.name, instance: instance, events: services.events,
                    compatibility: configuration.registry.elasticJobCompatibility, jobClasses: configuration.host.jobClasses),
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
        try await adoption.registerAtStart(setAside: setAsideAtStart)
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
            release: { [services, registry, background = context.background] now in
                services.fireBoard.launchDue(now: now, services: services, registry: registry, background: background)
            })
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

    /// The periodic check: jobs whose registry state changed sync, reconciles that are due run, and
    /// the namespace is scanned for jobs to adopt.
    private func maintain(now: Int64) {
        adoption.rescan()
        syncer.maintain(now: now)
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
    public var operations: ClusterOperations {
        ClusterOperations(
            registry: registry, logger: context.logger, events: services.events, compatibility: configuration.registry.elasticJobCompatibility, jobClasses: configuration.host.jobClasses)
    }

    // MARK: Jobs this host cannot run

    /// The providers `job` names that this host has not loaded, described; `nil` when it has them all.
    package func missingProviders(_ job: JobConfiguration) -> String? {
        adoption.missingProviders(job)
    }

    /// The jobs of the registry this host cannot run, with the reasons.
    public var incapableJobs: [String: String] {
        adoption.incapableJobs
    }

    /// Plugins changed: every job this host could not run is looked at again.
    package func reconsiderIncapableJobs() async {
        await adoption.reconsiderIncapableJobs()
    }

    /// Checks a job the way start-up does, against this host's plugins (see
    /// ``JobAdoption/validate(_:allowMissingPlugins:)``).
    package func validate(_ job: JobConfiguration, allowMissingPlugins: Bool) async throws(HostConfigurationError) -> String? {
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
    package func stagePluginUpload(bytes: [UInt8], name: String) throws -> String {
        try hotLoading.stageUpload(bytes: bytes, name: name)
    }

    // MARK: Stopping

    /// Kills the host's trial processes (trial loads of plugins, trials of jobs), now and from now
    /// on: the hot-loads and job checks waiting on them end at once, refused. Called when the host
    /// begins to stop, so that none of them holds its shutdown (or the control API's, which waits
    /// for the requests it serves).
    package func abandonChildProcesses() {
        services.children.stop()
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
