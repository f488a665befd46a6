/// One node of the embedded tree.
struct EmbeddedNode {
    var data: [UInt8]
    var createdTransaction: Int64
    var modifiedTransaction: Int64
    var createdTime: Int64
    var modifiedTime: Int64
    var version: Int32
    /// ZooKeeper's stored `cversion`: how many children were ever created. Sequential names are
    /// taken from it; clients see `2 * creations - childCount` (creations plus deletions).
    var childCreations: Int32
    /// `pzxid`: the transaction that last created or deleted a child. Not in `NodeStat`, but a
    /// reconnecting session's child watches are judged by it, as ZooKeeper's are.
    var childrenTransaction: Int64
    var ephemeralOwner: Int64
    var children: Set<String>

    static let root = EmbeddedNode(
        data: [], createdTransaction: 0, modifiedTransaction: 0, createdTime: 0, modifiedTime: 0, version: 0,
        childCreations: 0, childrenTransaction: 0, ephemeralOwner: 0, children: [])

    var stat: NodeStat {
        let childCount = Int32(truncatingIfNeeded: children.count)
        return NodeStat(
            createdTransaction: createdTransaction, modifiedTransaction: modifiedTransaction,
            createdTime: createdTime, modifiedTime: modifiedTime, version: version,
            childrenVersion: childCreations &* 2 &- childCount, ephemeralOwner: ephemeralOwner,
            dataLength: Int32(clamping: data.count), childCount: childCount)
    }
}

/// The transaction a write belongs to. All operations of one `multi`, and all deletions of one
/// ended session, share one, as in ZooKeeper.
struct EmbeddedTransaction {
    var zxid: Int64
    var time: Int64
    var session: Int64
}

/// A change to the tree, in the order it happened, for the watches to see once it is committed.
enum EmbeddedChange {
    case created(path: String, parent: String)
    case deleted(path: String, parent: String)
    case dataChanged(path: String)
}

/// What a write did, so that a failed `multi` can be undone and a committed one can fire watches.
struct EmbeddedJournal {
    enum Undo {
        case created(path: String, parent: String, name: String, parentCreations: Int32, parentTransaction: Int64)
        case deleted(path: String, parent: String, name: String, node: EmbeddedNode, parentTransaction: Int64)
        case dataSet(path: String, data: [UInt8], version: Int32, transaction: Int64, time: Int64)
    }

    /// Single operations validate everything before they change anything, so only `multi` needs
    /// the undo log; leaving it off saves an allocation per write.
    let recordsUndo: Bool
    var undo: [Undo] = []
    var changes: [EmbeddedChange] = []

    init(recordsUndo: Bool) { self.recordsUndo = recordsUndo }

    mutating func record(_ entry: @autoclosure () -> Undo) {
        if recordsUndo { undo.append(entry()) }
    }
}

/// The node tree, keyed by full path, so that every operation is a hash lookup and listing
/// children costs only their number.
struct EmbeddedTree {
    private(set) var nodes: [String: EmbeddedNode] = ["/": .root]
    /// The last committed transaction (`zxid`).
    private(set) var lastTransaction: Int64 = 0
    /// Each live session's ephemeral nodes.
    private(set) var ephemerals: [Int64: Set<String>] = [:]

    func node(_ path: String) -> EmbeddedNode? { nodes[path] }

    mutating func commit(_ transaction: EmbeddedTransaction) {
        lastTransaction = transaction.zxid
    }

    /// Applies one operation of a write. Throws before changing anything when the operation is
    /// refused; earlier operations of the same `multi` stay applied until `rollBack`.
    mutating func apply(
        _ operation: RegistryOperation, in transaction: EmbeddedTransaction, journal: inout EmbeddedJournal
    ) throws(RegistryError) -> RegistryOperationResult {
        switch operation {
        case .create(let path, let data, let mode):
            return .created(path: try create(path, data: data, mode: mode, in: transaction, journal: &journal))
        case .delete(let path, let version):
            try delete(path, version: version, in: transaction, journal: &journal)
            return .deleted
        case .setData(let path, let data, let version):
            return .set(try setData(path, data: data, version: version, in: transaction, journal: &journal))
        case .check(let path, let version):
            try check(path, version: version)
            return .checked
        }
    }

