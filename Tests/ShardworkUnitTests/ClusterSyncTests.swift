import ShardworkCore
import Testing

/// A look at a job, step by step, on hand-built snapshots: no registry, host or clock.
@Suite("Cluster sync steps")
struct ClusterSyncTests {
    static let me = JobInstance(id: "10.0.0.1@-@1", serverIP: "10.0.0.1")
    static let other = JobInstance(id: "10.0.0.2@-@2", serverIP: "10.0.0.2")

    /// A registered job led by `leader`, with both instances live and both servers enabled.
    static func snapshot(leader: String? = other.id) -> JobSnapshot {
        var snapshot = JobSnapshot()
        snapshot.configVersion = 3
        snapshot.configCreated = 100
        snapshot.leader = leader
        snapshot.instances = [me.id: me, other.id: other]
        snapshot.servers = [me.serverIP: "ENABLED", other.serverIP: "ENABLED"]
        for item in 0..<4 {
            var record = JobSnapshot.Item()
            record.owner = item < 2 ? me.id : other.id
            snapshot.items[item] = record
        }
        return snapshot
    }

    static func context(membership: [String]? = [me.id, other.id].sorted(), failsOver: Bool = false) -> ClusterSync.Context {
        ClusterSync.Context(
            me: me, configCreated: 100, appliedConfigVersion: 3, membership: membership, staticSharding: false,
            shardingTotalCount: 4, failsOver: failsOver)
    }

    /// The steps of one look, applying `apply` to the snapshot after each (as the registry would
    /// change), until `done` or a step that ends the look.
    static func steps(
        _ snapshot: JobSnapshot, _ context: ClusterSync.Context, apply: (ClusterSync.Step, inout JobSnapshot, inout ClusterSync.Progress) -> Void = { _, _, _ in }
    ) -> [ClusterSync.Step] {
        var snapshot = snapshot
        var progress = ClusterSync.Progress()
        var steps: [ClusterSync.Step] = []
        for _ in 0..<20 {
            let step = ClusterSync.nextStep(snapshot, context, progress)
            steps.append(step)
            switch step {
            case .done, .configurationGone, .shutDown, .instanceDeleted: return steps
            case .takeTrigger: progress.triggerTaken = true
            case .registerInstance, .rewriteInstance: progress.instanceChecked = true
            case .removeStrayLeader: progress.strayLeaderChecked = true
            case .elect, .abdicate: progress.electionChecked = true
            case .membership: progress.membershipChecked = true
            case .applyConfiguration: progress.configurationChecked = true
            case .failOver: progress.failoverChecked = true
            }
            apply(step, &snapshot, &progress)
        }
        Issue.record("the look did not end: \(steps)")
        return steps
    }

    @Test("nothing changed: one step, done")
    func steady() {
        let membership = CoordinationRules.availableInstances(Self.snapshot())
        #expect(Self.steps(Self.snapshot(), Self.context(membership: membership)) == [.membership(membership, reshard: nil), .done])
    }

    @Test("the configuration gone ends the look (removed), and so does one created again (replaced)")
    func configurationGone() {
        var removed = Self.snapshot()
        removed.configVersion = nil
        removed.configCreated = nil
        #expect(Self.steps(removed, Self.context()) == [.configurationGone(replaced: false)])
        var replaced = Self.snapshot()
        replaced.configCreated = 200
        #expect(Self.steps(replaced, Self.context()) == [.configurationGone(replaced: true)])
    }

    @Test("a shutdown command comes before anything else the look would do")
    func shutdown() {
        var snapshot = Self.snapshot(leader: nil)
        snapshot.shutdownRequested = true
        snapshot.triggerRequested = true
        #expect(Self.steps(snapshot, Self.context()) == [.shutDown])
    }

    @Test("an instance node gone within the session that wrote it was deleted by another client: ElasticJob's shutdown, which ends the look")
    func instanceDeleted() {
        var snapshot = Self.snapshot()
        snapshot.instances[Self.me.id] = nil
        var context = Self.context()
        context.instanceSession = 7
        context.session = 7
        #expect(Self.steps(snapshot, context) == [.instanceDeleted])
        // After an expiry (another session now) it is written again.
        context.session = 8
        #expect(Self.steps(snapshot, context).first == .registerInstance)
    }

