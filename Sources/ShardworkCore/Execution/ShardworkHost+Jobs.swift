import Foundation
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

/// Jobs that come and go while the host runs: jobs added to the cluster (`shardwork job add`), jobs
/// removed from it, and jobs this host cannot run.
///
/// Every host follows the children of the namespace root. A job marked `dynamic` (added through the
/// control API), or one of the host's own configured jobs that came back after a removal, is adopted
/// when its configuration prepares against the host's plugins: the host registers an instance and
/// fires it like a configured job. When it does not (a job type or strategy this host lacks, props
/// its plugin refuses), the host writes `/{job}/incapable/{id}` (ephemeral) with the reason and no
/// instance node, so the leader hands it no items; it looks again when the configuration changes or
/// a plugin is loaded.
extension ShardworkHost {
    /// One scan at a time; a request during a scan runs one more afterwards.
    final class AdoptionState: Sendable {
        struct State {
            var scanning = false
            var again = false
            /// Children of the root known not to be dynamic jobs (cleared when the children change).
            var foreign: Set<String> = []
            var watchArmed = false
        }

        let state = Mutex(State())
    }

    /// Looks for jobs to adopt (see the type's documentation). Level-triggered: it runs at start,
    /// when the namespace's children change, at every maintenance tick and after a new session.
    func adoptJobs() async {
        let start = adoption.state.withLock { state -> Bool in
            if state.scanning {
                state.again = true
                return false
            }
            state.scanning = true
            return true
        }
        guard start else { return }
        repeat {
            await scanForJobs()
        } while adoption.state.withLock { state -> Bool in
            if state.again {
                state.again = false
                return true
            }
            state.scanning = false
            return false
        }
    }

    private func scanForJobs() async {
        guard services.registryConnected.load(ordering: .acquiring), !lifecycle.withLock({ $0.stopped }) else { return }
        let names: [String]
        let arm = adoption.state.withLock { state -> Bool in
            defer { state.watchArmed = true }
            return !state.watchArmed
        }
        do {
            names = try await registry.children("/", watch: arm ? rootWatcher() : nil)
        } catch {
            if arm { adoption.state.withLock { $0.watchArmed = false } }
            if error.code == .noNode, await namespaceLost() {
                Task { await restoreNamespace() }
                return
            }
            logger.error("cannot look for jobs added to the cluster: \(LogText.escaped("\(error)"))")
            return
        }
        let configured = Set(configuration.jobs.map(\.jobName))
        let present = Set(names)
        let known = Set(table.withLock { Array($0.keys) })
        // A namespace deleted and created again (an operator's `deleteall`, node by node, then the
        // root anew) while a look at one of this host's jobs saw only that job's configuration gone
        // left the job stopped here as if removed; the root's creation tells the two apart. Looked
        // at only while this host has such jobs: configured here and not running, or added and
        // stopped within the last minute.
        let cutoff = ContinuousClock.now - Self.namespaceLossWindow
        let recentlyStopped = recentlyRemoved.withLock { removed in
            removed = removed.filter { $0.value.at >= cutoff }
            return !removed.isEmpty
        }
        if !configured.subtracting(known).isEmpty || recentlyStopped, await namespaceLost() {
            Task { await restoreNamespace() }
            return
        }
        // Jobs gone from the registry are no longer incapable here.
        incapable.withLock { entries in entries = entries.filter { present.contains($0.key) } }
        await forgetShutDownJobs(present: present)
        let foreign = adoption.state.withLock { $0.foreign }
        for name in names.sorted() where !known.contains(name) && !foreign.contains(name) {
            if let problem = RegistryNames.jobNameProblem(name) {
                // Not a name any host writes: explained once, never registered under.
                explainOnce("/\(name)", "the registry holds a node \(LogText.quoted("/" + name)) whose name \(problem); it is not taken for a job")
                continue
            }
            do {
                try await consider(name, configuredHere: configured.contains(name))
            } catch {
                logger.error("job \(LogText.quoted(name)): cannot look at it in the registry: \(LogText.escaped("\(error)"))")
            }
        }
    }