    /// ZooKeeper's order of checks: the path, the parent, the name taken, the parent ephemeral.
    mutating func create(
        _ requested: String, data: [UInt8], mode: CreateMode, in transaction: EmbeddedTransaction,
        journal: inout EmbeddedJournal
    ) throws(RegistryError) -> String {
        guard RegistryPath.isValid(requested, sequential: mode.isSequential) else {
            throw RegistryError(.invalidPath, path: requested)
        }
        if requested == "/" && !mode.isSequential { throw RegistryError(.nodeExists, path: requested) }
        let (parent, requestedName) = RegistryPath.split(requested)
        guard let parentIndex = nodes.index(forKey: parent) else { throw RegistryError(.noNode, path: requested) }
        let creations = nodes.values[parentIndex].childCreations
        let parentTransaction = nodes.values[parentIndex].childrenTransaction

        var path = requested
        var name = String(requestedName)
        if mode.isSequential {
            let suffix = RegistryPath.sequenceSuffix(creations)
            path += suffix
            name += suffix
        }
        if nodes[path] != nil { throw RegistryError(.nodeExists, path: requested) }
        if nodes.values[parentIndex].ephemeralOwner != 0 {
            throw RegistryError(.noChildrenForEphemerals, path: requested)
        }

        nodes.values[parentIndex].children.insert(name)
        nodes.values[parentIndex].childCreations = creations &+ 1
        nodes.values[parentIndex].childrenTransaction = transaction.zxid
        let owner = mode.isEphemeral ? transaction.session : 0
        nodes[path] = EmbeddedNode(
            data: data, createdTransaction: transaction.zxid, modifiedTransaction: transaction.zxid,
            createdTime: transaction.time, modifiedTime: transaction.time, version: 0, childCreations: 0,
            childrenTransaction: transaction.zxid, ephemeralOwner: owner, children: [])
        if owner != 0 { ephemerals[owner, default: []].insert(path) }

        journal.record(.created(
            path: path, parent: parent, name: name, parentCreations: creations, parentTransaction: parentTransaction))
        journal.changes.append(.created(path: path, parent: parent))
        return path
    }

    /// ZooKeeper refuses to delete the root (bad arguments); the version is checked before the
    /// children.
    mutating func delete(
        _ path: String, version: Int32?, in transaction: EmbeddedTransaction, journal: inout EmbeddedJournal
    ) throws(RegistryError) {
        guard RegistryPath.isValid(path), path != "/" else { throw RegistryError(.invalidPath, path: path) }
        guard let index = nodes.index(forKey: path) else { throw RegistryError(.noNode, path: path) }
        try Self.check(nodes.values[index].version, against: version, path: path)
        guard nodes.values[index].children.isEmpty else { throw RegistryError(.notEmpty, path: path) }
        remove(at: index, path: path, in: transaction, journal: &journal)
    }

    mutating func setData(
        _ path: String, data: [UInt8], version: Int32?, in transaction: EmbeddedTransaction,
        journal: inout EmbeddedJournal
    ) throws(RegistryError) -> NodeStat {
        guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
        guard let index = nodes.index(forKey: path) else { throw RegistryError(.noNode, path: path) }
        let current = nodes.values[index].version
        try Self.check(current, against: version, path: path)

        journal.record(.dataSet(
            path: path, data: nodes.values[index].data, version: current,
            transaction: nodes.values[index].modifiedTransaction, time: nodes.values[index].modifiedTime))
        // ZooKeeper skips -1 when the version wraps, because -1 means "any version" to a writer.
        let next = current &+ 1
        nodes.values[index].version = next == -1 ? 0 : next
        nodes.values[index].data = data
        nodes.values[index].modifiedTransaction = transaction.zxid
        nodes.values[index].modifiedTime = transaction.time
        journal.changes.append(.dataChanged(path: path))
        return nodes.values[index].stat
    }

