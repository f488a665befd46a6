/// The result of sharding: which instance runs which items.
///
/// Entries keep the strategy's key order (ElasticJob's strategies reorder instances, and the order
/// shows in their results); every instance given to the strategy appears once, possibly with no
/// items. Items of one instance are in ascending order.
public struct ShardingAssignment: Sendable, Equatable, CustomStringConvertible {
    public struct Entry: Sendable, Equatable {
        public var instanceID: String
        public var items: [Int]

        public init(instanceID: String, items: [Int]) {
            self.instanceID = instanceID
            self.items = items
        }
    }

    public var entries: [Entry]

    public init(_ entries: [Entry] = []) {
        self.entries = entries
    }

    /// Builds an assignment from instances taken in `keyOrder`, each with the items it owns.
    /// `owners[item]` is an index into `instances`, or `nil` for an unassigned item.
    public init(instances: [String], keyOrder: [Int], owners: [Int?]) {
        var itemsByInstance = Array(repeating: [Int](), count: instances.count)
        for (item, owner) in owners.enumerated() {
            if let owner { itemsByInstance[owner].append(item) }
        }
        self.entries = keyOrder.map { Entry(instanceID: instances[$0], items: itemsByInstance[$0]) }
    }

    /// The items of `instanceID` (empty when it has none or is not in the assignment).
    public func items(of instanceID: String) -> [Int] {
        entries.first { $0.instanceID == instanceID }?.items ?? []
    }

    /// The instance that owns `item`, if any.
    public func owner(of item: Int) -> String? {
        entries.first { $0.items.contains(item) }?.instanceID
    }

    public var description: String {
        "{" + entries.map { "\($0.instanceID): \($0.items)" }.joined(separator: ", ") + "}"
    }
}

/// Java's `String.hashCode()`: `h = 31 * h + c` over the UTF-16 code units, in wrapping 32-bit
/// arithmetic. ElasticJob's ODEVITY and ROUND_ROBIN strategies order instances by it.
public func javaStringHashCode(_ string: String) -> Int32 {
    var hash: Int32 = 0
    for unit in string.utf16 {
        hash = hash &* 31 &+ Int32(unit)
    }
    return hash
}

extension ShardingAssignment {
    /// A sharding result does not fit its inputs.
    public struct InvalidResult: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The C form of the assignment: the key order as indexes into `instances`, and each item's owner
    /// (an index into `instances`, or `nil`). Instances the assignment leaves out are appended to the
    /// key order in their given order. Throws when the assignment names an instance that was not
    /// given, lists one twice, or assigns an item twice or out of range.
    public func encoded(instances: [String], totalCount: Int) throws(InvalidResult) -> (keyOrder: [Int], owners: [Int?]) {
        var indexOf: [String: Int] = [:]
        for (index, instance) in instances.enumerated() where indexOf[instance] == nil {
            indexOf[instance] = index
        }
        var keyOrder: [Int] = []
        var listed = Array(repeating: false, count: instances.count)
        var owners: [Int?] = Array(repeating: nil, count: totalCount)
        for entry in entries {
            guard let index = indexOf[entry.instanceID] else {
                throw InvalidResult("the strategy assigned items to '\(entry.instanceID)', which is not one of the instances given")
            }
            guard !listed[index] else {
                throw InvalidResult("the strategy listed instance '\(entry.instanceID)' twice")
            }
            listed[index] = true
            keyOrder.append(index)
            for item in entry.items {
                guard item >= 0, item < totalCount else {
                    throw InvalidResult("the strategy assigned item \(item), outside 0..<\(totalCount)")
                }
                if let owner = owners[item] {
                    throw InvalidResult("the strategy assigned item \(item) to both '\(instances[owner])' and '\(entry.instanceID)'")
                }
                owners[item] = index
            }
        }
        for index in instances.indices where !listed[index] {
            keyOrder.append(index)
        }
        return (keyOrder, owners)
    }

    /// Reads the C form back, checking that `keyOrder` is a permutation of the instance indexes and
    /// every owner is an instance index or -1.
    public init(instances: [String], checkingKeyOrder keyOrder: [UInt32], owners: [Int32]) throws(InvalidResult) {
        guard keyOrder.count == instances.count else {
            throw InvalidResult("the strategy returned \(keyOrder.count) keys for \(instances.count) instances")
        }
        var seen = Array(repeating: false, count: instances.count)
        for index in keyOrder {
            guard Int(index) < instances.count else {
                throw InvalidResult("the strategy's key order names instance index \(index), but there are \(instances.count) instances")
            }
            guard !seen[Int(index)] else {
                throw InvalidResult("the strategy's key order lists instance '\(instances[Int(index)])' twice")
            }
            seen[Int(index)] = true
        }
        var itemOwners: [Int?] = []
        itemOwners.reserveCapacity(owners.count)
        for (item, owner) in owners.enumerated() {
            if owner == -1 {
                itemOwners.append(nil)
            } else if owner >= 0, Int(owner) < instances.count {
                itemOwners.append(Int(owner))
            } else {
                throw InvalidResult("the strategy gave item \(item) the owner index \(owner), but there are \(instances.count) instances")
            }
        }
        self.init(instances: instances, keyOrder: keyOrder.map(Int.init), owners: itemOwners)
    }
}