    /// A job shut down on this host by a command stays off here until the host restarts, as in
    /// ElasticJob, unless the cluster removes it: then this host forgets it, and a job added again
    /// under the name (another configuration node) is a new job, which this host takes up like any.
    private func forgetShutDownJobs(present: Set<String>) async {
        let shutDown = syncs.withLock { syncs in syncs.filter(\.value.shutDown).mapValues(\.configCreated) }
        for (name, created) in shutDown {
            if present.contains(name) {
                // Still there, or being removed or added right now (no configuration yet): the
                // next change to the namespace looks again.
                guard case let stat? = try? await registry.exists(JobNodePath(job: name).config, watch: nil),
                      let created, stat.createdTransaction != created
                else { continue }
            }
            syncs.withLock { _ = $0.removeValue(forKey: name) }
            table.withLock { _ = $0.removeValue(forKey: name) }
            jobLogger(name).info("shut down here by a command, and since removed from the cluster; forgotten")
        }
    }

    /// Fires when a job is added to or removed from the namespace: look again.
    private func rootWatcher() -> Watcher {
        { [weak self] _ in
            guard let self else { return }
            self.adoption.state.withLock { state in
                state.watchArmed = false
                state.foreign = []
            }
            Task { await self.adoptJobs() }
        }
    }

    /// Adopts `name` if it is a job for this host and its configuration prepares here; otherwise
    /// records why not.
    private func consider(_ name: String, configuredHere: Bool) async throws {
        let paths = JobNodePath(job: name)
        if !configuredHere, try await registry.exists(paths.dynamic, watch: nil) == nil {
            adoption.state.withLock { _ = $0.foreign.insert(name) }
            return
        }
        guard let stored = try await registry.textIfPresent(paths.config),
              let jobType = try await registry.string(paths.root), !jobType.isEmpty
        else { return }  // being added or removed right now; the next change looks again
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
        switch await preparation.prepare(job) {
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
            job: prepared, coordinator: JobCoordinator(registry: registry, job: name, instance: services.instance, events: services.events),
            services: services)
        let inserted = table.withLock { table -> Bool in
            guard table[name] == nil else { return false }
            table[name] = runtime
            return true
        }
        guard inserted else { return }
        syncs.withLock {
            var sync = JobSync()
            sync.dynamic = !configuredHere
            $0[name] = sync
        }
        do {
            // The job is the registry's: never write its root or configuration (it may have been
            // removed since it was read).
            try await register(runtime, rejoining: true)
        } catch {
            jobLogger(name).error("cannot register it to run here: \(LogText.escaped("\(error)"))")
            syncs.withLock { _ = $0.removeValue(forKey: name) }
            table.withLock { _ = $0.removeValue(forKey: name) }
            await runtime.coordinator.unregister()
            return
        }
        if incapable.withLock({ $0.removeValue(forKey: name) }) != nil {
            _ = try? await registry.deleteIfPresent(paths.incapable(services.instance.id))
        }
        schedule(runtime, after: services.clock.now())
        scheduleSync(runtime)
        services.events.publish(.jobAdopted(job: name))
        jobLogger(name).notice("runs on this host now (\(configuredHere ? "configured here and back in the registry" : "added to the cluster"), job type \(jobType), configuration version \(stored.stat.version))")
    }

