import Foundation
import Logging
import ServiceLifecycle
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
/// Cluster events are level-triggered: a watched change to a job's nodes (or the periodic check)
/// makes the host re-read the job's state and act on what it finds (see ``sync(_:)``), so an event
/// that was missed (a session that expired, a watch that fired while another was being handled)
/// costs at most a delay, never a wrong state.
public final class ShardworkHost: Service, Sendable {
    public let configuration: HostConfiguration
    /// The jobs that run on this host now, by name: those of the configuration, and jobs added to the
    /// cluster while it runs.
    public var runtimes: [String: JobRuntime] { table.withLock { $0 } }
    let table: Mutex<[String: JobRuntime]>
    public let registry: any RegistryCenter
    public let services: HostServices
    /// What happens on this host, as values: fires, leadership, failover, fencing, the registry
    /// session, plugins, jobs and operations (see ``HostEvent``).
    public var events: HostEvents { services.events }
    let timer: TimerService
    let logger: Logger
    /// What re-preparing a job after a configuration change (or a plugin hot-load) needs.
    let providers: ProviderRegistry
    /// How jobs are prepared: checked, tried in a separate process, then made here.
    let preparation: JobPreparation
    /// Jobs of the host's own file that it set aside while preparing them (their providers crashed
    /// or hung a trial, or the host died for them before); `start()` records them as jobs this host
    /// cannot run, and they are looked at again when their configuration or plugins change.
    let setAsideAtStart: [(job: JobConfiguration, reason: String)]
    let lifecycle = Mutex((started: false, stopped: false))
    /// Hot-loads of new plugin versions (ShardworkHost+Plugins.swift).
    let hotLoading: PluginHotLoading

    /// The host's own bookkeeping of each job's cluster state.
    struct JobSync {
        var running = false
        var dirty = false
        /// False once the job was shut down on this host by a command (or is being retired).
        var active = true
        /// Shut down on this host by a command: off here until the host restarts, or until the job
        /// is removed from the cluster (and perhaps added again).
        var shutDown = false
        /// The available instances when last looked at, to notice a membership change.
        var membership: [String]?
        /// The version of the registry's configuration this host applied last.
        var configVersion: Int32?
        var lastReconcile = ContinuousClock.now
        /// The registry transaction that created the job's `config` node, as registered: another one
        /// means the job was removed and added again.
        var configCreated: Int64?
        /// The snapshot cache generation of the last sync that went through: while it is still the
        /// cache's, nothing changed in the registry and the periodic check has nothing to do.
        var syncedGeneration: UInt64?
        /// Added to the cluster (`job add`) rather than configured here: its `dynamic` node goes
        /// back with it if the namespace has to be written again.
        var dynamic = false
    }

    /// The namespace as this host registered in it: the registry transaction that created the node
    /// `/` stands for. Another one (or none) means the namespace was deleted while the host ran.
    let namespaceCreated = Mutex<Int64?>(nil)
    /// The host's background loops (the registry session's follower, the fencing watchdog): owned
    /// by the host, cancelled and awaited when it stops.
    private let loops = Mutex<[Task<Void, Never>]>([])
    /// The namespace restore under way, and a count raised when one starts and when it ends: a sync
    /// that saw a job's configuration missing while one ran looks again instead of retiring the job.
    let namespaceRestore = Mutex<(task: Task<Void, Never>?, generation: UInt64)>((nil, 0))
    /// Jobs added to the cluster that this host stopped because their configuration was gone, with
    /// when: a namespace is deleted node by node (zkCli's `deleteall`), so its jobs look removed one
    /// by one before the namespace itself goes. Those gone shortly before it are written back too.
    let recentlyRemoved = Mutex<[String: (job: JobConfiguration, at: ContinuousClock.Instant)]>([:])
    /// How long before a namespace's loss a job added to the cluster may have gone with it.
    static let namespaceLossWindow: Duration = .seconds(60)

    let syncs: Mutex<[String: JobSync]>
    /// The jobs of the registry this host cannot run (see ``adoptJobs()``).
    let incapable = Mutex<[String: IncapableJob]>([:])
    /// The unusual registry values already logged (``explainOnce(_:_:)``).
    let explained = Mutex<Set<String>>([])
    let adoption = AdoptionState()

