import Foundation
import ShardworkCore
import Synchronization
import Testing

// The embedded registry against ZooKeeper's rules. Every call completes without suspending and
// watchers run before the write that fired them returns (in a single-threaded test), so the tests
// assert what happened, never how long it took.

/// A clock the test moves by hand.
final class TestClock: Sendable {
    private let value: Mutex<Int64>

    init(_ start: Int64 = 1_700_000_000_000) { value = Mutex(start) }

    var now: Int64 { value.withLock { $0 } }

    func advance(by milliseconds: Int64) { value.withLock { $0 += milliseconds } }
}

/// Watch events as they arrive, each with the label of the watcher that got it.
final class EventLog: Sendable {
    struct Entry: Equatable, CustomStringConvertible {
        var label: String
        var event: WatchEvent
        var description: String { "\(label): \(event.kind) \(event.path)" }
    }

    private let recorded = Mutex<[Entry]>([])

    var entries: [Entry] { recorded.withLock { $0 } }
    var events: [WatchEvent] { entries.map(\.event) }
    var isEmpty: Bool { entries.isEmpty }

    func watcher(_ label: String = "") -> Watcher {
        { event in self.recorded.withLock { $0.append(Entry(label: label, event: event)) } }
    }
}

private func bytes(_ text: String) -> [UInt8] { [UInt8](utf8: text) }

private func server(_ clock: TestClock = TestClock()) -> EmbeddedRegistryServer {
    EmbeddedRegistryServer(clock: { clock.now })
}

/// The transaction id the next successful write will get, read by making one.
private func nextTransaction(_ registry: EmbeddedRegistry) async throws -> Int64 {
    let path = try await registry.create("/probe-", data: [], mode: .persistentSequential)
    let stat = try #require(try await registry.exists(path, watch: nil))
    try await registry.delete(path, version: nil)
    return stat.createdTransaction
}

// MARK: - Paths

@Suite("EmbeddedRegistry: paths", .timeLimit(.minutes(1)))
struct EmbeddedRegistryPathTests {
    static let invalid = [
        "", "a", "a/b", "/a/", "//", "/a//b", "/.", "/..", "/a/.", "/a/..", "/./a", "/../a", "/a/./b",
        "/a\u{0}b", "/a\u{1}", "/a\u{1F}", "/a\u{7F}", "/a\u{85}", "/\u{E000}", "/\u{F8FF}", "/\u{FFF0}",
        "/\u{1F600}",
    ]

    @Test("every call refuses a malformed path with .invalidPath", arguments: invalid)
    func invalidEverywhere(_ path: String) async throws {
        let registry = EmbeddedRegistry.standalone()
        let refused = RegistryError(.invalidPath, path: path)
        await #expect(throws: refused) { try await registry.create(path, data: [], mode: .persistent) }
        await #expect(throws: refused) { try await registry.create(path, data: [], mode: .ephemeral) }
        await #expect(throws: refused) { try await registry.delete(path, version: nil) }
        await #expect(throws: refused) { try await registry.setData(path, data: [], version: nil) }
        await #expect(throws: refused) { try await registry.data(path, watch: nil) }
        await #expect(throws: refused) { try await registry.exists(path, watch: nil) }
        await #expect(throws: refused) { try await registry.children(path, watch: nil) }
        for operation: RegistryOperation in [
            .create(path, data: [], mode: .persistent), .delete(path, version: nil),
            .setData(path, data: [], version: nil), .check(path, version: nil),
        ] {
            await #expect(throws: RegistryError(.transactionFailed(index: 1, underlying: .invalidPath), path: path)) {
                try await registry.multi([.create("/fine", data: [], mode: .persistent), operation])
            }
        }
        #expect(try await registry.exists("/fine", watch: nil) == nil)
    }

    @Test("names ZooKeeper accepts: dots inside names, spaces, accented letters", arguments: [
        "/.a", "/a.", "/...", "/a..b", "/.hidden.", "/a b", "/ünïcødé", "/\u{A0}", "/\u{FFEF}", "/a-b_c:d@e",
    ])
    func validNames(_ path: String) async throws {
        let registry = EmbeddedRegistry.standalone()
        #expect(try await registry.create(path, data: bytes(path), mode: .persistent) == path)
        #expect(try await registry.data(path, watch: nil).data == bytes(path))
        #expect(try await registry.children("/", watch: nil) == [String(path.dropFirst())])
    }

    @Test("a sequential create may end in / or in a dot segment: the counter completes the name")
    func sequentialPrefixes() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/jobs", data: [], mode: .persistent)
        #expect(try await registry.create("/jobs/", data: [], mode: .persistentSequential) == "/jobs/0000000000")
        #expect(try await registry.create("/jobs/.", data: [], mode: .persistentSequential) == "/jobs/.0000000001")
        #expect(try await registry.create("/jobs/..", data: [], mode: .ephemeralSequential) == "/jobs/..0000000002")
        #expect(try await registry.create("/", data: [], mode: .persistentSequential) == "/0000000001")
        await #expect(throws: RegistryError(.invalidPath, path: "/jobs/")) {
            try await registry.create("/jobs/", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.invalidPath, path: "/jobs//")) {
            try await registry.create("/jobs//", data: [], mode: .persistentSequential)
        }
        await #expect(throws: RegistryError(.invalidPath, path: "/jobs/")) {
            try await registry.data("/jobs/", watch: nil)
        }
    }
}

// MARK: - Nodes

@Suite("EmbeddedRegistry: nodes", .timeLimit(.minutes(1)))
struct EmbeddedRegistryNodeTests {
    @Test("create stores the data and returns the path; the parent lists the child")
    func createAndRead() async throws {
        let registry = EmbeddedRegistry.standalone()
        #expect(try await registry.create("/job", data: bytes("config"), mode: .persistent) == "/job")
        #expect(try await registry.create("/job/a", data: [], mode: .persistent) == "/job/a")
        #expect(try await registry.create("/job/b", data: [1, 2, 3], mode: .ephemeral) == "/job/b")
        #expect(try await registry.data("/job", watch: nil).data == bytes("config"))
        #expect(try await registry.string("/job/b") == "\u{1}\u{2}\u{3}")
        #expect(try await registry.string("/job/missing") == nil)
        #expect(Set(try await registry.children("/job", watch: nil)) == ["a", "b"])
        #expect(try await registry.children("/job/a", watch: nil) == [])
        #expect(try await registry.children("/", watch: nil) == ["job"])
    }

