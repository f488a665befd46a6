import Foundation
import Logging
import Synchronization

/// Keeps each job of a host in step with the cluster: applies the steps ``ClusterSync`` decides
/// (reference §4), takes over crashed instances' items (failover, §4.4), runs ElasticJob's reconcile
/// (§4.7), and drives the host's periodic check.
///
/// Level-triggered: a watched change to a job's nodes (or the periodic check) requests a sync
/// (``HostContext/requestSync(_:)``), which re-reads the job's state and acts on what it finds, so
/// that an event that was missed (a session that expired, a watch that fired while another was
/// being handled) costs at most a delay, never a wrong state.
final class ClusterSyncer: Sendable {
    let context: HostContext
    /// What the sync hands on: a job to stop, a configuration that is gone or changed.
    let adoption: JobAdoption

    init(context: HostContext, adoption: JobAdoption) {
        self.context = context
        self.adoption = adoption
    }

    /// How long a deleted instance node is left before it is taken for a shutdown (real time: it
    /// paces, it is no deadline).
    static let deletionSettle: Duration = .seconds(1)

    /// Changes to these nodes can call for action; sharding markers are the fires' own business.
    static func affectsSync(_ path: String, job paths: JobNodePath) -> Bool {
        !path.hasPrefix(paths.sharding) && !path.hasPrefix(paths.leaderSharding)
    }