    @Test("a trigger is taken once; a missing instance node of an earlier session is written again")
    func triggerAndInstance() {
        var snapshot = Self.snapshot()
        snapshot.triggerRequested = true
        snapshot.instances[Self.me.id] = nil
        let membership = CoordinationRules.availableInstances(Self.snapshot())
        let steps = Self.steps(snapshot, Self.context(membership: membership)) { step, snapshot, _ in
            if step == .registerInstance { snapshot.instances[Self.me.id] = Self.me }
        }
        #expect(steps == [.takeTrigger, .registerInstance, .membership(membership, reshard: nil), .done])
    }

    @Test("an instance node holding another value is written again")
    func rewriteInstance() {
        var snapshot = Self.snapshot()
        snapshot.unexpectedInstanceValues[Self.me.id] = "serverIp: 10.9.9.9"
        #expect(Self.steps(snapshot, Self.context()).first == .rewriteInstance(found: "serverIp: 10.9.9.9"))
    }

    @Test("no leader: elect; elected, with no membership change seen, the new leader flags a resharding")
    func electThenFlag() {
        let membership = CoordinationRules.availableInstances(Self.snapshot())
        let steps = Self.steps(Self.snapshot(leader: nil), Self.context(membership: membership)) { step, snapshot, progress in
            if step == .elect {
                snapshot.leader = Self.me.id
                progress.becameLeader = true
            }
        }
        #expect(steps == [.elect, .membership(membership, reshard: .newLeader), .done])
    }

    @Test("a disabled server does not stand for election, and a leader whose server is disabled steps down")
    func disabledServer() {
        var notLeading = Self.snapshot(leader: nil)
        notLeading.servers[Self.me.serverIP] = "DISABLED"
        #expect(!Self.steps(notLeading, Self.context()).contains(.elect))
        var leading = Self.snapshot(leader: Self.me.id)
        leading.servers[Self.me.serverIP] = "DISABLED"
        #expect(Self.steps(leading, Self.context()).first == .abdicate)
    }

    @Test("a leader node that no live instance is and no session owns is removed")
    func strayLeader() {
        var snapshot = Self.snapshot(leader: "10.9.9.9@-@9")
        snapshot.leaderIsEphemeral = false
        #expect(Self.steps(snapshot, Self.context()).first == .removeStrayLeader("10.9.9.9@-@9"))
        // An ephemeral leader node of a live session is an election in progress elsewhere: left.
        var live = Self.snapshot(leader: "10.9.9.9@-@9")
        live.leaderIsEphemeral = true
        #expect(!Self.steps(live, Self.context()).contains(.removeStrayLeader("10.9.9.9@-@9")))
    }

    @Test("a membership change is remembered and flags a resharding; the first look only remembers")
    func membershipChange() {
        let snapshot = Self.snapshot()
        let now = CoordinationRules.availableInstances(snapshot)
        #expect(Self.steps(snapshot, Self.context(membership: [Self.me.id])).first == .membership(now, reshard: .membershipChanged))
        #expect(Self.steps(snapshot, Self.context(membership: nil)).first == .membership(now, reshard: nil))
    }

    @Test("the leader flags a resharding for items whose owner is gone, with no membership change seen")
    func goneOwners() {
        var snapshot = Self.snapshot(leader: Self.me.id)
        snapshot.items[3]?.owner = "10.9.9.9@-@999"
        let membership = CoordinationRules.availableInstances(snapshot)
        #expect(Self.steps(snapshot, Self.context(membership: membership)).first
            == .membership(membership, reshard: .goneOwners([3: "10.9.9.9@-@999"])))
        // Not the leader's business otherwise; nor while a resharding is due anyway.
        #expect(Self.steps(Self.snapshot(), Self.context(membership: membership)).first == .membership(membership, reshard: nil))
        snapshot.reshardingNecessary = true
        #expect(Self.steps(snapshot, Self.context(membership: membership)).first == .membership(membership, reshard: nil))
    }

    @Test("static sharding keeps an assignment through membership changes")
    func staticSharding() {
        var context = Self.context(membership: [Self.me.id])
        context.staticSharding = true
        let membership = CoordinationRules.availableInstances(Self.snapshot())
        #expect(Self.steps(Self.snapshot(), context).first == .membership(membership, reshard: nil))
    }

    @Test("a configuration version not applied yet is applied; a failover job then looks for failover work")
    func configurationAndFailover() {
        var snapshot = Self.snapshot()
        snapshot.configVersion = 4
        let membership = CoordinationRules.availableInstances(snapshot)
        #expect(Self.steps(snapshot, Self.context(membership: membership, failsOver: true))
            == [.membership(membership, reshard: nil), .applyConfiguration, .failOver, .done])
    }
}
