/// Failover (reference §4.4, with ElasticJob's weak points fixed): the writes, each one
/// transaction, so that two instances can never both flag or both take an item.
extension JobCoordinator {
    /// Queues crashed items for a taker: for each, `leader/failover/items/{i}` is created and the
    /// dead instance's `running` (or a dead taker's `failovering`) marker removed, in one
    /// transaction per item. An item another instance queued first is skipped.
    package func flagCrashed(_ items: [Int], in snapshot: JobSnapshot) async throws {
        defer { cache.invalidate() }
        try await registry.ensurePath(paths.failoverItems)
        for item in items {
            guard let record = snapshot.items[item] else { continue }
            var operations: [RegistryOperation] = [.create(paths.failoverItem(item), data: [], mode: .persistent)]
            if record.running != nil { operations.append(.delete(paths.itemRunning(item), version: nil)) }
            if record.failovering != nil { operations.append(.delete(paths.itemFailovering(item), version: nil)) }
            do {
                try await registry.multi(operations)
            } catch {
                // Queued, or its markers changed, by another instance meanwhile: its snapshot wins.
                guard case .transactionFailed = error.code else { throw error }
            }
        }
    }

    /// Takes a queued item: the queue entry goes, and this instance's `failover` (ephemeral) and
    /// `failovering` (persistent, survives this instance's crash) markers come, in one transaction:
    /// of several instances racing for an item, exactly one gets it. Returns the claim's fencing
    /// epoch (the transaction that created `failovering`), or `nil` when another took it first.
    package func claimFailover(_ item: Int) async throws -> UInt64? {
        defer { cache.invalidate() }
        let me = [UInt8](utf8: instance.id)
        do {
            try await registry.multi([
                .delete(paths.failoverItem(item), version: nil),
                .create(paths.itemFailover(item), data: me, mode: .ephemeral),
                .create(paths.itemFailovering(item), data: me, mode: .persistent),
            ])
        } catch {
            guard case .transactionFailed = error.code else { throw error }
            return nil
        }
        guard let stat = try await registry.exists(paths.itemFailovering(item), watch: nil) else { return nil }
        return UInt64(bitPattern: stat.createdTransaction)
    }

    /// Before this instance runs its own claims again (they are not running here): the ephemeral
    /// `failover` marker that died with an earlier session is written again, and a `running` marker
    /// of ours, left by a run that could not finish its bookkeeping (the registry was down), goes.
    package func prepareRerun(of items: [Int], in snapshot: JobSnapshot) async throws {
        defer { cache.invalidate() }
        for item in items {
            if snapshot.items[item]?.failover == nil {
                try await registry.createIfAbsent(paths.itemFailover(item), data: [UInt8](utf8: instance.id), mode: .ephemeral)
            }
            if snapshot.items[item]?.running == instance.id {
                try await registry.deleteIfPresent(paths.itemRunning(item))
            }
        }
    }

    /// The end of a failover run: its `running`, `failover` and `failovering` markers go in one
    /// transaction (those already gone are skipped).
    package func completeFailover(_ items: [Int]) async throws {
        guard !items.isEmpty else { return }
        try await deleteIfPresentAll(items.flatMap { [paths.itemRunning($0), paths.itemFailover($0), paths.itemFailovering($0)] })
    }

    /// Gives claimed items back to the queue (a listener vetoed their run, or the host fenced it):
    /// the queue entry comes back and this instance's claim markers (and with `running` its running
    /// marker) go, one transaction per item.
    package func requeueFailover(_ items: [Int], running: Bool = false) async throws {
        defer { cache.invalidate() }
        for item in items {
            var operations: [RegistryOperation] = [
                .create(paths.failoverItem(item), data: [], mode: .persistent),
                .delete(paths.itemFailover(item), version: nil),
                .delete(paths.itemFailovering(item), version: nil),
            ]
            if running { operations.append(.delete(paths.itemRunning(item), version: nil)) }
            try await registry.multi(operations)
        }
    }

    /// Queues this instance's own items whose run did not finish (the host fenced them): the queue
    /// entry comes and the running marker goes, one transaction per item.
    package func requeueRunning(_ items: [Int]) async throws {
        guard !items.isEmpty else { return }
        defer { cache.invalidate() }
        try await registry.ensurePath(paths.failoverItems)
        for item in items {
            try await registry.multi([
                .create(paths.failoverItem(item), data: [], mode: .persistent),
                .delete(paths.itemRunning(item), version: nil),
            ])
        }
    }

    private func deleteIfPresentAll(_ nodes: [String]) async throws {
        defer { cache.invalidate() }
        do {
            try await registry.multi(nodes.map { .delete($0, version: nil) })
        } catch {
            guard error.code.isNoNode else { throw error }
            for node in nodes { try await registry.deleteIfPresent(node) }
        }
    }
}
