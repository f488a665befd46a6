import Foundation
import Logging
import ShardworkSDK
import Synchronization

/// A job of the registry that this host cannot run, and why.
struct IncapableJob: Sendable, Equatable {
    var reason: String
    /// The version of the job's configuration that was looked at: a new one is looked at again.
    var version: Int32?
    /// Whether a watch on the job's configuration is armed.
    var watched = false
}

/// Which jobs run on this host: it registers them, applies their changed configurations, stops
/// them (``leave(_:_:)``), and follows the jobs that come and go while the host runs: jobs added to
/// the cluster (`shardwork job add`), jobs removed from it, and jobs this host cannot run. It also
/// writes the host's jobs back into a namespace deleted under it (JobAdoption+Namespace.swift).
///
/// Every host follows the children of the namespace root. A job marked `dynamic` (added through the
/// control API), or one of the host's own configured jobs that came back after a removal, is adopted
/// when its configuration prepares against the host's plugins: the host registers an instance and
/// fires it like a configured job. When it does not (a job type or strategy this host lacks, props
/// its plugin refuses), the host writes `/{job}/incapable/{id}` (ephemeral) with the reason and no
/// instance node, so the leader hands it no items; it looks again when the configuration changes or
/// a plugin is loaded.
final class JobAdoption: Sendable {
    let context: HostContext
    /// One scan of the namespace at a time; a request during a scan runs one more afterwards.
    private let scans = CoalescingRunner<String>()
    /// Children of the root known not to be jobs for this host (cleared when the children change),
    /// and whether the watch on the root's children is armed.
    let scanState = Mutex((foreign: Set<String>(), watchArmed: false))
    /// The jobs of the registry this host cannot run.
    let incapable = Mutex<[String: IncapableJob]>([:])
    /// The namespace as this host registered in it: the registry transaction that created the node
    /// `/` stands for. Another one (or none) means the namespace was deleted while the host ran.
    let namespaceCreated = Mutex<Int64?>(nil)
    /// The namespace restore under way, and a count raised when one starts and when it ends: a sync
    /// that saw a job's configuration missing while one ran looks again instead of retiring the job.
    let namespaceRestore = Mutex<(task: Task<Void, Never>?, generation: UInt64)>((nil, 0))
    /// Jobs added to the cluster that this host stopped because their configuration was gone, with
    /// when (on the host's clock): a namespace is deleted node by node (zkCli's `deleteall`), so its
    /// jobs look removed one by one before the namespace itself goes. Those gone shortly before it
    /// are written back too.
    let recentlyRemoved = Mutex<[String: (job: JobConfiguration, at: Int64)]>([:])
    /// How long before a namespace's loss a job added to the cluster may have gone with it.
    static let namespaceLossWindowMilliseconds: Int64 = 60_000

    init(context: HostContext) {
        self.context = context
    }

    var services: HostServices { context.services }
    var registry: any RegistryCenter { context.registry }
    var logger: Logger { context.logger }
    var configuration: HostConfiguration { context.configuration }
    var runtimes: [String: JobRuntime] { context.runtimes }
    func jobLogger(_ job: String) -> Logger { context.jobLogger(job) }

    /// The count that ``restoreNamespace()`` raises when a restore starts and when it ends.
    var restoreGeneration: UInt64 { namespaceRestore.withLock { $0.generation } }

    /// Looks for jobs to adopt (see the type's documentation). Level-triggered: it runs at start,
    /// when the namespace's children change, at every maintenance tick and after a new session.
    func adoptJobs() async {
        await scans.run("/") { await scanForJobs() }
    }

    /// At the periodic check: children of the namespace found not to be jobs for this host are
    /// looked at again (one may have become one since, its nodes written one by one rather than in
    /// one transaction).
    func rescan() {
        scanState.withLock { $0.foreign = [] }
        context.background.spawn("scan for jobs") { [self] in await adoptJobs() }
    }