    @Test("create needs the parent: .noNode with the path being created")
    func createNeedsParent() async throws {
        let registry = EmbeddedRegistry.standalone()
        await #expect(throws: RegistryError(.noNode, path: "/a/b")) {
            try await registry.create("/a/b", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.noNode, path: "/a/b-")) {
            try await registry.create("/a/b-", data: [], mode: .ephemeralSequential)
        }
        #expect(try await registry.exists("/a", watch: nil) == nil)
    }

    @Test("create of an existing node, or of the root, is .nodeExists")
    func createExisting() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/a", data: bytes("first"), mode: .persistent)
        await #expect(throws: RegistryError(.nodeExists, path: "/a")) {
            try await registry.create("/a", data: bytes("second"), mode: .persistent)
        }
        await #expect(throws: RegistryError(.nodeExists, path: "/a")) {
            try await registry.create("/a", data: [], mode: .ephemeral)
        }
        await #expect(throws: RegistryError(.nodeExists, path: "/")) {
            try await registry.create("/", data: [], mode: .persistent)
        }
        #expect(try await registry.string("/a") == "first")
    }

    @Test("an ephemeral node cannot have children, in any mode", arguments: CreateMode.allCases)
    func noChildrenForEphemerals(_ mode: CreateMode) async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/e", data: [], mode: .ephemeral)
        await #expect(throws: RegistryError(.noChildrenForEphemerals, path: "/e/child")) {
            try await registry.create("/e/child", data: [], mode: mode)
        }
        #expect(try await registry.exists("/e", watch: nil)?.childCount == 0)
        #expect(try await registry.exists("/e", watch: nil)?.childrenVersion == 0)
    }

    @Test("delete: .noNode, .notEmpty, .badVersion (checked before children), versions, root refused")
    func deleteRules() async throws {
        let registry = EmbeddedRegistry.standalone()
        await #expect(throws: RegistryError(.noNode, path: "/a")) { try await registry.delete("/a", version: nil) }
        await #expect(throws: RegistryError(.noNode, path: "/a/b")) { try await registry.delete("/a/b", version: nil) }
        try await registry.create("/a", data: [], mode: .persistent)
        try await registry.create("/a/b", data: [], mode: .persistent)
        await #expect(throws: RegistryError(.notEmpty, path: "/a")) { try await registry.delete("/a", version: nil) }
        await #expect(throws: RegistryError(.notEmpty, path: "/a")) { try await registry.delete("/a", version: 0) }
        await #expect(throws: RegistryError(.badVersion, path: "/a")) { try await registry.delete("/a", version: 3) }
        await #expect(throws: RegistryError(.invalidPath, path: "/")) { try await registry.delete("/", version: nil) }

        try await registry.setData("/a/b", data: [], version: nil)
        await #expect(throws: RegistryError(.badVersion, path: "/a/b")) { try await registry.delete("/a/b", version: 0) }
        try await registry.delete("/a/b", version: 1)
        try await registry.delete("/a", version: -1)
        #expect(try await registry.exists("/a", watch: nil) == nil)
        #expect(try await registry.children("/", watch: nil) == [])
    }

    @Test("setData: .noNode, .badVersion, a matching version, -1 and nil mean any")
    func setDataRules() async throws {
        let registry = EmbeddedRegistry.standalone()
        await #expect(throws: RegistryError(.noNode, path: "/a")) {
            try await registry.setData("/a", data: [], version: nil)
        }
        try await registry.create("/a", data: bytes("0"), mode: .persistent)
        #expect(try await registry.setData("/a", data: bytes("1"), version: 0).version == 1)
        await #expect(throws: RegistryError(.badVersion, path: "/a")) {
            try await registry.setData("/a", data: bytes("x"), version: 0)
        }
        #expect(try await registry.setData("/a", data: bytes("2"), version: -1).version == 2)
        #expect(try await registry.setData("/a", data: bytes("3"), version: nil).version == 3)
        #expect(try await registry.string("/a") == "3")
        #expect(try await registry.setData("/", data: bytes("root"), version: 0).version == 1)
    }

    @Test("reads of a missing node: data and children throw .noNode, exists returns nil")
    func missingReads() async throws {
        let registry = EmbeddedRegistry.standalone()
        await #expect(throws: RegistryError(.noNode, path: "/x")) { try await registry.data("/x", watch: nil) }
        await #expect(throws: RegistryError(.noNode, path: "/x")) { try await registry.children("/x", watch: nil) }
        #expect(try await registry.exists("/x", watch: nil) == nil)
    }

    @Test("ephemeralOwner is the creating session for ephemeral nodes, 0 otherwise")
    func ephemeralOwner() async throws {
        let host = EmbeddedRegistry.standalone()
        let other = host.server.connect()
        let id = try #require(host.sessionID)
        try await host.create("/p", data: [], mode: .persistent)
        try await host.create("/e", data: [], mode: .ephemeral)
        let sequential = try await host.create("/s-", data: [], mode: .ephemeralSequential)
        try await other.create("/o", data: [], mode: .ephemeral)
        #expect(try await host.exists("/p", watch: nil)?.ephemeralOwner == 0)
        #expect(try await host.exists("/e", watch: nil)?.ephemeralOwner == id)
        #expect(try await host.exists(sequential, watch: nil)?.ephemeralOwner == id)
        #expect(try await host.exists("/o", watch: nil)?.ephemeralOwner == other.sessionID)
        #expect(other.sessionID != id)
    }
}

// MARK: - Stats and transactions

