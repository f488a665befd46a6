extension JobSnapshot {
    /// Reads everything a snapshot holds about one job from the registry.
    ///
    /// - Parameters:
    ///   - instanceID: the instance whose trigger request and shutdown command the snapshot reports;
    ///     `nil` for a reader that is no instance (an operator), for which both stay false.
    ///   - watches: arms a one-shot watch on every node read, so that the cache it belongs to is
    ///     dropped at the next change; `nil` reads without watching (a one-off read, which must not
    ///     leave watches behind that nobody re-arms).
    static func read(
        from registry: any RegistryCenter, paths: JobNodePath, instanceID: String?, watches: SnapshotCache?
    ) async throws -> JobSnapshot {
        let reader = SnapshotReader(registry: registry, watches: watches)
        var snapshot = JobSnapshot()
        let config = try await reader.exists(paths.config)
        snapshot.configVersion = config?.version
        snapshot.configCreated = config?.createdTransaction
        if let instanceID {
            snapshot.triggerRequested = try await reader.exists(paths.trigger(instanceID)) != nil
            snapshot.shutdownRequested = try await reader.exists(paths.shutdown(instanceID)) != nil
        }
        if let stat = try await reader.exists(paths.leaderInstance) {
            snapshot.leader = try await registry.string(paths.leaderInstance)
            snapshot.leaderIsEphemeral = stat.ephemeralOwner != 0
        }
        let leaderSharding = try await reader.children(paths.leaderSharding)
        snapshot.reshardingNecessary = leaderSharding.contains("necessary")
        if snapshot.reshardingNecessary {
            // Read only while the flag is up: when it was raised decides which fires it is for.
            snapshot.reshardingFlaggedAt = try await reader.exists(paths.reshardingNecessary)?.createdTime
            snapshot.reshardingNecessary = snapshot.reshardingFlaggedAt != nil
        }
        snapshot.shardingProcessing = leaderSharding.contains("processing")
        for id in try await reader.children(paths.instances) {
            // Watched: a value another tool writes is seen (and written back by its host) at once.
            guard let value = try await reader.text(paths.instance(id))?.text else { continue }
            // An instance is who its id says: `{ip}@-@{pid}`, the value ElasticJob and every host
            // write. A value that says otherwise is reported, not believed.
            let instance = JobInstance(id: id, serverIP: CoordinationRules.serverIP(of: id))
            if JobInstance.parse(value) != instance { snapshot.unexpectedInstanceValues[id] = value }
            snapshot.instances[id] = instance
        }
        for ip in try await reader.children(paths.servers) {
            snapshot.servers[ip] = try await reader.text(paths.server(ip))?.text ?? ""
        }
        let items = try await reader.children(paths.sharding).compactMap { Int($0) }
        snapshot.items = try await readItems(items, from: registry, paths: paths, reader: reader)
        snapshot.failoverQueue = Set(try await reader.children(paths.failoverItems).compactMap { Int($0) })
        return snapshot
    }

    /// How many items' markers are read at once: the reads are pipelined on the registry's one
    /// connection, so a job of 1,024 items costs a few dozen round trips rather than thousands.
    static let concurrentItemReads = 64

    private static func readItems(
        _ items: [Int], from registry: any RegistryCenter, paths: JobNodePath, reader: SnapshotReader
    ) async throws -> [Int: Item] {
        // One item has nothing to overlap with: no child task (a host of 10,000 one-item jobs reads
        // them all as it starts, and those child tasks added 100 to 350 MB to its resident memory).
        if items.count == 1, let item = items.first {
            return [item: try await readItem(item, from: registry, paths: paths, reader: reader)]
        }
        return try await withThrowingTaskGroup(of: (Int, Item).self) { group in
            var records: [Int: Item] = [:]
            records.reserveCapacity(items.count)
            var pending = items.makeIterator()
            func readNext() {
                guard let item = pending.next() else { return }
                group.addTask { (item, try await readItem(item, from: registry, paths: paths, reader: reader)) }
            }
            for _ in 0..<concurrentItemReads { readNext() }
            while let (item, record) = try await group.next() {
                records[item] = record
                readNext()
            }
            return records
        }
    }

    private static func readItem(_ item: Int, from registry: any RegistryCenter, paths: JobNodePath, reader: SnapshotReader) async throws -> Item {
        var record = Item()
        // Markers are created and deleted, never rewritten: a child watch on the item sees them all.
        let markers = Set(try await reader.children(paths.item(item)))
        if markers.contains("instance"), let node = try await registry.textIfPresent(paths.itemInstance(item)) {
            record.owner = node.text
            record.ownerEpoch = UInt64(bitPattern: node.stat.createdTransaction)
        }
        if markers.contains("running") { record.running = try await registry.string(paths.itemRunning(item)) }
        record.misfire = markers.contains("misfire")
        record.disabled = markers.contains("disabled")
        if markers.contains("failover"), let node = try await registry.textIfPresent(paths.itemFailover(item)) {
            record.failover = node.text
            record.failoverEpoch = UInt64(bitPattern: node.stat.createdTransaction)
        }
        if markers.contains("failovering"), let node = try await registry.textIfPresent(paths.itemFailovering(item)) {
            record.failovering = node.text
            record.failoveringEpoch = UInt64(bitPattern: node.stat.createdTransaction)
        }
        return record
    }
}

/// Registry reads that arm a watch through a snapshot cache, when there is one.
struct SnapshotReader: Sendable {
    let registry: any RegistryCenter
    let watches: SnapshotCache?

    func exists(_ path: String) async throws -> NodeStat? {
        try await registry.exists(path, watch: watches?.watcher("exists " + path))
    }

    func children(_ path: String) async throws -> [String] {
        let key = "children " + path
        do {
            return try await registry.children(path, watch: watches?.watcher(key))
        } catch {
            guard error.code == .noNode else { throw error }
            watches?.disarm(key)  // no watch is set on a missing node
            return []
        }
    }

    func text(_ path: String) async throws -> (text: String, stat: NodeStat)? {
        let key = "data " + path
        do {
            let (bytes, stat) = try await registry.data(path, watch: watches?.watcher(key))
            return (String(decoding: bytes, as: UTF8.self), stat)
        } catch {
            guard error.code == .noNode else { throw error }
            watches?.disarm(key)
            return nil
        }
    }
}
