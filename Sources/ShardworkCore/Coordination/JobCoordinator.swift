import ShardworkSDK
import Synchronization

/// Errors of a job's registration.
package struct JobRegistrationError: Error, Sendable, Equatable, CustomStringConvertible {
    package var job: String
    package var message: String
    /// True when the registry's copy of the job cannot be used by this host (it does not read, or
    /// its providers cannot run here): the host sets the job aside and runs the rest. False when
    /// this host's own configuration conflicts with the cluster's (another job type under the
    /// name), which it refuses to start with.
    package var setsAside: Bool

    package init(job: String, message: String, setsAside: Bool = false) {
        self.job = job
        self.message = message
        self.setsAside = setsAside
    }

    package var description: String { "job '\(job)': \(message)" }
}

/// One job's side of the registry: registration, snapshots, sharding, and the markers of a fire.
/// The same code runs over the embedded registry and over ZooKeeper.
///
/// Writes that belong together go in one `multi`: a resharding is one transaction, and so are the
/// running markers of one fire (ElasticJob writes one node per item).
package final class JobCoordinator: Sendable {
    package let paths: JobNodePath
    package let instance: JobInstance
    let registry: any RegistryCenter
    let cache = SnapshotCache()
    /// This instance's reshardings: how many are being written now, and the instances the last one
    /// written was made over (`nil` until it shards, and again once it is elected anew).
    private let resharding = Mutex(ReshardingRecord())
    private let instanceSession = Mutex<Int64?>(nil)

    private struct ReshardingRecord {
        var underWay = 0
        var shardedOver: Set<String>?
    }

    /// Called with the path of every watched change to the job's nodes (on the registry's thread;
    /// it must only hand off).
    package func onChange(_ handler: @escaping @Sendable (String) -> Void) {
        cache.setListener(handler)
    }

    /// Where the coordinator publishes what it decided for this instance (its election).
    let events: HostEvents?

    /// Whose nodes must read the configuration this coordinator writes (the executor key's spelling
    /// for a job that has none stored yet).
    let compatibility: ElasticJobCompatibility
    /// ElasticJob job classes this host runs as job types of its own (`host.jobClasses`).
    let jobClasses: [String: String]

    package init(
        registry: any RegistryCenter, job: String, instance: JobInstance, events: HostEvents? = nil,
        compatibility: ElasticJobCompatibility = .none, jobClasses: [String: String] = [:]
    ) {
        self.registry = registry
        self.paths = JobNodePath(job: job)
        self.instance = instance
        self.events = events
        self.compatibility = compatibility
        self.jobClasses = jobClasses
    }

    /// The job's root node: its type as the registry has it. A stored type that names the same type
    /// in another case (ElasticJob's `SCRIPT` for `script`) is the job's, and is never rewritten: a
    /// Java node reads it. Writes the local type when there is none.
    private func ensureJobType(_ local: JobConfiguration, write: Bool) async throws {
        if let existingType = try await registry.string(paths.root), !existingType.isEmpty {
            guard JobTypeName.matches(existingType, local.jobType, jobClasses: jobClasses) else {
                let mapping = jobClasses[existingType] == nil && existingType.contains(".")
                    ? " (an ElasticJob job class: map it to a job type of this host in host.jobClasses to run it here)" : ""
                throw JobRegistrationError(
                    job: paths.job,
                    message: "the registry already has this job with job type '\(existingType)'\(mapping), "
                        + "but this host configures job type '\(local.jobType)'; rename one of them or change the type")
            }
        } else if write {
            try await registry.put(paths.root, compatibility.storedJobType(local.jobType))
        }
    }

    /// Writes `local` as the job's configuration, with the executor key spelled as the stored
    /// configuration spells it (or as the compatibility target does, for a job without one).
    private func writeConfiguration(_ local: JobConfiguration) async throws {
        let stored = try await registry.textIfPresent(paths.config)?.text
        try await registry.put(paths.config, ElasticJobYAML.encode(local, executorKey: .toWrite(stored: stored, target: compatibility)))
    }

    // MARK: Registration

    /// ElasticJob's `setUpJobConfiguration` and `registerStartUpInfo`: the job's root node holds its
    /// type; the local configuration is written to `config` if there is none there yet (or with
    /// `overwrite`), otherwise the registry's copy is the one that counts and is returned; then this
    /// instance takes part in the election, marks its server, registers its instance node, and the
    /// leader asks for a resharding.
    ///
    /// With `rejoining` (after a new session, or for a job found in the registry), the job must be
    /// there already: its root and configuration are never written, so that a job removed
    /// meanwhile is not brought back.
    package func register(_ local: JobConfiguration, rejoining: Bool = false) async throws -> JobConfiguration {
        let job = paths.job
        defer { cache.invalidate() }
        try await ensureJobType(local, write: !rejoining)
        let hasStoredConfiguration = try await registry.exists(paths.config, watch: nil) != nil
        if rejoining {
            guard hasStoredConfiguration else {
                throw JobRegistrationError(job: job, message: "the job is no longer in the registry (it was removed)")
            }
        }

        var effective = local
        if !rejoining && (local.overwrite || !hasStoredConfiguration) {
            try await writeConfiguration(local)
        } else if let stored = try await registry.string(paths.config) {
            do {
                effective = try ElasticJobYAML.decode(stored, jobType: local.jobType, job: job)
            } catch {
                throw JobRegistrationError(
                    job: job, message: "the registry's configuration at \(paths.config) is invalid: \(error)", setsAside: true)
            }
        }

        for path in [paths.instances, paths.servers, paths.sharding, paths.leader, paths.leaderElection, paths.leaderSharding, paths.trigger, paths.shutdown] {
            try await registry.ensurePath(path)
        }
        // The failover queue exists before anything is queued, so that its child watch sees the
        // first crashed item at once.
        if effective.failover { try await registry.ensurePath(paths.failoverItems) }
        try await electLeader()
        // The local `disabled` wins; otherwise an operator's DISABLED stays (ElasticJob rewrites
        // ENABLED over it at every restart).
        if effective.disabled {
            try await registry.put(paths.server(instance.serverIP), ServerStatus.disabled.rawValue)
        } else {
            try await registry.createIfAbsent(paths.server(instance.serverIP), data: [UInt8](utf8: ServerStatus.enabled.rawValue))
        }
        try await registerInstance()
        // A membership change: a resharding is flagged, applied at the next fire. ElasticJob leaves
        // that to the leader's listener, which misses a join that happened before it started
        // looking (a leader elected, or a job adopted, just then); the instance that joins flags it
        // itself, so that no join goes unseen. With static sharding an existing assignment is kept.
        let hasAssignment = !(try await registry.children(paths.sharding, watch: nil)).isEmpty
        if !(effective.staticSharding && hasAssignment) {
            try await registry.createIfAbsent(paths.reshardingNecessary)
            cache.invalidate()
        }
        return effective
    }

    /// The first half of ``register(_:rejoining:)``, for a job this host will not run: the job's root
    /// node holds its type, and the local configuration is written to `config` if there is none (or
    /// with `overwrite`). Returns the version of the configuration now stored.
    package func registerConfiguration(_ local: JobConfiguration) async throws -> Int32? {
        try await ensureJobType(local, write: true)
        let stored = try await registry.exists(paths.config, watch: nil)
        if local.overwrite || stored == nil {
            try await writeConfiguration(local)
        }
        return try await registry.exists(paths.config, watch: nil)?.version
    }

    /// Becomes leader if there is none (ElasticJob's `electLeader`): the leader node is ephemeral and
    /// the first to create it wins.
    package func electLeader() async throws {
        defer { cache.invalidate() }
        // Another leader may have sharded since this instance last did.
        resharding.withLock { $0.shardedOver = nil }
        if try await registry.createIfAbsent(paths.leaderInstance, data: [UInt8](utf8: instance.id), mode: .ephemeral) {
            events?.publish(.leaderElected(job: paths.job))
        }
    }

    /// Writes this instance's ephemeral node (again, after a new session or if it went missing).
    package func registerInstance() async throws {
        defer { cache.invalidate() }
        let path = paths.instance(instance.id)
        let value = [UInt8](utf8: instance.yaml)
        let session = registry.sessionID
        if try await registry.createIfAbsent(path, data: value, mode: .ephemeral) {
            instanceSession.withLock { $0 = session }
            return
        }
        // Left by an earlier session of this very instance id: replace it with one of ours.
        if let stat = try await registry.exists(path, watch: nil), stat.ephemeralOwner != registry.sessionID {
            try await registry.deleteIfPresent(path)
            try await registry.create(path, data: value, mode: .ephemeral)
        }
        instanceSession.withLock { $0 = session }
    }

    /// The registry session in which this instance's node was last written: while it lives, the
    /// node's absence means another client deleted it (ElasticJob's shutdown).
    package var instanceWrittenInSession: Int64? { instanceSession.withLock { $0 } }

    /// Writes this instance's node again with its own value (another tool changed it).
    package func rewriteInstance() async throws {
        defer { cache.invalidate() }
        let path = paths.instance(instance.id)
        let value = [UInt8](utf8: instance.yaml)
        if let stat = try await registry.exists(path, watch: nil), stat.ephemeralOwner == registry.sessionID {
            _ = try await registry.setData(path, data: value, version: nil)
        } else {
            try await registry.deleteIfPresent(path)
            try await registry.create(path, data: value, mode: .ephemeral)
        }
    }

    /// Only the leader writes the flag.
    package func setReshardingFlag() async throws {
        defer { cache.invalidate() }
        guard try await registry.string(paths.leaderInstance) == instance.id else { return }
        try await registry.createIfAbsent(paths.reshardingNecessary)
    }

    /// Flags a resharding for a change of the job's instances to `membership`, unless this instance,
    /// as the leader, has already sharded over exactly those instances, or is sharding now (a
    /// resharding looks at the instances again once it has written, and flags itself when they
    /// changed meanwhile). A look at the cluster that began before a resharding and ends after it
    /// would otherwise flag the change the resharding just applied, and every instance would wait
    /// at its next fire for a leader that reshards only at its own next fire.
    package func setReshardingFlag(forMembership membership: [String]) async throws {
        let applied = resharding.withLock { $0.underWay > 0 || $0.shardedOver == Set(membership) }
        if applied { return }
        try await setReshardingFlag()
    }

    /// Gives up leadership: another instance elects itself when it sees the leader node go.
    package func abdicate() async throws {
        defer { cache.invalidate() }
        if try await registry.string(paths.leaderInstance) == instance.id {
            try await registry.deleteIfPresent(paths.leaderInstance)
        }
    }

    /// Removes a leader node that no session owns and that names no live instance (another tool
    /// wrote it): it would keep every instance from being elected, and the job from resharding.
    package func removeStrayLeader(_ value: String) async throws {
        defer { cache.invalidate() }
        guard let node = try await registry.textIfPresent(paths.leaderInstance), node.text == value, node.stat.ephemeralOwner == 0 else { return }
        try await registry.delete(paths.leaderInstance, version: node.stat.version)
    }

    /// Asks instance `id` to stop running the job (remote shutdown).
    package func requestShutdown(of id: String) async throws {
        try await registry.ensurePath(paths.shutdown)
        try await registry.createIfAbsent(paths.shutdown(id))
    }

    /// Takes this instance's trigger request, if there is one: true when it was there.
    package func takeTrigger() async throws -> Bool {
        defer { cache.invalidate() }
        return try await registry.deleteIfPresent(paths.trigger(instance.id))
    }

    /// Takes this instance's shutdown command.
    package func takeShutdownCommand() async throws {
        defer { cache.invalidate() }
        try await registry.deleteIfPresent(paths.shutdown(instance.id))
    }

    /// The registry's copy of the job's configuration and its version, or `nil` when there is none.
    package func storedConfiguration() async throws -> (text: String, version: Int32)? {
        try await registry.textIfPresent(paths.config).map { ($0.text, $0.stat.version) }
    }

    /// Leaves the job: the instance node goes, and the leader node if this instance leads.
    package func unregister() async {
        if (try? await registry.string(paths.leaderInstance)) == instance.id {
            _ = try? await registry.deleteIfPresent(paths.leaderInstance)
        }
        _ = try? await registry.deleteIfPresent(paths.instance(instance.id))
    }

    // MARK: Reading

    /// Everything a fire decides on. Served from a cache while the registry reports no change to the
    /// job's nodes (one-shot watches invalidate it, as ElasticJob's CuratorCache is kept current), so
    /// a steady job fires without reading the registry.
    package func snapshot() async throws -> JobSnapshot {
        if let cached = cache.current() { return cached }
        let generation = cache.generation
        do {
            let snapshot = try await readSnapshot()
            cache.store(snapshot, ifStill: generation)
            return snapshot
        } catch {
            // Which watches the failed read left armed is unknown: start over on the next read.
            cache.reset()
            throw error
        }
    }

    /// The cached snapshot and its generation, without reading the registry; `nil` when none is
    /// cached.
    func cachedSnapshot() -> (JobSnapshot, UInt64)? { cache.currentWithGeneration() }

    /// Changes whenever the cached snapshot is dropped (a registry change, a write of this instance).
    var cacheGeneration: UInt64 { cache.generation }

    /// Returns at the next change to the job's nodes after `generation` (or at once if there was
    /// one), or after `limit`.
    func change(after generation: UInt64, within limit: Duration) async {
        await cache.change(after: generation, within: limit)
    }

    /// The cache's generation when a snapshot is cached, without copying it; `nil` otherwise.
    var cachedGeneration: UInt64? { cache.cachedGeneration }

    /// Forgets the cached snapshot, and with `watchesLost` also the record of armed watches (after a
    /// new session, the old session's watches never fire).
    package func invalidateCache(watchesLost: Bool = false) {
        if watchesLost { cache.reset() } else { cache.invalidate() }
    }

    private func readSnapshot() async throws -> JobSnapshot {
        try await JobSnapshot.read(from: registry, paths: paths, instanceID: instance.id, watches: cache)
    }

    // MARK: Sharding

    /// The leader's resharding (ElasticJob's `shardingIfNecessary`, reference §4.3): the strategy
    /// assigns the items over the available instances, and the assignment, the removal of the old
    /// one and the clearing of the flag are one transaction. Returns whether it sharded.
    package func shardIfNecessary(
        _ snapshot: JobSnapshot, total: Int, strategy: ShardingStrategyInstance
    ) async throws -> Bool {
        guard CoordinationRules.needsSharding(snapshot), CoordinationRules.isLeader(snapshot, instance.id) else {
            return false
        }
        resharding.withLock { $0.underWay += 1 }
        defer { resharding.withLock { $0.underWay -= 1 } }
        let instances = CoordinationRules.availableInstances(snapshot)
        let assignment = try strategy.shard(jobName: paths.job, instances: instances, totalCount: total)
        // The items' own nodes first, a few hundred per transaction rather than one request each
        // (the first resharding of a job of 2,000 items); they hold nothing, so they need not go
        // with the assignment.
        let missing = (0..<total).filter { snapshot.items[$0] == nil }
        for start in stride(from: 0, to: missing.count, by: Self.itemNodesPerTransaction) {
            let chunk = missing[start..<min(start + Self.itemNodesPerTransaction, missing.count)]
            do {
                try await registry.multi(chunk.map { .create(paths.item($0), data: [], mode: .persistent) })
            } catch {
                // One of them exists already (another leader's interrupted resharding): one by one.
                for item in chunk { try await registry.ensurePath(paths.item(item)) }
            }
        }
        var operations: [RegistryOperation] = []
        for item in 0..<total where snapshot.items[item]?.owner != nil {
            operations.append(.delete(paths.itemInstance(item), version: nil))
        }
        for entry in assignment.entries {
            for item in entry.items {
                operations.append(.create(paths.itemInstance(item), data: [UInt8](utf8: entry.instanceID), mode: .persistent))
            }
        }
        operations.append(.delete(paths.reshardingNecessary, version: nil))
        try await registry.multi(operations)
        resharding.withLock { $0.shardedOver = Set(instances) }
        cache.invalidate()
        // The snapshot may predate a join or leave that came while sharding (the flag it would have
        // set was already there, and went with this transaction): if the instances are not those
        // the assignment was made over, flag again.
        if try await freshAvailableInstances() != Set(instances) {
            try await setReshardingFlag()
        }
        // Items beyond a reduced total go (with their markers) after the new assignment is in place.
        for item in snapshot.items.keys where item >= total {
            try await registry.deleteRecursively(paths.item(item))
        }
        return true
    }

    /// How many empty item nodes one transaction creates.
    static let itemNodesPerTransaction = 500

    /// The available instances, read now rather than from the cached snapshot.
    private func freshAvailableInstances() async throws -> Set<String> {
        var available = Set<String>()
        var statuses: [String: String?] = [:]
        for id in try await registry.childrenIfPresent(paths.instances) {
            let ip = CoordinationRules.serverIP(of: id)
            if statuses[ip] == nil { statuses[ip] = try await registry.string(paths.server(ip)) }
            if CoordinationRules.isEnabled(statuses[ip] ?? nil) { available.insert(id) }
        }
        return available
    }

    // MARK: The markers of a fire

    /// monitorExecution: one `running` marker per item, holding this instance's id, written in one
    /// transaction. Persistent with failover (so a crash leaves them for the survivors), ephemeral
    /// otherwise, as in ElasticJob 3.0.2+.
    package func markRunning(_ items: [Int], persistent: Bool) async throws {
        guard !items.isEmpty else { return }
        let data = [UInt8](utf8: instance.id)
        defer { cache.invalidate() }
        let failure: RegistryError?
        do {
            try await registry.multi(items.map { .create(paths.itemRunning($0), data: data, mode: persistent ? .persistent : .ephemeral) })
            failure = nil
        } catch {
            failure = error
        }
        guard let failure else { return }
        if failure.code.isUncertain {
            // The transaction may have been applied although its answer was lost: markers left
            // behind would keep the items from ever running here again. They go once the registry
            // answers, before the fire ends.
            try? await clearRunning(items)
        }
        throw failure
    }

    /// Removes the running markers of a fire's items in one transaction (or one by one, skipping
    /// markers that are gone already, if the transaction finds one missing).
    package func clearRunning(_ items: [Int]) async throws {
        try await deleteAll(items.map(paths.itemRunning))
    }

    /// ElasticJob's `setMisfire`: a fire came while these items were still running. One transaction;
    /// if some marker exists already, they are written one by one.
    package func setMisfire(_ items: [Int]) async throws {
        guard !items.isEmpty else { return }
        defer { cache.invalidate() }
        let written: Bool
        do {
            try await registry.multi(items.map { .create(paths.itemMisfire($0), data: [], mode: .persistent) })
            written = true
        } catch {
            written = false
        }
        if written { return }
        for item in items {
            try await registry.ensurePath(paths.itemMisfire(item))
        }
    }

    package func clearMisfire(_ items: [Int]) async throws {
        try await deleteAll(items.map(paths.itemMisfire))
    }

    /// How long removing a fire's markers waits for a lost connection to come back (its markers
    /// are ephemeral, or failed over, once the session is gone).
    static let markerRemovalPatience: Duration = .seconds(10)

    private func deleteAll(_ nodes: [String]) async throws {
        guard !nodes.isEmpty else { return }
        defer { cache.invalidate() }
        let started = ContinuousClock.now
        while true {
            let failure: RegistryError?
            do {
                try await deleteAllOnce(nodes)
                failure = nil
            } catch {
                failure = error
            }
            guard let failure else { return }
            // The connection is down: markers left now would hold their items; try again.
            guard failure.code.isUncertain, ContinuousClock.now - started < Self.markerRemovalPatience else { throw failure }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func deleteAllOnce(_ nodes: [String]) async throws(RegistryError) {
        let failure: RegistryError?
        do {
            try await registry.multi(nodes.map { .delete($0, version: nil) })
            failure = nil
        } catch {
            failure = error
        }
        guard let failure else { return }
        guard failure.code.isNoNode else { throw failure }
        for node in nodes {
            try await registry.deleteIfPresent(node)
        }
    }
}

/// The coordinator's cached snapshot and the watches that keep it honest. Every registry change to a
/// node the snapshot was read from fires one of the watches, which drops the snapshot; a read that
/// overlapped a change is not stored. Each node is watched once at a time.
final class SnapshotCache: Sendable {
    private struct State {
        var snapshot: JobSnapshot?
        var generation: UInt64 = 0
        var armed: Set<String> = []
        /// Those waiting for the next change (``change(after:within:)``), by id.
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]

        /// A change: the generation moves on, the snapshot goes. Returns the waiters to resume,
        /// after the lock is released.
        mutating func changed(_ published: borrowing Atomic<UInt64>) -> [CheckedContinuation<Void, Never>] {
            generation &+= 1
            published.store(generation, ordering: .releasing)
            snapshot = nil
            guard !waiters.isEmpty else { return [] }
            defer { waiters = [:] }
            return Array(waiters.values)
        }
    }

    private let nextWaiter = Atomic<UInt64>(0)

    /// `State.generation`, readable without the lock (an armed fire checks it at its instant).
    private let currentGeneration = Atomic<UInt64>(0)
    private let state = Mutex(State())
    private let listener = Mutex<Callback<String>?>(nil)

    func setListener(_ handler: @escaping @Sendable (String) -> Void) {
        listener.withLock { $0 = Callback(handler) }
    }

    func current() -> JobSnapshot? { state.withLock { $0.snapshot } }

    var cachedGeneration: UInt64? {
        state.withLock { $0.snapshot == nil ? nil : $0.generation }
    }

    func currentWithGeneration() -> (JobSnapshot, UInt64)? {
        state.withLock { state in state.snapshot.map { ($0, state.generation) } }
    }

    var generation: UInt64 { currentGeneration.load(ordering: .acquiring) }

    func store(_ snapshot: JobSnapshot, ifStill generation: UInt64) {
        state.withLock { state in
            if state.generation == generation { state.snapshot = snapshot }
        }
    }

    func invalidate() {
        for waiter in state.withLock({ $0.changed(currentGeneration) }) { waiter.resume() }
    }

    /// Forgets the snapshot and which watches are armed.
    func reset() {
        let waiters = state.withLock { state in
            state.armed = []
            return state.changed(currentGeneration)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the generation is past `generation` (a watched node changed, or this instance
    /// wrote), or after `limit`, or when the task is cancelled, whichever comes first. The limit
    /// bounds what a change that no armed watch reports can cost.
    func change(after generation: UInt64, within limit: Duration) async {
        guard self.generation == generation else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForChange(after: generation) }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForChange(after generation: UInt64) async {
        let id = nextWaiter.wrappingAdd(1, ordering: .relaxed).oldValue
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let changed = state.withLock { state -> Bool in
                    if state.generation != generation || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if changed { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// A watcher for `key`, or `nil` when one is armed already (a registry keeps every registration,
    /// so arming again would pile them up).
    func watcher(_ key: String) -> Watcher? {
        guard state.withLock({ $0.armed.insert(key).inserted }) else { return nil }
        return { [self] event in
            let waiters = state.withLock { state in
                state.armed.remove(key)
                return state.changed(currentGeneration)
            }
            for waiter in waiters { waiter.resume() }
            listener.withLock { $0 }?.call(event.path)
        }
    }

    func disarm(_ key: String) {
        _ = state.withLock { $0.armed.remove(key) }
    }
}