@Suite("EmbeddedRegistry: stats and transaction ids", .timeLimit(.minutes(1)))
struct EmbeddedRegistryStatTests {
    @Test("the root starts with an all-zero stat")
    func rootStat() async throws {
        let registry = EmbeddedRegistry.standalone()
        #expect(try await registry.exists("/", watch: nil) == NodeStat(
            createdTransaction: 0, modifiedTransaction: 0, createdTime: 0, modifiedTime: 0, version: 0,
            childrenVersion: 0, ephemeralOwner: 0, dataLength: 0, childCount: 0))
    }

    @Test("create and setData fill the stat from the transaction id and the server's clock")
    func createAndSetStat() async throws {
        let clock = TestClock(5_000)
        let registry = server(clock).connect()
        try await registry.create("/job", data: bytes("abc"), mode: .persistent)
        #expect(try await registry.data("/job", watch: nil).stat == NodeStat(
            createdTransaction: 1, modifiedTransaction: 1, createdTime: 5_000, modifiedTime: 5_000, version: 0,
            childrenVersion: 0, ephemeralOwner: 0, dataLength: 3, childCount: 0))

        clock.advance(by: 250)
        let set = try await registry.setData("/job", data: bytes("abcdef"), version: 0)
        let expected = NodeStat(
            createdTransaction: 1, modifiedTransaction: 2, createdTime: 5_000, modifiedTime: 5_250, version: 1,
            childrenVersion: 0, ephemeralOwner: 0, dataLength: 6, childCount: 0)
        #expect(set == expected)
        #expect(try await registry.data("/job", watch: nil).stat == expected)

        try await registry.setData("/job", data: [], version: nil)
        #expect(try await registry.exists("/job", watch: nil)?.dataLength == 0)
        #expect(try await registry.exists("/job", watch: nil)?.version == 2)
    }

    @Test("children change childrenVersion and childCount (deletions too), not the parent's data stat")
    func parentStat() async throws {
        let clock = TestClock(100)
        let registry = server(clock).connect()
        try await registry.create("/p", data: bytes("x"), mode: .persistent)
        let before = try #require(try await registry.exists("/p", watch: nil))
        clock.advance(by: 10)
        try await registry.create("/p/a", data: [], mode: .persistent)
        try await registry.create("/p/b", data: [], mode: .ephemeral)
        try await registry.create("/p/c", data: [], mode: .persistent)
        try await registry.create("/p/a/deeper", data: [], mode: .persistent)
        var stat = try #require(try await registry.exists("/p", watch: nil))
        #expect(stat.childrenVersion == 3)
        #expect(stat.childCount == 3)

        try await registry.delete("/p/b", version: nil)
        try await registry.setData("/p/c", data: bytes("child data"), version: nil)
        stat = try #require(try await registry.exists("/p", watch: nil))
        #expect(stat.childrenVersion == 4)
        #expect(stat.childCount == 2)
        #expect(stat.version == before.version)
        #expect(stat.modifiedTransaction == before.modifiedTransaction)
        #expect(stat.modifiedTime == before.modifiedTime)
        #expect(stat.dataLength == 1)
        #expect(try await registry.exists("/p/a", watch: nil)?.childrenVersion == 1)
    }

    @Test("the transaction id rises once per successful write; refused writes and reads take none")
    func transactionIDs() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/a", data: [], mode: .persistent)
        #expect(try await registry.exists("/a", watch: nil)?.createdTransaction == 1)
        await #expect(throws: RegistryError(.nodeExists, path: "/a")) {
            try await registry.create("/a", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.badVersion, path: "/a")) {
            try await registry.setData("/a", data: [], version: 9)
        }
        await #expect(throws: RegistryError(.transactionFailed(index: 0, underlying: .noNode), path: "/x")) {
            try await registry.multi([.check("/x", version: nil)])
        }
        _ = try await registry.data("/a", watch: nil)
        _ = try await registry.children("/", watch: nil)
        #expect(try await registry.setData("/a", data: [1], version: nil).modifiedTransaction == 2)
        try await registry.create("/b", data: [], mode: .persistent)
        try await registry.delete("/b", version: nil)
        #expect(try await nextTransaction(registry) == 5)
        #expect(try await registry.multi([]) == [])
        #expect(try await nextTransaction(registry) == 7)
    }

    @Test("every operation of a multi has the same transaction id and time")
    func multiSharesTransaction() async throws {
        let clock = TestClock(42)
        let registry = server(clock).connect()
        try await registry.create("/a", data: [], mode: .persistent)
        clock.advance(by: 8)
        let results = try await registry.multi([
            .create("/b", data: [], mode: .persistent),
            .setData("/a", data: [1], version: 0),
            .create("/b/c", data: [], mode: .ephemeral),
            .check("/a", version: 1),
        ])
        guard case .set(let setStat) = results[1] else {
            Issue.record("expected a set result, got \(results)")
            return
        }
        let b = try #require(try await registry.exists("/b", watch: nil))
        let c = try #require(try await registry.exists("/b/c", watch: nil))
        #expect(setStat.modifiedTransaction == 2)
        #expect(b.createdTransaction == 2)
        #expect(c.createdTransaction == 2)
        #expect([setStat.modifiedTime, b.createdTime, c.createdTime] == [50, 50, 50])
        #expect(try await nextTransaction(registry) == 3)
    }
}

// MARK: - Sequential nodes