    func check(_ path: String, version: Int32?) throws(RegistryError) {
        guard RegistryPath.isValid(path) else { throw RegistryError(.invalidPath, path: path) }
        guard let node = nodes[path] else { throw RegistryError(.noNode, path: path) }
        try Self.check(node.version, against: version, path: path)
    }

    /// Deletes every ephemeral node of `session` (which cannot have children), in path order.
    /// Returns whether there were any.
    mutating func removeEphemerals(
        of session: Int64, in transaction: EmbeddedTransaction, journal: inout EmbeddedJournal
    ) -> Bool {
        guard let paths = ephemerals.removeValue(forKey: session), !paths.isEmpty else { return false }
        for path in paths.sorted() {
            if let index = nodes.index(forKey: path) {
                remove(at: index, path: path, in: transaction, journal: &journal)
            }
        }
        return true
    }

    /// Undoes, newest first, what a failed `multi` applied.
    mutating func rollBack(_ journal: EmbeddedJournal) {
        for entry in journal.undo.reversed() {
            switch entry {
            case .created(let path, let parent, let name, let parentCreations, let parentTransaction):
                let removed = nodes.removeValue(forKey: path)
                if let owner = removed?.ephemeralOwner, owner != 0 { forgetEphemeral(path, of: owner) }
                nodes[parent]?.children.remove(name)
                nodes[parent]?.childCreations = parentCreations
                nodes[parent]?.childrenTransaction = parentTransaction
            case .deleted(let path, let parent, let name, let node, let parentTransaction):
                nodes[path] = node
                if node.ephemeralOwner != 0 { ephemerals[node.ephemeralOwner, default: []].insert(path) }
                nodes[parent]?.children.insert(name)
                nodes[parent]?.childrenTransaction = parentTransaction
            case .dataSet(let path, let data, let version, let transaction, let time):
                nodes[path]?.data = data
                nodes[path]?.version = version
                nodes[path]?.modifiedTransaction = transaction
                nodes[path]?.modifiedTime = time
            }
        }
    }

    private mutating func remove(
        at index: Dictionary<String, EmbeddedNode>.Index, path: String, in transaction: EmbeddedTransaction,
        journal: inout EmbeddedJournal
    ) {
        let node = nodes.remove(at: index).value
        if node.ephemeralOwner != 0 { forgetEphemeral(path, of: node.ephemeralOwner) }
        let (parent, name) = RegistryPath.split(path)
        let nameString = String(name)
        // Deleting a child leaves the stored cversion alone (it counts creations); clients still
        // see it rise, because the stat reports creations plus deletions.
        let parentTransaction = nodes[parent]?.childrenTransaction ?? 0
        nodes[parent]?.children.remove(nameString)
        nodes[parent]?.childrenTransaction = transaction.zxid
        journal.record(.deleted(
            path: path, parent: parent, name: nameString, node: node, parentTransaction: parentTransaction))
        journal.changes.append(.deleted(path: path, parent: parent))
    }

    private mutating func forgetEphemeral(_ path: String, of owner: Int64) {
        ephemerals[owner]?.remove(path)
        if ephemerals[owner]?.isEmpty == true { ephemerals[owner] = nil }
    }

    /// `nil` and -1 both mean any version: ZooKeeper takes -1 as "any", and a `ZooKeeperRegistry`
    /// passing versions through would too.
    private static func check(_ current: Int32, against expected: Int32?, path: String) throws(RegistryError) {
        if let expected, expected != -1, expected != current { throw RegistryError(.badVersion, path: path) }
    }
}