    /// Looks at the job's state in the registry and does what it calls for, one step at a time as
    /// ``ClusterSync/nextStep(_:_:_:)`` decides from the snapshot: a shutdown command stops the job
    /// here; a trigger runs it once; an instance node deleted by another client while this host's
    /// session lives is ElasticJob's shutdown, one missing after a new session is written again;
    /// with no leader, an election; a leader whose server is disabled
    /// steps down; the leader flags a resharding when the available instances changed; a new
    /// configuration in the registry is applied; failover work is looked for.
    func sync(_ runtime: JobRuntime) async {
        let services = context.services
        guard services.registryConnected.load(ordering: .acquiring), !context.isStopped, context.isActive(runtime.name) else { return }
        let coordinator = runtime.coordinator
        let restoreGeneration = adoption.restoreGeneration
        var progress = ClusterSync.Progress()
        do {
            while true {
                let snapshot = try await coordinator.snapshot()
                let generation = coordinator.cacheGeneration
                let step = ClusterSync.nextStep(snapshot, syncContext(runtime), progress)
                switch step {
                case .configurationGone(let replaced):
                    await adoption.configurationGone(runtime, replaced: replaced, restoreGeneration: restoreGeneration)
                    return
                case .shutDown:
                    await adoption.leave(runtime, .shutDownByCommand)
                    return
                case .takeTrigger:
                    progress.triggerTaken = true
                    if try await coordinator.takeTrigger() {
                        runtime.logger.info("triggered")
                        runtime.trigger()
                    }
                case .instanceDeleted:
                    progress.instanceChecked = true
                    // Looked at again after a moment: a namespace deleted node by node (zkCli's
                    // `deleteall`) takes the instance nodes first, and then the job; that is no
                    // shutdown. Still so then, it is ElasticJob's shutdown of the job here.
                    try await Task.sleep(for: Self.deletionSettle)
                    coordinator.invalidateCache()
                    let again = try await coordinator.snapshot()
                    guard ClusterSync.nextStep(again, syncContext(runtime), ClusterSync.Progress()) == .instanceDeleted else { continue }
                    runtime.logger.notice(
                        "this instance's node was deleted by another client while its session lives: ElasticJob's shutdown; the job stops here until the host restarts")
                    await adoption.leave(runtime, .shutDownByDeletion)
                    return
                case .registerInstance:
                    progress.instanceChecked = true
                    runtime.logger.notice("this instance's node was gone from the registry; registering it again")
                    try await coordinator.registerInstance()
                    services.events.publish(.registryRepaired(job: runtime.name, repair: .instanceRegisteredAgain))
                case .rewriteInstance(let value):
                    progress.instanceChecked = true
                    runtime.logger.warning(
                        "an instance node held another value than this instance's own; writing it again",
                        metadata: ["path": "\(coordinator.paths.instance(services.instance.id))", "value": "\(LogText.quoted(value))"])
                    try await coordinator.rewriteInstance()
                    services.events.publish(.registryRepaired(job: runtime.name, repair: .instanceRewritten(found: value)))
                case .removeStrayLeader(let leader):
                    progress.strayLeaderChecked = true
                    runtime.logger.warning(
                        "the leader node names an instance that no session owns and that is not live: no instance could be elected; removing it",
                        metadata: ["path": "\(coordinator.paths.leaderInstance)", "value": "\(LogText.quoted(leader))"])
                    try await coordinator.removeStrayLeader(leader)
                    services.events.publish(.registryRepaired(job: runtime.name, repair: .strayLeaderRemoved(leader: leader)))
                case .elect:
                    progress.electionChecked = true
                    try await coordinator.electLeader()
                    if try await coordinator.snapshot().leader == services.instance.id {
                        runtime.logger.notice("this instance is the leader now")
                        progress.becameLeader = true
                    }
                case .abdicate:
                    progress.electionChecked = true
                    runtime.logger.notice("this instance's server is disabled; it steps down as leader")
                    try await coordinator.abdicate()
                    services.events.publish(.leaderResigned(job: runtime.name))
                case .membership(let membership, let cause):
                    progress.instanceChecked = true
                    progress.strayLeaderChecked = true
                    progress.electionChecked = true
                    progress.membershipChecked = true
                    explainUnusualValues(snapshot, of: runtime)
                    context.syncs.withLock { $0[runtime.name]?.membership = membership }
                    if case .goneOwners(let gone) = cause {
                        let owners = Set(gone.values).sorted().map { LogText.quoted($0, limit: 80) }.joined(separator: ", ")
                        runtime.logger.notice(
                            "items are assigned to instances that are gone; resharding at the next fire",
                            metadata: ["items": "\(gone.keys.sorted().map(String.init).joined(separator: ","))", "instances": "\(owners)"])
                    }
                    switch cause {
                    case .membershipChanged: try await coordinator.setReshardingFlag(forMembership: membership)
                    case .some: try await coordinator.setReshardingFlag()
                    case nil: break
                    }
                    if case .goneOwners(let gone) = cause {
                        services.events.publish(.registryRepaired(
                            job: runtime.name, repair: .reshardingForGoneOwners(items: gone.keys.sorted(), instances: Set(gone.values).sorted())))
                    }
                case .applyConfiguration:
                    progress.configurationChecked = true
                    try await adoption.applyStoredConfiguration(runtime)
                case .failOver:
                    progress.failoverChecked = true
                    try await failOver(runtime)
                case .done:
                    // A look that went through and read a snapshot still cached now has seen this state.
                    if coordinator.cachedGeneration == generation {
                        context.syncs.withLock { $0[runtime.name]?.syncedGeneration = generation }
                    }
                    return
                }
            }
        } catch {
            // A sync still under way when the host stops finds the registry closed: not an error.
            runtime.logger.log(
                level: context.isStopped ? .debug : .error, "cannot bring the job in step with the registry",
                metadata: ["error": "\(LogText.escaped("\(error)"))"])
        }
    }

    /// What this host knows of the job, for ``ClusterSync``.
    private func syncContext(_ runtime: JobRuntime) -> ClusterSync.Context {
        let configuration = runtime.job.configuration
        let known = context.syncs.withLock { $0[runtime.name] }
        return ClusterSync.Context(
            me: context.services.instance, configCreated: known?.configCreated, appliedConfigVersion: known?.configVersion,
            membership: known?.membership, staticSharding: configuration.staticSharding,
            shardingTotalCount: configuration.shardingTotalCount, failsOver: configuration.failover && configuration.monitorExecution,
            instanceSession: runtime.coordinator.instanceWrittenInSession, session: context.registry.sessionID)
    }