@Suite("EmbeddedRegistry: sequential nodes", .timeLimit(.minutes(1)))
struct EmbeddedRegistrySequentialTests {
    @Test("names take ten zero-padded digits from the parent's count of child creations, of any mode")
    func numbering() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/q", data: [], mode: .persistent)
        #expect(try await registry.create("/q/job-", data: [], mode: .persistentSequential) == "/q/job-0000000000")
        #expect(try await registry.create("/q/job-", data: [], mode: .ephemeralSequential) == "/q/job-0000000001")
        try await registry.create("/q/plain", data: [], mode: .persistent)
        #expect(try await registry.create("/q/other", data: [], mode: .persistentSequential) == "/q/other0000000003")
        #expect(Set(try await registry.children("/q", watch: nil))
            == ["job-0000000000", "job-0000000001", "plain", "other0000000003"])
    }

    @Test("after deletions the next name continues the creations count, while childrenVersion counts both")
    func afterDeletions() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/q", data: [], mode: .persistent)
        let first = try await registry.create("/q/n-", data: [], mode: .persistentSequential)
        let second = try await registry.create("/q/n-", data: [], mode: .persistentSequential)
        try await registry.delete(first, version: nil)
        #expect(try await registry.exists("/q", watch: nil)?.childrenVersion == 3)
        #expect(try await registry.create("/q/n-", data: [], mode: .persistentSequential) == "/q/n-0000000002")
        try await registry.delete(second, version: nil)
        try await registry.delete("/q/n-0000000002", version: nil)
        #expect(try await registry.exists("/q", watch: nil)?.childrenVersion == 6)
        #expect(try await registry.exists("/q", watch: nil)?.childCount == 0)
        #expect(try await registry.create("/q/n-", data: [], mode: .persistentSequential) == "/q/n-0000000003")
    }

    @Test("a taken sequential name is .nodeExists, again and again until another child is created")
    func takenName() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/q", data: [], mode: .persistent)
        try await registry.create("/q/n-0000000001", data: [], mode: .persistent)
        // A refused create leaves the counter where it was, so the same name is tried again.
        for _ in 0..<2 {
            await #expect(throws: RegistryError(.nodeExists, path: "/q/n-")) {
                try await registry.create("/q/n-", data: [], mode: .persistentSequential)
            }
        }
        try await registry.create("/q/other", data: [], mode: .persistent)
        #expect(try await registry.create("/q/n-", data: [], mode: .persistentSequential) == "/q/n-0000000002")
    }

    @Test("in a multi, each create sees the counter the earlier ones left; a failed multi spends none")
    func inMulti() async throws {
        let registry = EmbeddedRegistry.standalone()
        let results = try await registry.multi([
            .create("/q", data: [], mode: .persistent),
            .create("/q/n-", data: [], mode: .persistentSequential),
            .create("/q/n-", data: [], mode: .ephemeralSequential),
            .delete("/q/n-0000000000", version: nil),
            .create("/q/n-", data: [], mode: .persistentSequential),
        ])
        #expect(results == [
            .created(path: "/q"), .created(path: "/q/n-0000000000"), .created(path: "/q/n-0000000001"), .deleted,
            .created(path: "/q/n-0000000002"),
        ])
        await #expect(throws: RegistryError(.transactionFailed(index: 2, underlying: .noNode), path: "/missing/x")) {
            try await registry.multi([
                .create("/q/n-", data: [], mode: .persistentSequential),
                .create("/q/n-", data: [], mode: .persistentSequential),
                .create("/missing/x", data: [], mode: .persistent),
            ])
        }
        #expect(try await registry.create("/q/n-", data: [], mode: .persistentSequential) == "/q/n-0000000003")
        #expect(try await registry.exists("/q", watch: nil)?.childrenVersion == 5)
    }

    @Test("sessions creating concurrently under one parent get distinct consecutive names")
    func concurrentCreates() async throws {
        let server = EmbeddedRegistryServer()
        let setup = server.connect()
        try await setup.create("/q", data: [], mode: .persistent)
        let hosts = (0..<8).map { _ in server.connect() }
        let names = try await withThrowingTaskGroup(of: [String].self) { group in
            for host in hosts {
                group.addTask {
                    var created: [String] = []
                    for _ in 0..<250 { created.append(try await host.create("/q/n-", data: [], mode: .ephemeralSequential)) }
                    return created
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(names).count == 2_000)
        #expect(Set(names) == Set((0..<2_000).map { "/q/n-" + String(format: "%010d", $0) }))
        #expect(try await setup.exists("/q", watch: nil)?.childCount == 2_000)
        for host in hosts { await host.close() }
        #expect(try await setup.exists("/q", watch: nil)?.childCount == 0)
        #expect(try await setup.exists("/q", watch: nil)?.childrenVersion == 4_000)
    }
}

// MARK: - multi

@Suite("EmbeddedRegistry: multi", .timeLimit(.minutes(1)))
struct EmbeddedRegistryMultiTests {
    @Test("results come in the order of the operations, and later operations see earlier ones")
    func resultsAndVisibility() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/old", data: bytes("old"), mode: .persistent)
        let results = try await registry.multi([
            .create("/a", data: [], mode: .persistent),
            .create("/a/b", data: bytes("b"), mode: .persistent),
            .setData("/a/b", data: bytes("b1"), version: 0),
            .setData("/a/b", data: bytes("b2"), version: 1),
            .check("/a/b", version: 2),
            .delete("/old", version: 0),
            .create("/old", data: bytes("new"), mode: .ephemeral),
            .check("/old", version: nil),
        ])
        guard results.count == 8, case .set(let first) = results[2], case .set(let second) = results[3] else {
            Issue.record("unexpected results \(results)")
            return
        }
        #expect(results[0] == .created(path: "/a"))
        #expect(results[1] == .created(path: "/a/b"))
        #expect(first.version == 1)
        #expect(second.version == 2)
        #expect(Array(results[4...]) == [.checked, .deleted, .created(path: "/old"), .checked])
        #expect(try await registry.string("/a/b") == "b2")
        #expect(try await registry.string("/old") == "new")
        #expect(try await registry.exists("/old", watch: nil)?.ephemeralOwner == registry.sessionID)
    }

    @Test("check: succeeds on an existing node at the version; .noNode and .badVersion otherwise")
    func check() async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/a", data: [], mode: .persistent)
        #expect(try await registry.multi([.check("/a", version: nil), .check("/a", version: 0), .check("/", version: -1)])
            == [.checked, .checked, .checked])
        await #expect(throws: RegistryError(.transactionFailed(index: 0, underlying: .badVersion), path: "/a")) {
            try await registry.multi([.check("/a", version: 1)])
        }
        await #expect(throws: RegistryError(.transactionFailed(index: 1, underlying: .noNode), path: "/b")) {
            try await registry.multi([.check("/a", version: 0), .check("/b", version: nil)])
        }
    }

    @Test("a third operation failing leaves the first two unapplied and fires no watch")
    func atomicity() async throws {
        let registry = EmbeddedRegistry.standalone()
        let watcher = registry.server.connect()
        let log = EventLog()
        try await registry.create("/p", data: bytes("p"), mode: .persistent)
        try await registry.create("/p/gone", data: bytes("g"), mode: .persistent)
        let parentBefore = try #require(try await registry.exists("/p", watch: nil))
        let goneBefore = try #require(try await registry.exists("/p/gone", watch: nil))
        _ = try await watcher.data("/p", watch: log.watcher())
        _ = try await watcher.children("/p", watch: log.watcher())
        _ = try await watcher.exists("/p/new", watch: log.watcher())
        _ = try await watcher.data("/p/gone", watch: log.watcher())
        let next = try await nextTransaction(registry)

        await #expect(throws: RegistryError(.transactionFailed(index: 2, underlying: .nodeExists), path: "/p")) {
            try await registry.multi([
                .create("/p/new", data: [], mode: .ephemeral),
                .delete("/p/gone", version: 0),
                .create("/p", data: [], mode: .persistent),
            ])
        }
        await #expect(throws: RegistryError(.transactionFailed(index: 2, underlying: .badVersion), path: "/p")) {
            try await registry.multi([
                .setData("/p", data: bytes("changed"), version: 0),
                .create("/p/new-", data: [], mode: .persistentSequential),
                .setData("/p", data: bytes("again"), version: 0),
            ])
        }
        #expect(log.isEmpty)
        #expect(try await registry.exists("/p/new", watch: nil) == nil)
        #expect(try await registry.exists("/p", watch: nil) == parentBefore)
        #expect(try await registry.exists("/p/gone", watch: nil) == goneBefore)
        #expect(try await registry.string("/p/gone") == "g")
        #expect(try await registry.string("/p") == "p")
        #expect(try await registry.children("/p", watch: nil) == ["gone"])
        // The probe's create and delete took two transactions; the refused multis none.
        #expect(try await nextTransaction(registry) == next + 2)

        // The watches are still armed: the failed multis did not consume them.
        try await registry.setData("/p", data: [], version: nil)
        #expect(log.events == [WatchEvent(.dataChanged, "/p")])
    }

    @Test("a rolled-back delete restores an ephemeral node to its session")
    func rollbackRestoresEphemeral() async throws {
        let registry = EmbeddedRegistry.standalone()
        let other = registry.server.connect()
        try await registry.create("/e", data: bytes("e"), mode: .ephemeral)
        await #expect(throws: RegistryError(.transactionFailed(index: 1, underlying: .noNode), path: "/nope")) {
            try await registry.multi([.delete("/e", version: nil), .delete("/nope", version: nil)])
        }
        #expect(try await other.exists("/e", watch: nil)?.ephemeralOwner == registry.sessionID)
        registry.expire()
        #expect(try await other.exists("/e", watch: nil) == nil)
    }

    @Test("each refusal is reported with its index, code and path", arguments: [
        (RegistryOperation.create("/missing/child", data: [], mode: .persistent), RegistryError.Code.noNode),
        (.create("/a", data: [], mode: .persistent), .nodeExists),
        (.create("/e/child", data: [], mode: .persistent), .noChildrenForEphemerals),
        (.delete("/a", version: nil), .notEmpty),
        (.delete("/a/b", version: 5), .badVersion),
        (.delete("/missing", version: nil), .noNode),
        (.delete("/", version: nil), .invalidPath),
        (.setData("/missing", data: [], version: nil), .noNode),
        (.setData("/a", data: [], version: 1), .badVersion),
        (.check("/a/b", version: 2), .badVersion),
        (.create("/a/", data: [], mode: .persistent), .invalidPath),
    ])
    func refusals(_ operation: RegistryOperation, _ code: RegistryError.Code) async throws {
        let registry = EmbeddedRegistry.standalone()
        try await registry.create("/a", data: [], mode: .persistent)
        try await registry.create("/a/b", data: [], mode: .persistent)
        try await registry.create("/e", data: [], mode: .ephemeral)
        await #expect(throws: RegistryError(.transactionFailed(index: 1, underlying: code), path: operation.path)) {
            try await registry.multi([.create("/first", data: [], mode: .persistent), operation])
        }
        #expect(try await registry.exists("/first", watch: nil) == nil)
    }

    @Test("the watches of a multi fire once each, after it is applied, in the order of the changes")
    func watchesAfterMulti() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        try await registry.create("/a", data: [], mode: .persistent)
        try await registry.create("/p", data: [], mode: .persistent)
        _ = try await registry.data("/a", watch: log.watcher("a"))
        _ = try await registry.children("/p", watch: log.watcher("p"))
        _ = try await registry.exists("/b", watch: log.watcher("b"))
        try await registry.multi([
            .setData("/a", data: [1], version: nil),
            .create("/p/x", data: [], mode: .persistent),
            .setData("/a", data: [2], version: nil),
            .create("/b", data: [], mode: .persistent),
            .create("/p/y", data: [], mode: .persistent),
            .delete("/b", version: nil),
        ])
        #expect(log.entries.map(\.description) == ["a: dataChanged /a", "p: childrenChanged /p", "b: created /b"])
    }
}

