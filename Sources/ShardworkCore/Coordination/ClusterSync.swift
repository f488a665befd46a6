/// What one look at a job in the registry calls for, one step at a time: a pure function of the
/// job's snapshot, what this host knows of the job, and what this look has done so far.
/// ``ClusterSyncer/sync(_:)`` applies each step, reads the snapshot again after every write, and asks
/// again, until the answer is ``Step/done``. Level-triggered: whatever the registry shows now is
/// acted on, however it came to be (reference §4).
package enum ClusterSync {
    /// What this host knows of the job, from earlier looks.
    package struct Context: Sendable, Equatable {
        package var me: JobInstance
        /// The registry transaction that created the job's configuration node, as this host
        /// registered it (another one: the job was removed and added again).
        package var configCreated: Int64?
        /// The version of the registry's configuration this host applied last.
        package var appliedConfigVersion: Int32?
        /// The available instances at the last look (`nil` before the first).
        package var membership: [String]?
        /// The job keeps its assignment when membership changes (`staticSharding`, once sharded).
        package var staticSharding: Bool
        package var shardingTotalCount: Int
        /// Failover with monitorExecution: crashed instances' running items are looked for.
        package var failsOver: Bool
        /// The registry session in which this host wrote its instance node, and the session now: a
        /// node gone within the session that wrote it was deleted by another client.
        package var instanceSession: Int64?
        package var session: Int64?

        package init(
            me: JobInstance, configCreated: Int64?, appliedConfigVersion: Int32?, membership: [String]?, staticSharding: Bool,
            shardingTotalCount: Int, failsOver: Bool, instanceSession: Int64? = nil, session: Int64? = nil
        ) {
            self.instanceSession = instanceSession
            self.session = session
            self.me = me
            self.configCreated = configCreated
            self.appliedConfigVersion = appliedConfigVersion
            self.membership = membership
            self.staticSharding = staticSharding
            self.shardingTotalCount = shardingTotalCount
            self.failsOver = failsOver
        }
    }

    /// What this look has done so far (each step is taken at most once per look).
    package struct Progress: Sendable, Equatable {
        package var triggerTaken = false
        package var instanceChecked = false
        package var strayLeaderChecked = false
        package var electionChecked = false
        /// This look elected this instance.
        package var becameLeader = false
        package var membershipChecked = false
        package var configurationChecked = false
        package var failoverChecked = false

        package init() {}
    }

    /// Why the leader flags a resharding.
    package enum ReshardCause: Sendable, Equatable {
        /// The available instances changed since the last look.
        case membershipChanged
        /// This instance became leader in this look: a change seen while another instance led was
        /// flagged by nobody (ElasticJob's listeners flag once they have waited for the election).
        case newLeader
        /// Items are assigned to instances that are gone (by item), whether or not a membership
        /// change was seen.
        case goneOwners([Int: String])
    }

    package enum Step: Sendable, Equatable {
        /// The job's configuration is gone from the registry, or was replaced (removed and added
        /// again): the host finds out why (its namespace lost, the job removed) and acts on it.
        case configurationGone(replaced: Bool)
        /// A shutdown command for this instance.
        case shutDown
        /// A trigger for this instance: take it and run the job once.
        case takeTrigger
        /// This instance's node is missing after a new session (the old one took it): write it again.
        case registerInstance
        /// This instance's node was deleted by another client while the session that wrote it
        /// lives: ElasticJob's shutdown of the job on this instance (`JobOperateAPI.shutdown`).
        case instanceDeleted
        /// This instance's node holds another value: write this instance's own again.
        case rewriteInstance(found: String)
        /// A leader node that no session owns and no live instance is: remove it.
        case removeStrayLeader(String)
        /// No leader, and this instance's server is enabled: stand for election.
        case elect
        /// This instance leads, and its server is disabled: step down.
        case abdicate
        /// Remember the available instances; with a cause, flag a resharding (only the leader does).
        case membership([String], reshard: ReshardCause?)
        /// The registry's configuration is not the one this host applied: apply it.
        case applyConfiguration
        /// Look for crashed instances' running items, and take queued ones.
        case failOver
        /// Nothing more to do.
        case done
    }

    /// The next step of a look at the job.
    package static func nextStep(_ snapshot: JobSnapshot, _ context: Context, _ progress: Progress) -> Step {
        let me = context.me
        let replaced = snapshot.configCreated.map { created in context.configCreated.map { $0 != created } ?? false } ?? false
        if snapshot.configVersion == nil || replaced { return .configurationGone(replaced: snapshot.configVersion != nil) }
        if snapshot.shutdownRequested { return .shutDown }
        if snapshot.triggerRequested && !progress.triggerTaken { return .takeTrigger }
        if !progress.instanceChecked {
            if snapshot.instances[me.id] == nil {
                let sameSession = context.instanceSession != nil && context.instanceSession == context.session
                return sameSession ? .instanceDeleted : .registerInstance
            }
            if let value = snapshot.unexpectedInstanceValues[me.id] { return .rewriteInstance(found: value) }
        }
        if !progress.strayLeaderChecked, let leader = snapshot.leader, !snapshot.leaderIsEphemeral, snapshot.instances[leader] == nil {
            return .removeStrayLeader(leader)
        }
        let myServer = snapshot.servers[me.serverIP]
        if !progress.electionChecked {
            if snapshot.leader == nil, CoordinationRules.isEnabled(myServer) { return .elect }
            if snapshot.leader == me.id, myServer == ServerStatus.disabled.rawValue { return .abdicate }
        }
        if !progress.membershipChecked {
            let membership = CoordinationRules.availableInstances(snapshot)
            let keepsAssignment = context.staticSharding && !snapshot.items.isEmpty
            var cause: ReshardCause?
            if let previous = context.membership, previous != membership || progress.becameLeader, !keepsAssignment {
                cause = previous != membership ? .membershipChanged : .newLeader
            } else if CoordinationRules.isLeader(snapshot, me.id), !snapshot.reshardingNecessary, !keepsAssignment, !membership.isEmpty {
                let gone = CoordinationRules.itemsOfGoneOwners(snapshot, total: context.shardingTotalCount)
                if !gone.isEmpty { cause = .goneOwners(gone) }
            }
            return .membership(membership, reshard: cause)
        }
        if !progress.configurationChecked && snapshot.configVersion != context.appliedConfigVersion { return .applyConfiguration }
        if context.failsOver && !progress.failoverChecked { return .failOver }
        return .done
    }
}
