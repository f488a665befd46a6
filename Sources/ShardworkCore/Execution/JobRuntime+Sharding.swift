import Foundation
import Logging

extension JobRuntime {
    /// How long a fire waits for a resharding to settle before it is skipped, on the monotonic time
    /// of the host's clock.
    static let shardingWait: Duration = .seconds(10)
    /// The longest a wait for the leader's assignment goes without reading the job again: a
    /// change is noticed at once by the snapshot cache's watches; this bounds what one they do
    /// not report (a watch lost with a connection, say) can cost. Real time, whatever the host's
    /// clock: it paces reading, it is no deadline.
    static let shardingRecheck: Duration = .milliseconds(500)

    /// A resharding is flagged (reference §4.3). The leader shards, once no other live instance is
    /// still running one of the job's items (with monitorExecution); followers wait for it. If there
    /// is no leader, this instance takes part in an election. Gives up when the assignment did not
    /// settle within ``shardingWait`` (ElasticJob waits forever there, and a stuck item or a stale
    /// marker stops every instance of the job), or when the job stops here meanwhile.
    func awaitSharding(_ first: JobSnapshot, job: PreparedJob, fireTime: Int64) async throws -> ShardingWait {
        let total = job.configuration.shardingTotalCount
        let me = services.instance
        let clock = services.clock
        let started = clock.monotonicNow()
        var snapshot = first
        // The cache's generation when `snapshot` was read, or older: a change since wakes the wait.
        var generation = coordinator.cacheGeneration
        // A flag raised again after the fire's instant is for a later fire (``CoordinationRules/needsSharding(_:forFireAt:)``).
        while CoordinationRules.needsSharding(snapshot, forFireAt: fireTime) {
            if snapshot.leader == nil, CoordinationRules.isServerAvailable(snapshot, ip: me.serverIP) {
                try await coordinator.electLeader()
                snapshot = try await coordinator.snapshot()
                continue
            }
            if CoordinationRules.isLeader(snapshot, me.id),
               !(job.configuration.monitorExecution && CoordinationRules.hasLiveRunningItems(snapshot, total: total, excluding: me.id)),
               try await coordinator.shardIfNecessary(snapshot, total: total, strategy: job.shardingStrategy)
            {
                snapshot = try await coordinator.snapshot()
                let assignment = CoordinationRules.availableInstances(snapshot).map { id in
                    "\(id): \(CoordinationRules.assignedItems(snapshot, snapshot.instances[id] ?? me, total: total).map(String.init).joined(separator: ","))"
                }
                let took = clock.monotonicNow() - started
                services.events.publish(.sharded(
                    job: name, items: total, instances: CoordinationRules.availableInstances(snapshot).count,
                    strategy: job.shardingStrategy.provider.name,
                    milliseconds: took.components.seconds * 1000 + took.components.attoseconds / 1_000_000_000_000_000))
                logger.info("sharded the items", metadata: [
                    "total": "\(total)", "strategy": "\(job.shardingStrategy.provider.name)",
                    // Instance ids are node names of the registry: outside text.
                    "assignment": "\(LogText.escaped(assignment.joined(separator: "; ")))",
                ])
                return .settled(snapshot)
            }
            // Waiting on others is for a job that goes on here: one stopped meanwhile gives up.
            if isStopped { return .stopped }
            let waited = clock.monotonicNow() - started
            guard waited < Self.shardingWait else { return .timedOut }
            // Followers (and a leader waiting for running items to end) wait for the next change.
            await coordinator.change(after: generation, within: min(Self.shardingRecheck, Self.shardingWait - waited))
            try Task.checkCancellation()
            generation = coordinator.cacheGeneration
            snapshot = try await coordinator.snapshot()
        }
        return .settled(snapshot)
    }

    /// How a wait for a resharding ended.
    enum ShardingWait {
        /// The assignment to fire with.
        case settled(JobSnapshot)
        /// It did not settle within ``JobRuntime/shardingWait``.
        case timedOut
        /// The job stopped on this host (removed, or the host is stopping).
        case stopped
    }
}