// MARK: - Watches

@Suite("EmbeddedRegistry: watches", .timeLimit(.minutes(1)))
struct EmbeddedRegistryWatchTests {
    @Test("a data watch fires dataChanged once on setData")
    func dataWatchOnSet() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        try await registry.create("/a", data: [], mode: .persistent)
        _ = try await registry.data("/a", watch: log.watcher())
        try await registry.setData("/a", data: [1], version: nil)
        try await registry.setData("/a", data: [2], version: nil)
        try await registry.delete("/a", version: nil)
        #expect(log.events == [WatchEvent(.dataChanged, "/a")])
    }

    @Test("a data watch fires deleted on delete, and ignores the node's children")
    func dataWatchOnDelete() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        try await registry.create("/a", data: [], mode: .persistent)
        _ = try await registry.data("/a", watch: log.watcher())
        try await registry.create("/a/child", data: [], mode: .persistent)
        try await registry.delete("/a/child", version: nil)
        #expect(log.isEmpty)
        try await registry.delete("/a", version: nil)
        try await registry.create("/a", data: [], mode: .persistent)
        #expect(log.events == [WatchEvent(.deleted, "/a")])
    }

    @Test("an exists watch on an existing node fires on its data change or deletion")
    func existsWatchOnExisting() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        try await registry.create("/a", data: [], mode: .persistent)
        try await registry.create("/b", data: [], mode: .persistent)
        #expect(try await registry.exists("/a", watch: log.watcher("a")) != nil)
        #expect(try await registry.exists("/b", watch: log.watcher("b")) != nil)
        try await registry.setData("/a", data: [1], version: nil)
        try await registry.delete("/b", version: nil)
        try await registry.delete("/a", version: nil)
        #expect(log.entries.map(\.description) == ["a: dataChanged /a", "b: deleted /b"])
    }

    @Test("an exists watch on a missing node fires created once")
    func existsWatchOnMissing() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        #expect(try await registry.exists("/a", watch: log.watcher()) == nil)
        try await registry.create("/a", data: [], mode: .ephemeral)
        try await registry.setData("/a", data: [1], version: nil)
        try await registry.delete("/a", version: nil)
        #expect(log.events == [WatchEvent(.created, "/a")])
    }

    @Test("data and children on a missing node set no watch")
    func noWatchOnMissing() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        await #expect(throws: RegistryError(.noNode, path: "/a")) { try await registry.data("/a", watch: log.watcher()) }
        await #expect(throws: RegistryError(.noNode, path: "/a")) { try await registry.children("/a", watch: log.watcher()) }
        try await registry.create("/a", data: [], mode: .persistent)
        try await registry.create("/a/b", data: [], mode: .persistent)
        #expect(log.isEmpty)
    }

    @Test("a child watch fires childrenChanged once on a child's creation or deletion, deleted on the node's")
    func childWatch() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        try await registry.create("/p", data: [], mode: .persistent)
        _ = try await registry.children("/p", watch: log.watcher("create"))
        try await registry.create("/p/a", data: [], mode: .persistent)
        try await registry.create("/p/b", data: [], mode: .persistent)
        _ = try await registry.children("/p", watch: log.watcher("delete"))
        try await registry.setData("/p/a", data: [1], version: nil)
        try await registry.setData("/p", data: [1], version: nil)
        try await registry.create("/p/a/grandchild", data: [], mode: .persistent)
        #expect(log.entries.map(\.description) == ["create: childrenChanged /p"])
        try await registry.delete("/p/b", version: nil)
        _ = try await registry.children("/p", watch: log.watcher("node"))
        try await registry.delete("/p/a/grandchild", version: nil)
        try await registry.delete("/p/a", version: nil)
        _ = try await registry.children("/p", watch: log.watcher("gone"))
        try await registry.delete("/p", version: nil)
        #expect(log.entries.map(\.description) == [
            "create: childrenChanged /p", "delete: childrenChanged /p", "node: childrenChanged /p", "gone: deleted /p",
        ])
    }

    @Test("the root's child watch sees top-level nodes")
    func rootChildren() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        _ = try await registry.children("/", watch: log.watcher())
        try await registry.create("/top", data: [], mode: .persistent)
        #expect(log.events == [WatchEvent(.childrenChanged, "/")])
    }

    @Test("each registration fires, even of the same watcher; data and child watches both see a deletion")
    func registrationsAreSeparate() async throws {
        let registry = EmbeddedRegistry.standalone()
        let log = EventLog()
        let shared = log.watcher("shared")
        try await registry.create("/a", data: [], mode: .persistent)
        _ = try await registry.data("/a", watch: shared)
        _ = try await registry.data("/a", watch: shared)
        _ = try await registry.exists("/a", watch: log.watcher("exists"))
        _ = try await registry.children("/a", watch: log.watcher("children"))
        try await registry.delete("/a", version: nil)
        #expect(log.entries.map(\.description) == [
            "shared: deleted /a", "shared: deleted /a", "exists: deleted /a", "children: deleted /a",
        ])
    }

    @Test("watches set by one session fire on changes made by another of the same server")
    func acrossSessions() async throws {
        let server = EmbeddedRegistryServer()
        let first = server.connect()
        let second = server.connect()
        let log = EventLog()
        try await first.create("/job", data: [], mode: .persistent)
        _ = try await first.data("/job", watch: log.watcher("first"))
        _ = try await second.children("/job", watch: log.watcher("second"))
        try await second.setData("/job", data: [1], version: nil)
        try await first.create("/job/instance", data: [], mode: .ephemeral)
        #expect(log.entries.map(\.description) == ["first: dataChanged /job", "second: childrenChanged /job"])
    }

    @Test("watchers run with the lock released: they may call the registry and the server")
    func watchersRunUnlocked() async throws {
        let registry = EmbeddedRegistry.standalone()
        let seen = Mutex<[String]>([])
        try await registry.create("/a", data: [], mode: .persistent)
        _ = try await registry.data("/a", watch: { event in
            let id = registry.sessionID
            let another = registry.server.connect()
            seen.withLock { $0.append("\(event.kind) with session \(id.map(String.init) ?? "none"), opened \(another.sessionID ?? 0)") }
        })
        let id = try #require(registry.sessionID)
        try await registry.setData("/a", data: [1], version: nil)
        #expect(seen.withLock { $0 } == ["dataChanged with session \(id), opened \(id + 1)"])
    }

    @Test("a watcher that causes more changes sees their events after its own, in order")
    func reentrantDelivery() async throws {
        let server = EmbeddedRegistryServer()
        let observer = server.connect()
        let doomed = server.connect()
        let log = EventLog()
        try await observer.create("/trigger", data: [], mode: .persistent)
        try await doomed.create("/lease", data: [], mode: .ephemeral)
        let record = log.watcher("trigger")
        _ = try await observer.data("/trigger", watch: { event in
            record(event)
            doomed.expire()
        })
        _ = try await observer.exists("/lease", watch: log.watcher("lease"))
        _ = try await observer.children("/", watch: log.watcher("root"))
        try await observer.setData("/trigger", data: [1], version: nil)
        #expect(log.entries.map(\.description) == [
            "trigger: dataChanged /trigger", "lease: deleted /lease", "root: childrenChanged /",
        ])
    }
}