    /// Failover (reference §4.4), level-triggered: items that were running on instances that are
    /// gone are queued; this instance's own claims that are not running here run again (after a
    /// new session, say); and when the job is idle here, one queued item is taken and run at once.
    private func failOver(_ runtime: JobRuntime) async throws {
        let services = context.services
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
            runtime.logger.warning(
                "items were running on instances that are gone; queued for another instance to run",
                metadata: ["items": "\(crashed.map(String.init).joined(separator: ","))"])
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
            runtime.logger.notice("took an item of a crashed instance", metadata: ["item": "\(item)", "epoch": "\(epoch)"])
            runtime.runFailover([item: epoch])
        }
    }

    /// The periodic check: every active job whose registry state changed syncs, and ElasticJob's
    /// reconcile runs where it is due.
    func maintain(now: Int64) {
        for runtime in context.runtimes.values {
            // A job whose registry state has not changed since its last sync has nothing to sync
            // (failover jobs look anyway: whether they may take over work depends on this host too).
            let job = runtime.job
            let synced = context.syncs.withLock { $0[runtime.name]?.syncedGeneration }
            if job.configuration.failover || synced == nil || runtime.coordinator.cachedGeneration != synced {
                context.requestSync(runtime)
            }
            let minutes = Int64(job.configuration.reconcileIntervalMinutes)
            guard minutes > 0 else { continue }
            let due = context.syncs.withLock { syncs -> Bool in
                guard let last = syncs[runtime.name]?.lastReconcile, now - last >= minutes * 60_000 else { return false }
                syncs[runtime.name]?.lastReconcile = now
                return true
            }
            if due { context.background.spawn("reconcile \(runtime.name)") { [self] in await reconcile(runtime) } }
        }
    }

    /// ElasticJob's reconcile (reference §4.7): an assignment that names instances that are gone
    /// gets a resharding.
    private func reconcile(_ runtime: JobRuntime) async {
        do {
            let snapshot = try await runtime.coordinator.snapshot()
            let job = runtime.job.configuration
            guard !snapshot.reshardingNecessary, CoordinationRules.isLeader(snapshot, context.services.instance.id),
                  CoordinationRules.hasItemsOfOfflineInstances(snapshot, total: job.shardingTotalCount),
                  !(job.staticSharding && !snapshot.items.isEmpty)
            else { return }
            runtime.logger.warning("the assignment names instances that are gone; reconciling with a resharding")
            try await runtime.coordinator.setReshardingFlag()
        } catch {
            runtime.logger.error("reconcile failed", metadata: ["error": "\(LogText.escaped("\(error)"))"])
        }
    }

    /// Logs once each value of the job's nodes that a host would not write, with its path and what
    /// this host makes of it (another tool wrote it; ElasticJob's reading is kept where it has one).
    private func explainUnusualValues(_ snapshot: JobSnapshot, of runtime: JobRuntime) {
        let paths = runtime.coordinator.paths
        for (id, value) in snapshot.unexpectedInstanceValues.sorted(by: { $0.key < $1.key }) where id != context.services.instance.id {
            context.explainOnce(
                "\(paths.instance(id))=\(value)", logger: runtime.logger,
                "an instance node holds another instance than the one its id names; taken as the instance of its id, whose host writes it again",
                metadata: [
                    "path": "\(paths.instance(id))", "value": "\(LogText.quoted(value))", "server": "\(CoordinationRules.serverIP(of: id))",
                ])
        }
        for (ip, value) in snapshot.servers.sorted(by: { $0.key < $1.key })
        where value != ServerStatus.enabled.rawValue && value != ServerStatus.disabled.rawValue {
            context.explainOnce(
                "\(paths.server(ip))=\(value)", logger: runtime.logger,
                "a server node holds neither ENABLED nor DISABLED; taken as ENABLED, as ElasticJob takes anything but DISABLED",
                metadata: ["path": "\(paths.server(ip))", "value": "\(LogText.quoted(value))"])
        }
    }
}