    private func scanForJobs() async {
        guard services.registryConnected.load(ordering: .acquiring), !context.isStopped else { return }
        let names: [String]
        let arm = scanState.withLock { state -> Bool in
            defer { state.watchArmed = true }
            return !state.watchArmed
        }
        do {
            names = try await registry.children("/", watch: arm ? rootWatcher() : nil)
        } catch {
            if arm { scanState.withLock { $0.watchArmed = false } }
            if error.code == .noNode, await namespaceLost() {
                context.background.spawn("restore the namespace") { [self] in await restoreNamespace() }
                return
            }
            logger.error("cannot look for jobs added to the cluster", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            return
        }
        let configured = Set(configuration.jobs.map(\.jobName))
        let present = Set(names)
        let known = Set(context.table.withLock { Array($0.keys) })
        // A namespace deleted and created again (an operator's `deleteall`, node by node, then the
        // root anew) while a look at one of this host's jobs saw only that job's configuration gone
        // left the job stopped here as if removed; the root's creation tells the two apart. Looked
        // at only while this host has such jobs: configured here and not running, or added and
        // stopped within the last minute.
        let cutoff = services.clock.now() - Self.namespaceLossWindowMilliseconds
        let recentlyStopped = recentlyRemoved.withLock { removed in
            removed = removed.filter { $0.value.at >= cutoff }
            return !removed.isEmpty
        }
        if !configured.subtracting(known).isEmpty || recentlyStopped, await namespaceLost() {
            context.background.spawn("restore the namespace") { [self] in await restoreNamespace() }
            return
        }
        // Jobs gone from the registry are no longer incapable here.
        incapable.withLock { entries in entries = entries.filter { present.contains($0.key) } }
        await forgetShutDownJobs(present: present)
        let foreign = scanState.withLock { $0.foreign }
        for name in names.sorted() where !known.contains(name) && !foreign.contains(name) {
            if let problem = RegistryNames.jobNameProblem(name) {
                // Not a name any host writes: explained once, never registered under.
                context.explainOnce(
                    "/\(name)", "the registry holds a node whose name no job can have; it is not taken for a job",
                    metadata: ["path": "\(LogText.escaped("/" + name))", "problem": "\(problem)"])
                continue
            }
            do {
                try await consider(name, configuredHere: configured.contains(name))
            } catch {
                jobLogger(name).error("cannot look at the job in the registry", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
        }
    }

    /// A job shut down on this host by a command stays off here until the host restarts, as in
    /// ElasticJob, unless the cluster removes it: then this host forgets it, and a job added again
    /// under the name (another configuration node) is a new job, which this host takes up like any.
    private func forgetShutDownJobs(present: Set<String>) async {
        let shutDown = context.syncs.withLock { syncs in syncs.filter(\.value.shutDown).mapValues(\.configCreated) }
        for (name, created) in shutDown {
            if present.contains(name) {
                // Still there, or being removed or added right now (no configuration yet): the
                // next change to the namespace looks again.
                guard case let stat? = try? await registry.exists(JobNodePath(job: name).config, watch: nil),
                      let created, stat.createdTransaction != created
                else { continue }
            }
            context.syncs.withLock { _ = $0.removeValue(forKey: name) }
            context.table.withLock { _ = $0.removeValue(forKey: name) }
            jobLogger(name).info("shut down here by a command, and since removed from the cluster; forgotten")
        }
    }

    /// Fires when a job is added to or removed from the namespace: look again.
    private func rootWatcher() -> Watcher {
        { [weak self] _ in
            guard let self else { return }
            self.scanState.withLock { state in
                state.watchArmed = false
                state.foreign = []
            }
            self.context.background.spawn("scan for jobs") { await self.adoptJobs() }
        }
    }

    /// Adopts `name` if it is a job for this host and its configuration prepares here; otherwise
    /// records why not.
    private func consider(_ name: String, configuredHere: Bool) async throws {
        let paths = JobNodePath(job: name)
        var root: String?
        if !configuredHere, try await registry.exists(paths.dynamic, watch: nil) == nil {
            // A job of an ElasticJob class that this host maps to a job type of its own runs here
            // too, beside the Java nodes.
            root = configuration.host.jobClasses.isEmpty ? nil : try await registry.string(paths.root)
            guard let root, configuration.host.jobClasses[root] != nil else {
                scanState.withLock { _ = $0.foreign.insert(name) }
                return
            }
        }
        if root == nil { root = try await registry.string(paths.root) }
        guard let stored = try await registry.textIfPresent(paths.config), let storedType = root, !storedType.isEmpty
        else { return }  // being added or removed right now; the next change looks again
        let jobType = configuration.host.jobType(forStored: storedType)
        if let known = incapable.withLock({ $0[name] }), known.version == stored.stat.version { return }
        let job: JobConfiguration
        do {
            job = try ElasticJobYAML.decode(stored.text, jobType: jobType, job: name)
        } catch {
            await markIncapable(name, reason: "its configuration at \(paths.config) is invalid: \(error)", version: stored.stat.version)
            return
        }
        if let missing = missingProviders(job) {
            await markIncapable(name, reason: missing, version: stored.stat.version)
            return
        }
        let prepared: PreparedJob
        switch await context.preparation.prepare(job) {
        case .prepared(let job):
            prepared = job
        case .refused(let error):
            await markIncapable(name, reason: "\(error.field): \(error.message)", version: stored.stat.version)
            return
        case .setAside(let reason):
            await markIncapable(name, reason: reason, version: stored.stat.version)
            return
        }
        let runtime = JobRuntime(
            job: prepared, coordinator: JobCoordinator(
                registry: registry, job: name, instance: services.instance, events: services.events,
                compatibility: configuration.registry.elasticJobCompatibility, jobClasses: configuration.host.jobClasses),
            services: services)
        let inserted = context.table.withLock { table -> Bool in
            guard table[name] == nil else { return false }
            table[name] = runtime
            return true
        }
        guard inserted else { return }
        context.syncs.withLock {
            $0[name] = HostContext.JobSync(now: services.clock.now(), dynamic: !configuredHere)
        }
        do {
            // The job is the registry's: never write its root or configuration (it may have been
            // removed since it was read).
            try await register(runtime, rejoining: true)
        } catch {
            jobLogger(name).error("cannot register the job to run here", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            context.syncs.withLock { _ = $0.removeValue(forKey: name) }
            context.table.withLock { _ = $0.removeValue(forKey: name) }
            await runtime.coordinator.unregister()
            return
        }
        if incapable.withLock({ $0.removeValue(forKey: name) }) != nil {
            _ = try? await registry.deleteIfPresent(paths.incapable(services.instance.id))
        }
        context.schedule(runtime, after: services.clock.now())
        context.requestSync(runtime)
        services.events.publish(.jobAdopted(job: name))
        jobLogger(name).notice("runs on this host now", metadata: [
            "origin": "\(configuredHere ? "configured here and back in the registry" : "added to the cluster")",
            "job.type": "\(LogText.escaped(jobType))", "version": "\(stored.stat.version)",
        ])
    }

    /// The providers `job` names that this host has not loaded, described; `nil` when it has them all.
    func missingProviders(_ job: JobConfiguration) -> String? {
        var missing: [String] = []
        for (field, kind, name) in JobField.providerNames(in: job) {
            do {
                _ = try context.providers.resolve(kind, name)
            } catch {
                missing.append("\(field): \(kind) '\(name ?? "")' is not loaded on this host")
            }
        }
        return missing.isEmpty ? nil : missing.joined(separator: "; ")
    }

    /// Records that this host cannot run `job`, in the registry too (`incapable/{id}`, ephemeral),
    /// logged once per reason, and watches the job's configuration: a change is looked at at once.
    func markIncapable(_ job: String, reason: String, version: Int32?) async {
        let reason = LogText.escaped(reason)
        let (previous, watch) = incapable.withLock { entries -> (IncapableJob?, Bool) in
            let previous = entries[job]
            entries[job] = IncapableJob(reason: reason, version: version, watched: previous?.watched ?? false)
            defer { entries[job]?.watched = true }
            return (previous, previous?.watched != true)
        }
        if previous?.reason != reason {
            services.events.publish(.jobSetAside(job: job, reason: reason))
            jobLogger(job).notice("this host cannot run it, so it takes no items of it", metadata: ["reason": "\(reason)"])
        }
        await writeIncapable(job, reason: reason)
        if watch {
            do {
                _ = try await registry.exists(JobNodePath(job: job).config, watch: { [weak self] _ in
                    guard let self else { return }
                    self.incapable.withLock { $0[job]?.watched = false }
                    self.context.background.spawn("scan for jobs") { await self.adoptJobs() }
                })
            } catch {
                incapable.withLock { $0[job]?.watched = false }
            }
        }
    }

    /// Sets a job this host runs aside: it stops here (a running fire finishes), leaves the job,
    /// and is recorded as a job this host cannot run, with `reason`. It is taken up again when its
    /// configuration changes, or a plugin is loaded.
    func setAside(_ runtime: JobRuntime, reason: String) async {
        let version = try? await registry.exists(runtime.coordinator.paths.config, watch: nil)?.version
        await leave(runtime, .retired(reason: "set aside: \(LogText.escaped(reason))"))
        await markIncapable(runtime.name, reason: reason, version: version)
    }

    /// A job of the host's own file that it set aside before registering it: its configuration goes
    /// to the registry as at any start (so that the cluster knows the job, and `job status` shows
    /// why this host does not run it), without an instance of this host.
    func setAsideBeforeRegistration(_ job: JobConfiguration, reason: String) async {
        let coordinator = JobCoordinator(
            registry: registry, job: job.jobName, instance: services.instance, compatibility: configuration.registry.elasticJobCompatibility, jobClasses: configuration.host.jobClasses)
        do {
            let version = try await coordinator.registerConfiguration(job)
            await markIncapable(job.jobName, reason: reason, version: version)
        } catch {
            jobLogger(job.jobName).error(
                "set aside on this host, and cannot be written to the registry",
                metadata: ["reason": "\(LogText.escaped(reason))", "error": "\(LogText.escaped("\(error)"))"])
        }
    }

    private func writeIncapable(_ job: String, reason: String) async {
        let paths = JobNodePath(job: job)
        let path = paths.incapable(services.instance.id)
        do {
            // Only under a job that still exists: never bring a removed job's nodes back.
            guard try await registry.exists(paths.config, watch: nil) != nil else { return }
            try await registry.createIfAbsent(paths.incapable)
            if try await !registry.createIfAbsent(path, data: [UInt8](utf8: reason), mode: .ephemeral) {
                _ = try await registry.setData(path, data: [UInt8](utf8: reason), version: nil)
            }
        } catch {
            jobLogger(job).error(
                "cannot record in the registry that this host cannot run it", metadata: ["error": "\(LogText.escaped("\(error)"))"])
        }
    }

    /// After a new session: the ephemeral `incapable` nodes died with the old one.
    func rewriteIncapable() async {
        for (job, entry) in incapable.withLock({ $0 }) {
            await writeIncapable(job, reason: entry.reason)
        }
    }

    /// Plugins changed: every job this host could not run is looked at again.
    func reconsiderIncapableJobs() async {
        incapable.withLock { entries in
            for key in entries.keys { entries[key]?.version = nil }
        }
        await adoptJobs()
    }

    /// The jobs of the registry this host cannot run, with the reasons.
    var incapableJobs: [String: String] {
        incapable.withLock { $0.mapValues(\.reason) }
    }

    /// How a job leaves this host.
    enum Departure {
        /// Removed from the cluster, or it cannot run here any more: the host forgets it.
        case retired(reason: String)
        /// A shutdown command for this instance: the host remembers it, so that the job stays off
        /// here until it is removed from the cluster (and perhaps added again).
        case shutDownByCommand
        /// This instance's node deleted by another client while its session lives: ElasticJob's
        /// shutdown, remembered as a command is.
        case shutDownByDeletion

        var isShutdown: Bool {
            if case .retired = self { false } else { true }
        }
    }

    /// Stops the job on this host: no fire starts, a running one finishes first, then the
    /// instance leaves the job (the other instances reshard). Once per job: a later call for a job
    /// already leaving does nothing.
    func leave(_ runtime: JobRuntime, _ departure: Departure) async {
        let first = context.syncs.withLock { syncs -> Bool in
            guard syncs[runtime.name]?.active == true else { return false }
            syncs[runtime.name]?.active = false
            if departure.isShutdown { syncs[runtime.name]?.shutDown = true }
            return true
        }
        guard first else { return }
        context.timer.cancel(runtime.name)
        runtime.stop()
        let reason = switch departure {
        case .retired(let reason): reason
        case .shutDownByCommand: "shut down by a command"
        case .shutDownByDeletion: "shut down: its instance node was deleted by another client (ElasticJob's shutdown)"
        }
        services.events.publish(.jobStopped(job: runtime.name, reason: reason))
        runtime.logger.notice("stopped on this host", metadata: ["reason": "\(reason)"])
        await runtime.untilIdle()
        if case .shutDownByCommand = departure { try? await runtime.coordinator.takeShutdownCommand() }
        runtime.shutdownWorkers()
        await runtime.coordinator.unregister()
        guard case .retired = departure else { return }
        context.syncs.withLock { _ = $0.removeValue(forKey: runtime.name) }
        context.table.withLock { table in
            if table[runtime.name] === runtime { table.removeValue(forKey: runtime.name) }
        }
    }

    /// Checks a job the way start-up does, against this host's plugins. With trials (the default),
    /// its providers are tried in a separate process and never made in this host, which serves the
    /// request; without, they are made here and dropped. With
    /// `allowMissingPlugins`, a job type or strategy this host lacks is accepted (other hosts may have
    /// it; this one will be incapable of it) once everything else is valid; the answer then says
    /// what is missing.
    func validate(_ job: JobConfiguration, allowMissingPlugins: Bool) async throws(HostConfigurationError) -> String? {
        if allowMissingPlugins, let missing = missingProviders(job) {
            // Everything that needs no plugin is still checked: cron, time zone, item parameters.
            do {
                _ = try JobCatalog.plan(job, providers: context.providers, workerExecutable: services.workerExecutable)
            } catch {
                guard JobField.providerFields.contains(where: { $0.key == error.field }) else { throw error }
            }
            return missing
        }
        switch await context.preparation.check(job) {
        case nil, .prepared?:
            return nil
        case .refused(let error)?:
            throw error
        case .setAside(let reason)?:
            throw HostConfigurationError(file: nil, location: nil, job: job.jobName, field: "", message: reason)
        }
    }

    /// Registers one job in the registry and follows its nodes from then on.
    func register(_ runtime: JobRuntime, rejoining: Bool = false) async throws {
        let effective = try await runtime.coordinator.register(runtime.job.configuration, rejoining: rejoining)
        if effective != runtime.job.configuration {
            // The registry's copy wins (no `overwrite`): run the job as the cluster knows it.
            switch await context.preparation.prepare(effective) {
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
        context.syncs.withLock {
            $0[runtime.name]?.configVersion = stored?.stat.version
            $0[runtime.name]?.configCreated = stored?.stat.createdTransaction
        }
        runtime.coordinator.onChange { [weak self, weak runtime] path in
            guard let self, let runtime, ClusterSyncer.affectsSync(path, job: runtime.coordinator.paths) else { return }
            self.context.requestSync(runtime)
        }
        // After every fire of a failover job the host looks for failover work (ElasticJob's
        // enquiry execution); other jobs have nothing to look for then.
        runtime.onFireEnded.withLock { $0 = Callback<Void> { [weak self, weak runtime] in
            guard let self, let runtime else { return }
            // Two fields, not a copy of the whole configuration: this runs after every fire.
            let job = runtime.job
            if job.configuration.failover && job.configuration.monitorExecution { self.context.requestSync(runtime) }
        } }
    }

    /// ElasticJob's config listeners (reference §4.12): a changed cron reschedules, a changed total
    /// (or strategy) flags a resharding, turning monitorExecution off clears running markers. A
    /// configuration that does not read, that the plugins refuse, or whose providers cannot be made
    /// here safely sets the job aside on this host, with the reason (``setAside(_:reason:)``): the
    /// job is taken up again when its configuration changes.
    func applyStoredConfiguration(_ runtime: JobRuntime) async throws {
        let coordinator = runtime.coordinator
        guard let stored = try await coordinator.storedConfiguration() else { return }
        context.syncs.withLock { $0[runtime.name]?.configVersion = stored.version }
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
        switch await context.preparation.prepare(changed) {
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
            context.schedule(runtime, after: services.clock.now())
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
        var applied: Logger.Metadata = ["version": "\(stored.version)"]
        // Crons and strategy names are the registry's text.
        if !what.isEmpty { applied["changes"] = "\(LogText.escaped(what.joined(separator: "; ")))" }
        runtime.logger.notice("applied the registry's new configuration", metadata: applied)
    }

    /// The job's configuration is gone from the registry, or was replaced: the namespace was lost
    /// (every host writes its jobs back), a restore under way is writing it back (look again), or
    /// the job was removed (it stops here; added again, it is taken up afresh).
    func configurationGone(_ runtime: JobRuntime, replaced: Bool, restoreGeneration: UInt64) async {
        if await namespaceLost() {
            // Not this job removed: the whole namespace (the registry lost it, or an operator
            // deleted it). A lost registry never loses a job: every host writes its jobs back.
            await restoreNamespace()
            context.requestSync(runtime)
            return
        }
        // A restore under way (or one since this sync began) may be writing this job back.
        let restoring = namespaceRestore.withLock { $0.task }
        await restoring?.value
        if restoring != nil || namespaceRestore.withLock({ $0.generation }) != restoreGeneration {
            context.requestSync(runtime)
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
            if context.syncs.withLock({ $0[runtime.name]?.dynamic ?? false }) {
                let job = runtime.job.configuration
                recentlyRemoved.withLock { $0[runtime.name] = (job, services.clock.now()) }
            }
            await leave(runtime, .retired(reason: "removed from the cluster (its configuration is gone from the registry)"))
        }
    }

    func registerAgain() async {
        if await namespaceLost() {
            // Gone with the old session (ZooKeeper lost its data, say): written back whole.
            await restoreNamespace()
            return
        }
        for runtime in runtimes.values where context.syncs.withLock({ $0[runtime.name]?.active ?? false }) {
            runtime.coordinator.invalidateCache(watchesLost: true)
            do {
                // Only while the job is still the one this host registered: a job removed (or
                // removed and added again) while the session was gone is never written back.
                let stored = try await runtime.coordinator.registry.exists(runtime.coordinator.paths.config, watch: nil)
                guard let stored, stored.createdTransaction == context.syncs.withLock({ $0[runtime.name]?.configCreated }) else {
                    await leave(runtime, .retired(reason: stored == nil
                        ? "removed from the cluster while the registry session was gone"
                        : "removed from the cluster and added again while the registry session was gone; taking it up afresh"))
                    continue
                }
                _ = try await runtime.coordinator.register(runtime.job.configuration, rejoining: true)
            } catch {
                runtime.logger.error("cannot register again on the new session", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
        }
    }
}