// MARK: - Concurrency

@Suite("EmbeddedRegistry: concurrent writers", .timeLimit(.minutes(1)))
struct EmbeddedRegistryConcurrencyTests {
    @Test("under concurrent writers each watch fires once")
    func oneShotUnderConcurrency() async throws {
        let server = EmbeddedRegistryServer()
        let observer = server.connect()
        let log = EventLog()
        let paths = (0..<400).map { "/n\($0)" }
        for path in paths {
            try await observer.create(path, data: [], mode: .persistent)
            _ = try await observer.data(path, watch: log.watcher())
        }
        let writers = (0..<4).map { _ in server.connect() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, writer) in writers.enumerated() {
                group.addTask {
                    // Every node is written twice, by two writers, so each watch races its second change.
                    for path in paths.indices where path % 2 == index % 2 {
                        try await writer.setData(paths[path], data: [UInt8(index)], version: nil)
                    }
                }
            }
            try await group.waitForAll()
        }
        let fired = log.events.map(\.path)
        #expect(fired.count == paths.count)
        #expect(Set(fired) == Set(paths))
        #expect(log.events.allSatisfy { $0.kind == .dataChanged })
    }

    @Test("watchers are called in the order of the transactions that fired them, across threads")
    func commitOrderAcrossThreads() async throws {
        let server = EmbeddedRegistryServer()
        let observer = server.connect()
        let log = EventLog()
        let paths = (0..<2_000).map { "/n\($0)" }
        for path in paths {
            try await observer.create(path, data: [], mode: .persistent)
            _ = try await observer.data(path, watch: log.watcher())
        }
        let writers = (0..<4).map { _ in server.connect() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, writer) in writers.enumerated() {
                group.addTask {
                    for path in paths.indices where path % writers.count == index {
                        try await writer.setData(paths[path], data: [], version: nil)
                    }
                }
            }
            try await group.waitForAll()
        }
        // Each node was written once, so its modifiedTransaction is the write that fired its watch.
        var transactions: [String: Int64] = [:]
        for path in paths { transactions[path] = try #require(try await observer.exists(path, watch: nil)).modifiedTransaction }
        let fired = log.events.map(\.path)
        #expect(fired.count == paths.count)
        #expect(fired == paths.sorted { transactions[$0, default: 0] < transactions[$1, default: 0] })
    }
}