    /// The providers `job` names that this host has not loaded, described; `nil` when it has them all.
    public func missingProviders(_ job: JobConfiguration) -> String? {
        var missing: [String] = []
        let named: [(ProviderKind, String?, String)] = [
            (.jobType, job.jobType, "jobType"),
            (.shardingStrategy, job.jobShardingStrategyType, "jobShardingStrategyType"),
            (.executorStrategy, job.jobExecutorThreadPoolSizeProviderType, "jobExecutorThreadPoolSizeProviderType"),
            (.errorHandler, job.jobErrorHandlerType, "jobErrorHandlerType"),
        ] + job.jobListenerTypes.map { (.jobListener, $0, "jobListenerTypes") }
        for (kind, name, field) in named {
            do {
                _ = try providers.resolve(kind, name)
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
            jobLogger(job).warning("this host cannot run it, so it takes no items of it: \(reason)")
        }
        await writeIncapable(job, reason: reason)
        if watch {
            do {
                _ = try await registry.exists(JobNodePath(job: job).config, watch: { [weak self] _ in
                    guard let self else { return }
                    self.incapable.withLock { $0[job]?.watched = false }
                    Task { await self.adoptJobs() }
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
        let coordinator = JobCoordinator(registry: registry, job: job.jobName, instance: services.instance)
        do {
            let version = try await coordinator.registerConfiguration(job)
            await markIncapable(job.jobName, reason: reason, version: version)
        } catch {
            jobLogger(job.jobName).error("set aside on this host (\(LogText.escaped(reason))), and cannot be written to the registry: \(LogText.escaped("\(error)"))")
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
            jobLogger(job).error("cannot record in the registry that this host cannot run it: \(LogText.escaped("\(error)"))")
        }
    }

    /// After a new session: the ephemeral `incapable` nodes died with the old one.
    func rewriteIncapable() async {
        for (job, entry) in incapable.withLock({ $0 }) {
            await writeIncapable(job, reason: entry.reason)
        }
    }

    /// Plugins changed: every job this host could not run is looked at again.
    public func reconsiderIncapableJobs() async {
        incapable.withLock { entries in
            for key in entries.keys { entries[key]?.version = nil }
        }
        await adoptJobs()
    }

    /// The jobs of the registry this host cannot run, with the reasons.
    public var incapableJobs: [String: String] {
        incapable.withLock { $0.mapValues(\.reason) }
    }

    /// How a job leaves this host.
    enum Departure {
        /// Removed from the cluster, or it cannot run here any more: the host forgets it.
        case retired(reason: String)
        /// A shutdown command for this instance: the host remembers it, so that the job stays off
        /// here until it is removed from the cluster (and perhaps added again).
        case shutDownByCommand
    }

    /// Stops the job on this host: no fire starts, a running one finishes first, then the
    /// instance leaves the job (the other instances reshard). Once per job: a later call for a job
    /// already leaving does nothing.
    func leave(_ runtime: JobRuntime, _ departure: Departure) async {
        let first = syncs.withLock { syncs -> Bool in
            guard syncs[runtime.name]?.active == true else { return false }
            syncs[runtime.name]?.active = false
            if case .shutDownByCommand = departure { syncs[runtime.name]?.shutDown = true }
            return true
        }
        guard first else { return }
        timer.cancel(runtime.name)
        runtime.stop()
        let reason = switch departure {
        case .retired(let reason): reason
        case .shutDownByCommand: "shut down by a command"
        }
        services.events.publish(.jobStopped(job: runtime.name, reason: reason))
        runtime.logger.notice("stopped on this host: \(reason)")
        await runtime.untilIdle()
        if case .shutDownByCommand = departure { try? await runtime.coordinator.takeShutdownCommand() }
        runtime.shutdownWorkers()
        await runtime.coordinator.unregister()
        guard case .retired = departure else { return }
        syncs.withLock { _ = $0.removeValue(forKey: runtime.name) }
        table.withLock { table in
            if table[runtime.name] === runtime { table.removeValue(forKey: runtime.name) }
        }
    }

    /// Checks a job the way start-up does, against this host's plugins. With trials (the default),
    /// its providers are tried in a separate process and never made in this host, which serves the
    /// request; without, they are made here and dropped. With
    /// `allowMissingPlugins`, a job type or strategy this host lacks is accepted (other hosts may have
    /// it; this one will be incapable of it) once everything else is valid; the answer then says
    /// what is missing.
    public func validate(_ job: JobConfiguration, allowMissingPlugins: Bool) async throws(HostConfigurationError) -> String? {
        if allowMissingPlugins, let missing = missingProviders(job) {
            // Everything that needs no plugin is still checked: cron, time zone, item parameters.
            do {
                _ = try JobCatalog.plan(job, providers: providers, workerExecutable: services.workerExecutable)
            } catch {
                let providerFields = ["jobType", "jobShardingStrategyType", "jobExecutorThreadPoolSizeProviderType", "jobErrorHandlerType", "jobListenerTypes"]
                guard providerFields.contains(error.field) else { throw error }
            }
            return missing
        }
        switch await preparation.check(job) {
        case nil, .prepared?:
            return nil
        case .refused(let error)?:
            throw error
        case .setAside(let reason)?:
            throw HostConfigurationError(file: nil, location: nil, job: job.jobName, field: "", message: reason)
        }
    }
}

// MARK: For the control API

extension ShardworkHost {
    /// The operation APIs over this host's registry: with ZooKeeper they act on the whole cluster.
    public var operations: ClusterOperations { ClusterOperations(registry: registry, logger: logger, events: services.events) }

    /// Writes an uploaded plugin file where ``loadPlugin(file:)`` can take it: a private directory
    /// beside the plugin cache. The caller removes it after the load (the cache keeps its own copy).
    public func stagePluginUpload(bytes: [UInt8], name: String) throws -> String {
        let uploads = hotLoading.cache.directory + "/uploads"
        try FileManager.default.createDirectory(atPath: uploads, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let directory = uploads + "/" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o755]) else {
            throw HostConfigurationError(file: nil, location: nil, job: nil, field: "plugin", message: "cannot write the upload to \(path)")
        }
        return path
    }
}
