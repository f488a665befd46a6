import Foundation
import Logging
import Synchronization

/// A namespace that was deleted under the hosts (docs/registry-layout.md, "Values another tool
/// wrote"): every host writes its jobs back.
extension JobAdoption {
    /// Whether the namespace this host registered in is gone, or was deleted and created again.
    func namespaceLost() async -> Bool {
        let stat: NodeStat?
        do {
            stat = try await registry.exists("/", watch: nil)
        } catch {
            return false  // unknown now: the next look decides
        }
        guard let stat else { return true }
        guard let known = namespaceCreated.withLock({ $0 }) else { return false }
        return stat.createdTransaction != known
    }

    /// Writes every job of this host back into a namespace that was deleted (or deleted and created
    /// again), as at a start: the jobs it runs with their current configuration (and the `dynamic`
    /// marker of those added to the cluster), the jobs of its file, and the jobs added to the
    /// cluster that it stopped shortly before. Level-triggered like a session expiry: every host
    /// that notices does it; writes that another host made first are kept.
    func restoreNamespace() async {
        let task = namespaceRestore.withLock { restore -> Task<Void, Never> in
            if let running = restore.task { return running }
            restore.generation &+= 1
            let task = Task { await self.writeJobsBack() }  // awaited by every caller
            restore.task = task
            return task
        }
        await task.value
        namespaceRestore.withLock { restore in
            if restore.task == task {
                restore.task = nil
                restore.generation &+= 1
            }
        }
    }

    private func writeJobsBack() async {
        logger.warning("registry: the namespace was deleted, or deleted and created again; writing this host's jobs back into it")
        do {
            try await registry.ensureNamespace()
            let stat = try await registry.exists("/", watch: nil)
            namespaceCreated.withLock { $0 = stat?.createdTransaction }
        } catch {
            logger.error("registry: cannot create the namespace again", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            return
        }
        scanState.withLock { state in
            state.watchArmed = false
            state.foreign = []
        }
        let record = DynamicJobRecord(
            addedBy: "\(services.instance.id), restoring the namespace", addedAt: Date(timeIntervalSince1970: Double(services.clock.now()) / 1000).formatted(.iso8601))
        for runtime in runtimes.values.sorted(by: { $0.name < $1.name }) {
            guard let sync = context.syncs.withLock({ $0[runtime.name] }), sync.active else { continue }
            runtime.coordinator.invalidateCache(watchesLost: true)
            do {
                try await register(runtime)
                if sync.dynamic {
                    try await registry.createIfAbsent(runtime.coordinator.paths.dynamic, data: [UInt8](utf8: record.json))
                }
                context.syncs.withLock { $0[runtime.name]?.membership = nil }
                context.requestSync(runtime)
            } catch {
                runtime.logger.error("cannot write the job back into the namespace", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
        }
        // Jobs this host does not run now: those of its file (as a restart would write them), and
        // jobs added to the cluster that it stopped shortly before, as the namespace went node by
        // node. Written as configurations; adoption takes them up.
        let known = Set(runtimes.keys)
        var returning: [(job: JobConfiguration, dynamic: Bool)] = configuration.jobs.filter { !known.contains($0.jobName) }.map { ($0, false) }
        let cutoff = services.clock.now() - Self.namespaceLossWindowMilliseconds
        let removed = recentlyRemoved.withLock { removed in
            defer { removed = [:] }
            return removed.filter { $0.value.at >= cutoff && !known.contains($0.key) }
        }
        returning += removed.values.map { ($0.job, true) }.sorted { $0.job.jobName < $1.job.jobName }
        for (job, dynamic) in returning {
            if let entry = incapable.withLock({ $0[job.jobName] }) {
                incapable.withLock { $0[job.jobName]?.watched = false }
                await setAsideBeforeRegistration(job, reason: entry.reason)
                continue
            }
            do {
                _ = try await JobCoordinator(
                    registry: registry, job: job.jobName, instance: services.instance,
                    compatibility: configuration.registry.elasticJobCompatibility, jobClasses: configuration.host.jobClasses).registerConfiguration(job)
                if dynamic {
                    try await registry.createIfAbsent(JobNodePath(job: job.jobName).dynamic, data: [UInt8](utf8: record.json))
                }
            } catch {
                jobLogger(job.jobName).error("cannot write the job back into the namespace", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
        }
        services.events.publish(.registry(.namespaceRestored))
        logger.notice("registry: this host's jobs are back in the namespace")
        await adoptJobs()
    }
}