// MARK: - Sessions

@Suite("EmbeddedRegistry: sessions", .timeLimit(.minutes(1)))
struct EmbeddedRegistrySessionTests {
    @Test("sessions have distinct non-zero ids; every stream starts with the current state")
    func identities() async throws {
        let server = EmbeddedRegistryServer()
        let registries = (0..<5).map { _ in server.connect() }
        let ids = registries.compactMap(\.sessionID)
        #expect(ids.count == 5)
        #expect(Set(ids).count == 5)
        #expect(!ids.contains(0))
        for registry in registries {
            var first = registry.sessionStates().makeAsyncIterator()
            var second = registry.sessionStates().makeAsyncIterator()
            let expected = SessionState.connected(sessionID: try #require(registry.sessionID))
            #expect(await first.next() == expected)
            #expect(await second.next() == expected)
        }
        let lone = EmbeddedRegistry.standalone()
        #expect(lone.sessionID != nil)
        #expect(lone.server !== server)
    }

    @Test("sessions of one server share the tree; standalone registries do not")
    func sharedTree() async throws {
        let host = EmbeddedRegistry.standalone()
        let peer = host.server.connect()
        try await host.create("/shared", data: bytes("x"), mode: .persistent)
        #expect(try await peer.string("/shared") == "x")
        #expect(try await EmbeddedRegistry.standalone().string("/shared") == nil)
    }

    @Test("expiry deletes the ephemeral nodes in one transaction and fires other sessions' watches")
    func expiryDeletesEphemerals() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let log = EventLog()
        try await host.create("/job", data: [], mode: .persistent)
        try await host.create("/job/leader", data: [], mode: .ephemeral)
        let instance = try await host.create("/job/instance-", data: [], mode: .ephemeralSequential)
        try await host.create("/job/kept", data: [], mode: .persistent)
        _ = try await peer.data("/job/leader", watch: log.watcher("leader"))
        _ = try await peer.exists(instance, watch: log.watcher("instance"))
        _ = try await peer.children("/job", watch: log.watcher("children"))
        let lastBefore = try #require(try await peer.exists("/job/kept", watch: nil)).createdTransaction

        host.expire()

        #expect(Set(try await peer.children("/job", watch: nil)) == ["kept"])
        #expect(log.entries.map(\.description) == [
            "instance: deleted \(instance)", "children: childrenChanged /job", "leader: deleted /job/leader",
        ])
        #expect(try await nextTransaction(peer) == lastBefore + 2)
        #expect(try await peer.exists("/job", watch: nil)?.childrenVersion == 5)
    }

    @Test("after expiry: .expired on the streams, calls throw .sessionExpired, no id, own watches dropped")
    func afterExpiry() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let log = EventLog()
        var states = host.sessionStates().makeAsyncIterator()
        let id = try #require(host.sessionID)
        try await host.create("/a", data: [], mode: .persistent)
        _ = try await host.data("/a", watch: log.watcher())
        _ = try await host.exists("/b", watch: log.watcher())

        host.expire()
        host.expire()

        #expect(await states.next() == .connected(sessionID: id))
        #expect(await states.next() == .expired)
        #expect(host.sessionID == nil)
        var late = host.sessionStates().makeAsyncIterator()
        #expect(await late.next() == .expired)
        await #expect(throws: RegistryError(.sessionExpired, path: "/c")) {
            try await host.create("/c", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.sessionExpired, path: "/a")) { try await host.data("/a", watch: nil) }
        await #expect(throws: RegistryError(.sessionExpired)) { try await host.multi([]) }

        try await peer.setData("/a", data: [1], version: nil)
        try await peer.create("/b", data: [], mode: .persistent)
        #expect(log.isEmpty)
        #expect(try await peer.exists("/a", watch: nil) != nil)

        await host.close()
        #expect(await states.next() == .closed)
        #expect(await states.next() == nil)
        #expect(await late.next() == .closed)
        #expect(await late.next() == nil)
        await #expect(throws: RegistryError(.closed, path: "/a")) { try await host.data("/a", watch: nil) }
    }

    @Test("while disconnected: calls throw .connectionLoss and apply nothing; the session and its nodes survive")
    func disconnectAndReconnect() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let id = try #require(host.sessionID)
        var states = host.sessionStates().makeAsyncIterator()
        try await host.create("/e", data: [], mode: .ephemeral)

        host.disconnect()
        host.disconnect()

        #expect(await states.next() == .connected(sessionID: id))
        #expect(await states.next() == .disconnected)
        var late = host.sessionStates().makeAsyncIterator()
        #expect(await late.next() == .disconnected)
        #expect(host.sessionID == id)
        await #expect(throws: RegistryError(.connectionLoss, path: "/x")) {
            try await host.create("/x", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.connectionLoss, path: "/e")) { try await host.delete("/e", version: nil) }
        await #expect(throws: RegistryError(.connectionLoss, path: "/e")) { try await host.exists("/e", watch: nil) }
        await #expect(throws: RegistryError(.connectionLoss)) {
            try await host.multi([.create("/y", data: [], mode: .persistent)])
        }
        #expect(try await peer.exists("/x", watch: nil) == nil)
        #expect(try await peer.exists("/y", watch: nil) == nil)
        #expect(try await peer.exists("/e", watch: nil)?.ephemeralOwner == id)

        host.reconnect()
        host.reconnect()

        #expect(await states.next() == .connected(sessionID: id))
        #expect(await late.next() == .connected(sessionID: id))
        #expect(host.sessionID == id)
        try await host.delete("/e", version: nil)
        try await host.create("/x", data: [], mode: .persistent)
    }

    @Test("watches wait out a disconnection; on reconnection those that missed a change fire once")
    func watchesAcrossDisconnection() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let log = EventLog()
        for path in ["/changed", "/deleted", "/recreated", "/quiet", "/parent", "/still"] {
            try await peer.create(path, data: [], mode: .persistent)
        }
        _ = try await host.data("/changed", watch: log.watcher("changed"))
        _ = try await host.data("/deleted", watch: log.watcher("deleted"))
        _ = try await host.exists("/recreated", watch: log.watcher("recreated"))
        _ = try await host.data("/quiet", watch: log.watcher("quiet"))
        _ = try await host.exists("/born", watch: log.watcher("born"))
        _ = try await host.exists("/unborn", watch: log.watcher("unborn"))
        _ = try await host.children("/parent", watch: log.watcher("parent"))
        _ = try await host.children("/still", watch: log.watcher("still"))

        host.disconnect()
        try await peer.setData("/changed", data: [1], version: nil)
        try await peer.setData("/changed", data: [2], version: nil)
        try await peer.delete("/deleted", version: nil)
        try await peer.delete("/recreated", version: nil)
        try await peer.create("/recreated", data: [], mode: .persistent)
        try await peer.create("/born", data: [], mode: .persistent)
        try await peer.create("/unborn", data: [], mode: .persistent)
        try await peer.delete("/unborn", version: nil)
        try await peer.create("/parent/child", data: [], mode: .persistent)
        try await peer.setData("/still", data: [1], version: nil)
        #expect(log.isEmpty)

        host.reconnect()
        #expect(Set(log.entries.map(\.description)) == [
            "changed: dataChanged /changed", "deleted: deleted /deleted", "recreated: dataChanged /recreated",
            "born: created /born", "parent: childrenChanged /parent",
        ])
        #expect(log.entries.count == 5)

        // The watches that saw nothing are armed again.
        try await peer.setData("/quiet", data: [1], version: nil)
        try await peer.create("/unborn", data: [], mode: .persistent)
        try await peer.create("/still/child", data: [], mode: .persistent)
        #expect(Array(log.entries.map(\.description).dropFirst(5)) == [
            "quiet: dataChanged /quiet", "unborn: created /unborn", "still: childrenChanged /still",
        ])
    }

    @Test("expiry during a disconnection: the nodes go at once, the client learns it on reconnection")
    func expiryWhileDisconnected() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let log = EventLog()
        let id = try #require(host.sessionID)
        var states = host.sessionStates().makeAsyncIterator()
        try await host.create("/e", data: [], mode: .ephemeral)
        try await host.create("/a", data: [], mode: .persistent)
        _ = try await host.data("/a", watch: log.watcher("host"))
        _ = try await peer.exists("/e", watch: log.watcher("peer"))

        host.disconnect()
        host.expire()

        #expect(log.entries.map(\.description) == ["peer: deleted /e"])
        #expect(try await peer.exists("/e", watch: nil) == nil)
        #expect(host.sessionID == id)
        await #expect(throws: RegistryError(.connectionLoss, path: "/a")) { try await host.data("/a", watch: nil) }
        try await peer.setData("/a", data: [1], version: nil)

        host.reconnect()

        #expect(await states.next() == .connected(sessionID: id))
        #expect(await states.next() == .disconnected)
        #expect(await states.next() == .expired)
        #expect(host.sessionID == nil)
        await #expect(throws: RegistryError(.sessionExpired, path: "/a")) { try await host.data("/a", watch: nil) }
        #expect(log.entries.count == 1)
    }

    @Test("close deletes the ephemeral nodes, fires other sessions' watches, drops its own, finishes its streams")
    func close() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let log = EventLog()
        let id = try #require(host.sessionID)
        let states = host.sessionStates()
        try await host.create("/e", data: [], mode: .ephemeral)
        try await host.create("/p", data: [], mode: .persistent)
        _ = try await peer.exists("/e", watch: log.watcher("peer"))
        _ = try await host.data("/p", watch: log.watcher("host"))

        await host.close()
        await host.close()

        var seen: [SessionState] = []
        for await state in states { seen.append(state) }
        #expect(seen == [.connected(sessionID: id), .closed])
        var late: [SessionState] = []
        for await state in host.sessionStates() { late.append(state) }
        #expect(late == [.closed])
        #expect(host.sessionID == nil)
        #expect(log.entries.map(\.description) == ["peer: deleted /e"])
        try await peer.setData("/p", data: [1], version: nil)
        #expect(log.entries.count == 1)
        await #expect(throws: RegistryError(.closed, path: "/p")) { try await host.data("/p", watch: nil) }
        await #expect(throws: RegistryError(.closed, path: "/q")) {
            try await host.create("/q", data: [], mode: .persistent)
        }
        await #expect(throws: RegistryError(.closed)) { try await host.multi([]) }
        host.expire()
        host.disconnect()
        host.reconnect()
        #expect(host.sessionID == nil)
    }

    @Test("closing while disconnected ends the session at once")
    func closeWhileDisconnected() async throws {
        let server = EmbeddedRegistryServer()
        let host = server.connect()
        let peer = server.connect()
        let id = try #require(host.sessionID)
        let states = host.sessionStates()
        try await host.create("/e", data: [], mode: .ephemeral)
        host.disconnect()
        await host.close()
        var seen: [SessionState] = []
        for await state in states { seen.append(state) }
        #expect(seen == [.connected(sessionID: id), .disconnected, .closed])
        #expect(try await peer.exists("/e", watch: nil) == nil)
    }

    @Test("dropping the last reference to a registry closes its session")
    func droppedClientCloses() async throws {
        let server = EmbeddedRegistryServer()
        let peer = server.connect()
        let log = EventLog()

        func useAndDrop() async throws {
            let transient = server.connect()
            try await transient.create("/e", data: [], mode: .ephemeral)
            #expect(try await peer.exists("/e", watch: log.watcher()) != nil)
        }

        try await useAndDrop()
        #expect(log.events == [WatchEvent(.deleted, "/e")])
        #expect(try await peer.exists("/e", watch: nil) == nil)
    }
}

@Suite("EmbeddedRegistry: session renewal")
struct EmbeddedRegistryRenewalTests {
    @Test("after an expiry, renewSession continues with a new session id on the same registry, as ZooKeeperRegistry does")
    func renew() async throws {
        let registry = EmbeddedRegistry.standalone()
        let first = try #require(registry.sessionID)
        try await registry.create("/e", data: [], mode: .ephemeral)
        var states = registry.sessionStates().makeAsyncIterator()
        #expect(await states.next() == .connected(sessionID: first))
        registry.renewSession()  // alive: nothing happens
        #expect(registry.sessionID == first)
        registry.expire()
        #expect(await states.next() == .expired)
        await #expect(throws: RegistryError(.sessionExpired, path: "/x")) { try await registry.create("/x", data: [], mode: .persistent) }
        registry.renewSession()
        let second = try #require(registry.sessionID)
        #expect(second != first)
        #expect(await states.next() == .connected(sessionID: second))
        #expect(try await registry.exists("/e", watch: nil) == nil)
        try await registry.create("/e", data: [], mode: .ephemeral)
        #expect(try await registry.exists("/e", watch: nil)?.ephemeralOwner == second)
        await registry.close()
        #expect(await states.next() == .closed)
    }
}