    /// The timer key of the host's periodic check (job names cannot contain `/`).
    static let maintenanceKey = "/maintenance"
    static let maintenanceIntervalMilliseconds: Int64 = 5_000
    /// How long before its instant a fire is prepared.
    static let armLeadMilliseconds: Int64 = 250

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
        // The host's trial processes are killed when it stops: a hot-load under way never holds
        // its shutdown.
        let children = ChildProcessSet()
        var loader = pluginLoader ?? PluginHotLoading.defaultLoader(configuration.plugins, logger: logger, workerExecutable: workerExecutable)
        loader.preflight?.children = children
        hotLoading = PluginHotLoading(settings: configuration.plugins, loader: loader)
        self.registry = registry
        self.logger = logger
        self.providers = providers
        var trials: JobTrials?
        if configuration.plugins.preflight, let workerExecutable {
            trials = JobTrials(
                executable: workerExecutable, children: children,
                limit: .milliseconds(Int64((configuration.plugins.preflightTimeoutSeconds * 1000).rounded())), logger: logger)
        }
        preparation = JobPreparation(
            providers: providers, processorCount: processorCount, workerExecutable: workerExecutable, trials: trials,
            journal: crashJournal)
        var jobs: [PreparedJob] = []
        var setAside: [(job: JobConfiguration, reason: String)] = []
        let requests = configuration.jobs.indices.map { index in
            JobPreparation.Request(
                job: configuration.jobs[index], locate: JobCatalog.locator(configuration, index: index), file: configuration.file)
        }
        let preparation = self.preparation
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
        timer = TimerService(clock: clock, armLeadMilliseconds: Self.armLeadMilliseconds)
        var runtimes: [String: JobRuntime] = [:]
        for job in jobs {
            runtimes[job.name] = JobRuntime(
                job: job, coordinator: JobCoordinator(registry: registry, job: job.name, instance: instance, events: services.events),
                services: services)
        }
        table = Mutex(runtimes)
        syncs = Mutex(Dictionary(uniqueKeysWithValues: jobs.map { ($0.name, JobSync()) }))
    }

    /// Registers every job and starts firing. A job the registry refuses (another job type under the
    /// same name) stops the start before anything fires.
    public func start() async throws {
        let first = lifecycle.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        for runtime in runtimes.values.sorted(by: { $0.name < $1.name }) {
            do {
                try await register(runtime)
                services.events.publish(.jobAdopted(job: runtime.name))
            } catch let error as JobRegistrationError where error.setsAside {
                await setAside(runtime, reason: error.message)
            }
        }
        for (job, reason) in setAsideAtStart {
            await setAsideBeforeRegistration(job, reason: reason)
        }
        let namespace = try await registry.exists("/", watch: nil)
        namespaceCreated.withLock { $0 = namespace?.createdTransaction }
        let runtimes = self.runtimes
        let maintenanceInterval = Self.maintenanceIntervalMilliseconds
        // Fires are armed ahead of their instant and started in waves (see ``JobRuntime/arm(deadline:)``).
        timer.start(
            handler: { [weak self] key, deadline, now in
                guard let self else { return nil }
                if key == Self.maintenanceKey {
                    // Off the timer's thread: with thousands of jobs it takes a while.
                    Task { self.maintain() }
                    return now + maintenanceInterval
                }
                return self.table.withLock { $0[key] }?.timerFired(deadline: deadline, now: now)
            },
            arm: { [weak self] key, deadline in
                guard let self, key != Self.maintenanceKey else { return }
                self.table.withLock { $0[key] }?.arm(deadline: deadline)
            },
            release: { [weak self] now in self?.releaseWaves(now: now) })
        let now = services.clock.now()
        for runtime in runtimes.values {
            schedule(runtime, after: now)
            scheduleSync(runtime)
        }
        timer.schedule(Self.maintenanceKey, at: now + maintenanceInterval)
        watchSession()
        watchForSilence()
        await adoptJobs()
        startWatchingPlugins()
        hotLoading.cleanCache(logger: logger)
        let scheduled = runtimes.values.filter { $0.job.schedule != nil }.count
        logger.info(
            "host \(services.instance.id) started: \(runtimes.count) jobs (\(scheduled) scheduled, \(runtimes.count - scheduled) one-off), \(services.pool.size) worker threads")
    }

    /// Registers one job in the registry and follows its nodes from then on.
    func register(_ runtime: JobRuntime, rejoining: Bool = false) async throws {
        let effective = try await runtime.coordinator.register(runtime.job.configuration, rejoining: rejoining)
        if effective != runtime.job.configuration {
            // The registry's copy wins (no `overwrite`): run the job as the cluster knows it.
            switch await preparation.prepare(effective) {
            case .prepared(let job):
                runtime.replace(with: job)
            case .refused(let error):
                throw JobRegistrationError(
                    job: runtime.name, message: "the registry's configuration cannot run here: \(error.field): \(error.message)",
                    setsAside: true)
            case .setAside(let reason):
                throw JobRegistrationError(job: runtime.name, message: "the registry's configuration cannot run here: \(reason)", setsAside: true)
            }
        }
        let stored = try await runtime.coordinator.registry.textIfPresent(runtime.coordinator.paths.config)
        syncs.withLock {
            $0[runtime.name]?.configVersion = stored?.stat.version
            $0[runtime.name]?.configCreated = stored?.stat.createdTransaction
        }
        runtime.coordinator.onChange { [weak self, weak runtime] path in
            guard let self, let runtime, Self.affectsSync(path, job: runtime.coordinator.paths) else { return }
            self.scheduleSync(runtime)
        }
        // After every fire of a failover job the host looks for failover work (ElasticJob's
        // enquiry execution); other jobs have nothing to look for then.
        runtime.onFireEnded.withLock { $0 = Callback<Void> { [weak self, weak runtime] in
            guard let self, let runtime else { return }
            // Two fields, not a copy of the whole configuration: this runs after every fire.
            let job = runtime.job
            if job.configuration.failover && job.configuration.monitorExecution { self.scheduleSync(runtime) }
        } }
    }

    func schedule(_ runtime: JobRuntime, after now: Int64) {
        if let first = runtime.job.schedule?.nextFireTime(after: now) {
            timer.schedule(runtime.name, at: first)
        } else {
            timer.cancel(runtime.name)
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
        syncs.withLock { $0[jobName]?.active ?? false }
    }

    // MARK: Keeping in step with the cluster

    /// Changes to these nodes can call for action; sharding markers are the fires' own business.
    static func affectsSync(_ path: String, job paths: JobNodePath) -> Bool {
        !path.hasPrefix(paths.sharding) && !path.hasPrefix(paths.leaderSharding)
    }

    /// Runs ``sync(_:)`` for the job soon; if one is running, once more after it.
    func scheduleSync(_ runtime: JobRuntime) {
        let start = syncs.withLock { syncs -> Bool in
            guard var sync = syncs[runtime.name], sync.active else { return false }
            defer { syncs[runtime.name] = sync }
            if sync.running {
                sync.dirty = true
                return false
            }
            sync.running = true
            return true
        }
        guard start else { return }
        Task {
            repeat {
                await sync(runtime)
            } while syncs.withLock { syncs -> Bool in
                if syncs[runtime.name]?.dirty == true {
                    syncs[runtime.name]?.dirty = false
                    return true
                }
                syncs[runtime.name]?.running = false
                return false
            }
        }
    }

    /// Looks at the job's state in the registry and does what it calls for (reference §4), one
    /// step at a time as ``ClusterSync/nextStep(_:_:_:)`` decides from the snapshot: a shutdown
    /// command stops the job here; a trigger runs it once; a missing instance node is written again
    /// (its deletion is never taken for a shutdown); with no leader, an election; a leader whose
    /// server is disabled steps down; the leader flags a resharding when the available instances
    /// changed; a new configuration in the registry is applied; failover work is looked for.
    func sync(_ runtime: JobRuntime) async {
        guard services.registryConnected.load(ordering: .acquiring), !lifecycle.withLock({ $0.stopped }),
              syncs.withLock({ $0[runtime.name]?.active ?? false })
        else { return }
        let coordinator = runtime.coordinator
        let restoreGeneration = namespaceRestore.withLock { $0.generation }
        var progress = ClusterSync.Progress()
        do {
            while true {
                let snapshot = try await coordinator.snapshot()
                let generation = coordinator.cacheGeneration
                let step = ClusterSync.nextStep(snapshot, syncContext(runtime), progress)
                switch step {
                case .configurationGone(let replaced):
                    await configurationGone(runtime, replaced: replaced, restoreGeneration: restoreGeneration)
                    return
                case .shutDown:
                    await leave(runtime, .shutDownByCommand)
                    return
                case .takeTrigger:
                    progress.triggerTaken = true
                    if try await coordinator.takeTrigger() {
                        runtime.logger.info("triggered")
                        runtime.trigger()
                    }
                case .registerInstance:
                    progress.instanceChecked = true
                    runtime.logger.notice("this instance's node was gone from the registry; registering it again")
                    try await coordinator.registerInstance()
                case .rewriteInstance(let value):
                    progress.instanceChecked = true
                    runtime.logger.warning("\(coordinator.paths.instance(services.instance.id)) held \(LogText.quoted(value)), not this instance's own value; writing it again")
                    try await coordinator.rewriteInstance()
                case .removeStrayLeader(let leader):
                    progress.strayLeaderChecked = true
                    runtime.logger.warning("\(coordinator.paths.leaderInstance) holds \(LogText.quoted(leader)), which no session owns and no live instance is: no instance could be elected; removing it")
                    try await coordinator.removeStrayLeader(leader)
                case .elect:
                    progress.electionChecked = true
                    try await coordinator.electLeader()
                    if try await coordinator.snapshot().leader == services.instance.id {
                        runtime.logger.info("this instance is the leader now")
                        progress.becameLeader = true
                    }
                case .abdicate:
                    progress.electionChecked = true
                    runtime.logger.info("this instance's server is disabled; it steps down as leader")
                    try await coordinator.abdicate()
                    services.events.publish(.leaderResigned(job: runtime.name))
                case .membership(let membership, let cause):
                    progress.instanceChecked = true
                    progress.strayLeaderChecked = true
                    progress.electionChecked = true
                    progress.membershipChecked = true
                    explainUnusualValues(snapshot, of: runtime)
                    syncs.withLock { $0[runtime.name]?.membership = membership }
                    if case .goneOwners(let gone) = cause {
                        let owners = Set(gone.values).sorted().map { LogText.quoted($0, limit: 80) }.joined(separator: ", ")
                        runtime.logger.notice("items \(gone.keys.sorted().map(String.init).joined(separator: ",")) are assigned to instances that are gone (\(owners)); resharding at the next fire")
                    }
                    if cause != nil { try await coordinator.setReshardingFlag() }
                case .applyConfiguration:
                    progress.configurationChecked = true
                    try await applyStoredConfiguration(runtime)
                case .failOver:
                    progress.failoverChecked = true
                    try await failOver(runtime)
                case .done:
                    // A look that went through and read a snapshot still cached now has seen this state.
                    if coordinator.cachedGeneration == generation {
                        syncs.withLock { $0[runtime.name]?.syncedGeneration = generation }
                    }
                    return
                }
            }
        } catch {
            // A sync still under way when the host stops finds the registry closed: not an error.
            let stopping = lifecycle.withLock { $0.stopped }
            runtime.logger.log(
                level: stopping ? .debug : .error,
                "cannot bring the job in step with the registry: \(LogText.escaped("\(error)"))")
        }
    }

    /// What this host knows of the job, for ``ClusterSync``.
    private func syncContext(_ runtime: JobRuntime) -> ClusterSync.Context {
        let configuration = runtime.job.configuration
        let known = syncs.withLock { $0[runtime.name] }
        return ClusterSync.Context(
            me: services.instance, configCreated: known?.configCreated, appliedConfigVersion: known?.configVersion,
            membership: known?.membership, staticSharding: configuration.staticSharding,
            shardingTotalCount: configuration.shardingTotalCount, failsOver: configuration.failover && configuration.monitorExecution)
    }

    /// The job's configuration is gone from the registry, or was replaced: the namespace was lost
    /// (every host writes its jobs back), a restore under way is writing it back (look again), or
    /// the job was removed (it stops here; added again, it is taken up afresh).
    private func configurationGone(_ runtime: JobRuntime, replaced: Bool, restoreGeneration: UInt64) async {
        if await namespaceLost() {
            // Not this job removed: the whole namespace (the registry lost it, or an operator
            // deleted it). A lost registry never loses a job: every host writes its jobs back.
            await restoreNamespace()
            scheduleSync(runtime)
            return
        }
        // A restore under way (or one since this sync began) may be writing this job back.
        let restoring = namespaceRestore.withLock { $0.task }
        await restoring?.value
        if restoring != nil || namespaceRestore.withLock({ $0.generation }) != restoreGeneration {
            scheduleSync(runtime)
            return
        }
        if replaced {
            // Removed and added again since this host looked: what it registered went with the
            // old job. It starts afresh, as a host that sees the job for the first time.
            await leave(runtime, .retired(reason: "removed from the cluster and added again; taking it up afresh"))
            await adoptJobs()
        } else {
            // ElasticJob's removeJobConfiguration deletes the job's whole subtree: the job stops
            // everywhere.
            if syncs.withLock({ $0[runtime.name]?.dynamic ?? false }) {
                let job = runtime.job.configuration
                recentlyRemoved.withLock { $0[runtime.name] = (job, ContinuousClock.now) }
            }
            await leave(runtime, .retired(reason: "removed from the cluster (its configuration is gone from the registry)"))
        }
    }

    /// Failover (reference §4.4), level-triggered: items that were running on instances that are
    /// gone are queued; this instance's own claims that are not running here run again (after a
    /// new session, say); and when the job is idle here, one queued item is taken and run at once.
    private func failOver(_ runtime: JobRuntime) async throws {
        let coordinator = runtime.coordinator
        let me = services.instance
        let total = runtime.job.configuration.shardingTotalCount
        // A marker or claim naming this instance is a leftover (of an earlier session, say) only if
        // the job was idle here from before the snapshot was read until after: a snapshot read
        // while a run of this host's was under way still shows its markers, though the run may have
        // ended (and cleared them) by now; taking them for leftovers would run those items again.
        let idleBefore = runtime.idleStamp
        var snapshot = try await coordinator.snapshot()
        var idleThroughout = idleBefore != nil && runtime.idleStamp == idleBefore
        let crashed = CoordinationRules.crashedItems(snapshot, total: total, idleLocal: idleThroughout ? me.id : nil)
        if !crashed.isEmpty {
            let list = crashed.map(String.init).joined(separator: ",")
            runtime.logger.warning("items \(list) were running on instances that are gone; queued for another instance to run")
            try await coordinator.flagCrashed(crashed, in: snapshot)
            services.events.publish(.failoverQueued(job: runtime.name, items: crashed))
            snapshot = try await coordinator.snapshot()
            idleThroughout = idleThroughout && runtime.idleStamp == idleBefore
        }
        guard !runtime.isRunning, services.mayStartItems, CoordinationRules.isEnabled(snapshot.servers[me.serverIP]) else { return }
        var mine: [Int: UInt64] = [:]
        for (item, record) in snapshot.items where item < total && record.failovering == me.id {
            mine[item] = record.failoveringEpoch ?? 0
        }
        if !mine.isEmpty {
            // Otherwise the next look, after the run, reads them afresh.
            guard idleThroughout else { return }
            try await coordinator.prepareRerun(of: Array(mine.keys), in: snapshot)
            runtime.runFailover(mine)
            return
        }
        guard let item = CoordinationRules.nextFailoverItem(snapshot, total: total) else { return }
        if let epoch = try await coordinator.claimFailover(item) {
            services.events.publish(.failoverTaken(job: runtime.name, item: item, epoch: epoch))
            runtime.logger.notice("took item \(item) of a crashed instance (epoch \(epoch))")
            runtime.runFailover([item: epoch])
        }
    }

    /// Fencing: when the registry has not been heard from for the configured fraction of the
    /// session timeout, running items are asked to stop and no new one starts, before the session
    /// can expire and another host be handed them. Measured on the monotonic clock, from the last
    /// answer the registry gave, so that a host that was paused (SIGSTOP) fences the moment it runs
    /// again.
    private func watchForSilence() {
        guard case .zookeeper(let zookeeper) = configuration.registry, registry.sessionTimeout != nil else { return }
        let fraction = zookeeper.cancelItemsAtSessionFraction
        own(Task { [weak self] in
            while !Task.isCancelled, let self, !self.lifecycle.withLock({ $0.stopped }) {
                guard let timeout = self.registry.sessionTimeout else { return }
                if let last = self.registry.lastContact {
                    let silence = ContinuousClock.now - last
                    if silence > timeout * fraction {
                        self.fence("no answer from the registry for \(silence) (over \(fraction) of the \(timeout) session timeout)")
                    } else if self.services.fenced.load(ordering: .acquiring) {
                        self.services.fenced.store(false, ordering: .releasing)
                        self.services.events.publish(.registry(.heardAgain))
                        self.logger.notice("registry: heard from again; items may start")
                    }
                }
                try? await Task.sleep(for: min(max(timeout / 50, .milliseconds(20)), .milliseconds(250)))
            }
        })
    }

    /// Keeps a background loop to cancel and await when the host stops.
    private func own(_ loop: Task<Void, Never>) {
        loops.withLock { $0.append(loop) }
    }

    /// Asks every running item to stop (their epochs stop being current) and starts none until
    /// the registry is heard from again.
    func fence(_ reason: String) {
        guard !services.fenced.exchange(true, ordering: .acquiringAndReleasing) else { return }
        services.fencingGeneration.add(1, ordering: .acquiringAndReleasing)
        services.cancellation.cancelRunning()
        services.events.publish(.registry(.fenced(reason: reason)))
        logger.warning("registry: \(reason): running items are asked to stop and none starts, before another host can be handed them")
    }

    /// ElasticJob's config listeners (reference §4.12): a changed cron reschedules, a changed total
    /// (or strategy) flags a resharding, turning monitorExecution off clears running markers. A
    /// configuration that does not read, that the plugins refuse, or whose providers cannot be made
    /// here safely sets the job aside on this host, with the reason (``setAside(_:reason:)``): the
    /// job is taken up again when its configuration changes.
    private func applyStoredConfiguration(_ runtime: JobRuntime) async throws {
        let coordinator = runtime.coordinator
        guard let stored = try await coordinator.storedConfiguration() else { return }
        syncs.withLock { $0[runtime.name]?.configVersion = stored.version }
        let current = runtime.job.configuration
        let changed: JobConfiguration
        do {
            changed = try ElasticJobYAML.decode(stored.text, jobType: current.jobType, job: runtime.name)
        } catch {
            await setAside(runtime, reason: "its configuration (version \(stored.version)) is invalid: \(error)")
            return
        }
        guard changed != current else { return }
        if let missing = missingProviders(changed) {
            // Capability-aware: an instance that cannot run the new configuration leaves the job,
            // so that it is handed no items, and says why in the registry.
            await leave(runtime, .retired(reason: "its new configuration (version \(stored.version)) cannot run here: \(missing)"))
            await markIncapable(changed.jobName, reason: missing, version: stored.version)
            return
        }
        let prepared: PreparedJob
        switch await preparation.prepare(changed) {
        case .prepared(let job):
            prepared = job
        case .refused(let error):
            await setAside(runtime, reason: "its new configuration (version \(stored.version)) cannot run here: \(error.field): \(error.message)")
            return
        case .setAside(let reason):
            await setAside(runtime, reason: "its new configuration (version \(stored.version)): \(reason)")
            return
        }
        runtime.replace(with: prepared)
        var what: [String] = []
        if changed.cron != current.cron || changed.timeZone != current.timeZone {
            schedule(runtime, after: services.clock.now())
            what.append("cron '\(current.cron ?? "")' → '\(changed.cron ?? "")'")
        }
        if changed.shardingTotalCount != current.shardingTotalCount || changed.jobShardingStrategyType != current.jobShardingStrategyType {
            try await coordinator.setReshardingFlag()
            what.append("items \(current.shardingTotalCount) → \(changed.shardingTotalCount), strategy \(changed.jobShardingStrategyType ?? "average")")
        }
        if current.monitorExecution && !changed.monitorExecution {
            try await coordinator.clearRunning(Array(0..<max(current.shardingTotalCount, changed.shardingTotalCount)))
            what.append("monitorExecution off")
        }
        services.events.publish(.configurationApplied(job: runtime.name, version: Int(stored.version)))
        runtime.logger.info("applied the registry's new configuration (version \(stored.version))\(what.isEmpty ? "" : ": " + what.joined(separator: "; "))")
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
            Task { wave.endHeldFires() }
        }
    }

    /// The periodic check: every active job whose registry state changed syncs, and ElasticJob's
    /// reconcile runs where it is due.
    private func maintain() {
        // Children of the namespace found not to be jobs for this host are looked at again: one
        // may have become one since (its nodes written one by one rather than in one transaction).
        adoption.state.withLock { $0.foreign = [] }
        Task { await self.adoptJobs() }
        for runtime in runtimes.values {
            // A job whose registry state has not changed since its last sync has nothing to sync
            // (failover jobs look anyway: whether they may take over work depends on this host too).
            let job = runtime.job
            let synced = syncs.withLock { $0[runtime.name]?.syncedGeneration }
            if job.configuration.failover || synced == nil || runtime.coordinator.cachedGeneration != synced {
                scheduleSync(runtime)
            }
            let minutes = job.configuration.reconcileIntervalMinutes
            guard minutes > 0 else { continue }
            let due = syncs.withLock { syncs -> Bool in
                guard let last = syncs[runtime.name]?.lastReconcile, ContinuousClock.now - last >= .seconds(minutes * 60) else { return false }
                syncs[runtime.name]?.lastReconcile = ContinuousClock.now
                return true
            }
            if due { Task { await self.reconcile(runtime) } }
        }
    }

    /// ElasticJob's reconcile (reference §4.7): an assignment that names instances that are gone
    /// gets a resharding.
    private func reconcile(_ runtime: JobRuntime) async {
        do {
            let snapshot = try await runtime.coordinator.snapshot()
            let job = runtime.job.configuration
            guard !snapshot.reshardingNecessary, CoordinationRules.isLeader(snapshot, services.instance.id),
                  CoordinationRules.hasItemsOfOfflineInstances(snapshot, total: job.shardingTotalCount),
                  !(job.staticSharding && !snapshot.items.isEmpty)
            else { return }
            runtime.logger.warning("the assignment names instances that are gone; reconciling with a resharding")
            try await runtime.coordinator.setReshardingFlag()
        } catch {
            runtime.logger.error("reconcile failed: \(LogText.escaped("\(error)"))")
        }
    }

    /// One task for the whole host follows the registry session: while the connection is down no
    /// new fire starts; after an expiry the host registers every job again on the new session (its
    /// ephemeral nodes and watches died with the old one) and goes on firing. An expiry is never a
    /// shutdown.
    private func watchSession() {
        let states = registry.sessionStates()
        let initial = registry.sessionID
        own(Task { [weak self] in
            var current = initial
            for await state in states {
                guard let self else { return }
                switch state {
                case .connected(let id):
                    let renewed = current != nil && id != current
                    current = id
                    let restored = !renewed && !services.registryConnected.load(ordering: .acquiring)
                    if renewed {
                        logger.notice("registry: new session \(String(id, radix: 16)); registering every job again")
                        await reregister()
                        await rewriteIncapable()
                        await adoptJobs()
                    } else if restored {
                        logger.notice("registry: connection restored (session \(String(id, radix: 16)))")
                    }
                    services.registryConnected.store(true, ordering: .releasing)
                    services.fenced.store(false, ordering: .releasing)
                    // Once items may start again: a reader of the event may count on it.
                    if renewed {
                        services.events.publish(.registry(.sessionRenewed(session: id)))
                    } else if restored {
                        services.events.publish(.registry(.connectionRestored(session: id)))
                    }
                    for runtime in runtimes.values { scheduleSync(runtime) }
                case .disconnected:
                    services.registryConnected.store(false, ordering: .releasing)
                    services.events.publish(.registry(.connectionLost))
                    logger.warning("registry: connection lost; no new item starts until it is back")
                case .expired:
                    services.registryConnected.store(false, ordering: .releasing)
                    services.events.publish(.registry(.sessionExpired))
                    fence("the registry session expired")
                    for runtime in runtimes.values { runtime.coordinator.invalidateCache(watchesLost: true) }
                    logger.warning("registry: session expired; its ephemeral nodes are gone; waiting for a new session")
                case .closed:
                    return
                }
            }
        })
    }

    private func reregister() async {
        if await namespaceLost() {
            // Gone with the old session (ZooKeeper lost its data, say): written back whole.
            await restoreNamespace()
            return
        }
        for runtime in runtimes.values where syncs.withLock({ $0[runtime.name]?.active ?? false }) {
            runtime.coordinator.invalidateCache(watchesLost: true)
            do {
                // Only while the job is still the one this host registered: a job removed (or
                // removed and added again) while the session was gone is never written back.
                let stored = try await runtime.coordinator.registry.exists(runtime.coordinator.paths.config, watch: nil)
                guard let stored, stored.createdTransaction == syncs.withLock({ $0[runtime.name]?.configCreated }) else {
                    await leave(runtime, .retired(reason: stored == nil
                        ? "removed from the cluster while the registry session was gone"
                        : "removed from the cluster and added again while the registry session was gone; taking it up afresh"))
                    continue
                }
                _ = try await runtime.coordinator.register(runtime.job.configuration, rejoining: true)
            } catch {
                runtime.logger.error("cannot register again on the new session: \(LogText.escaped("\(error)"))")
            }
        }
    }

    // MARK: Stopping

    /// Kills the host's trial processes (trial loads of plugins, trials of jobs), now and from now
    /// on: the hot-loads and job checks waiting on them end at once, refused. Called when the host
    /// begins to stop, so that none of them holds its shutdown (or the control API's, which waits
    /// for the requests it serves).
    public func abandonChildProcesses() {
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
        let first = lifecycle.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        abandonChildProcesses()
        timer.stop()
        // Fires armed for instants the stopped timer will not reach hold their runtimes; and with
        // the waves gone, stopping each job does not look for its fire in them.
        services.fireBoard.close()
        stopWatchingPlugins()
        for runtime in runtimes.values { runtime.stop() }
        var busy = runtimes.values.filter(\.isRunning)
        if !busy.isEmpty {
            logger.info("stopping: waiting up to \(configuration.host.shutdownTimeoutSeconds) s for \(busy.count) running jobs")
            // Whichever comes first: every running job idle, or the deadline.
            let waiting = busy
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for runtime in waiting { await runtime.untilIdle() }
                }
                group.addTask { [timeout = configuration.host.shutdownTimeoutSeconds] in
                    try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
                }
                await group.next()
                group.cancelAll()
            }
            busy = busy.filter(\.isRunning)
        }
        if !busy.isEmpty {
            let names = busy.map(\.name).sorted().joined(separator: ", ")
            logger.warning("stopping: the shutdown deadline passed with jobs still running (\(names)); asking their items to stop")
            services.cancellation.cancelAll()
        }
        for runtime in runtimes.values {
            runtime.shutdownWorkers()
            await runtime.coordinator.unregister()
        }
        await registry.close()
        for loop in loops.withLock({ loops in defer { loops = [] }; return loops }) {
            loop.cancel()
            await loop.value
        }
        services.pool.shutdown()
        logger.info("host \(services.instance.id) stopped")
        services.events.finish()
    }
}
