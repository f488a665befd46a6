import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Synchronization
import Testing
import ZooKeeper

private let quiet = Logger(label: "test.zookeeper") { _ in SwiftLogNoOpLogHandler() }

/// A ZooKeeper registry on the shared test server, in a namespace of its own.
private func zookeeperRegistry(
    namespace: String = "test-\(UUID().uuidString.prefix(8))", sessionTimeout: Int = 4000
) async throws -> (ZooKeeperRegistry, ZooKeeperEnsemble) {
    let ensemble = try await SharedZooKeeper.ensemble()
    var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace)
    configuration.sessionTimeoutMilliseconds = sessionTimeout
    configuration.baseSleepTimeMilliseconds = 100
    configuration.maxSleepTimeMilliseconds = 400
    return (try await ZooKeeperRegistry.connect(configuration, logger: quiet), ensemble)
}

/// A ZooKeeper registry that reaches the shared server through `proxy`.
private func partitionable(_ proxy: TCPProxy, sessionTimeout: Int) async throws -> ZooKeeperRegistry {
    var configuration = ZooKeeperConfiguration(serverLists: "127.0.0.1:\(proxy.port)", namespace: "p-\(UUID().uuidString.prefix(8))")
    configuration.sessionTimeoutMilliseconds = sessionTimeout
    configuration.baseSleepTimeMilliseconds = 100
    configuration.maxSleepTimeMilliseconds = 400
    return try await ZooKeeperRegistry.connect(configuration, logger: quiet)
}

/// Records watch events in order.
private final class WatchLog: Sendable {
    private let events = Mutex<[String]>([])
    func watcher(_ label: String) -> Watcher {
        { event in self.events.withLock { $0.append("\(label): \(event.kind) \(event.path)") } }
    }
    var all: [String] { events.withLock { $0 } }
}

/// The same script of operations, with its results written down: run on the embedded registry and
/// on ZooKeeper, the two transcripts must be the same. This is what proves that the single-host
/// path (embedded) behaves as a cluster's (ZooKeeper) does.
private func transcript(_ registry: any RegistryCenter) async -> [String] {
    var lines: [String] = []
    let watches = WatchLog()
    func record(_ label: String, _ body: () async throws(RegistryError) -> String) async {
        do {
            lines.append("\(label) -> \(try await body())")
        } catch {
            lines.append("\(label) !! \(error.code)")
        }
    }
    func describe(_ stat: NodeStat?) -> String {
        guard let stat else { return "nil" }
        let owner = stat.ephemeralOwner == 0 ? "none" : (stat.ephemeralOwner == registry.sessionID ? "self" : "other")
        return "v\(stat.version) cv\(stat.childrenVersion) children \(stat.childCount) length \(stat.dataLength) owner \(owner)"
    }
    let bytes = { (text: String) in [UInt8](utf8: text) }

    await record("create /a") { () throws(RegistryError) in try await registry.create("/a", data: bytes("x"), mode: .persistent) }
    await record("create /a again") { () throws(RegistryError) in try await registry.create("/a", data: [], mode: .persistent) }
    await record("create /b/c") { () throws(RegistryError) in try await registry.create("/b/c", data: [], mode: .persistent) }
    await record("create under a bad path") { () throws(RegistryError) in try await registry.create("/a/", data: [], mode: .persistent) }
    await record("data watch /a") { () throws(RegistryError) in
        let (data, stat) = try await registry.data("/a", watch: watches.watcher("data /a"))
        return String(decoding: data, as: UTF8.self) + " " + describe(stat)
    }
    await record("children watch /a") { () throws(RegistryError) in
        try await registry.children("/a", watch: watches.watcher("children /a")).sorted().joined(separator: ",")
    }
    for _ in 0..<3 {
        await record("create /a/s-") { () throws(RegistryError) in try await registry.create("/a/s-", data: [], mode: .persistentSequential) }
    }
    await record("delete /a/s-0000000001") { () throws(RegistryError) in
        try await registry.delete("/a/s-0000000001", version: nil)
        return "ok"
    }
    await record("create /a/s- after a delete") { () throws(RegistryError) in try await registry.create("/a/s-", data: [], mode: .persistentSequential) }
    await record("stat /a") { () throws(RegistryError) in describe(try await registry.exists("/a", watch: nil)) }
    await record("set /a at 0") { () throws(RegistryError) in describe(try await registry.setData("/a", data: bytes("yy"), version: 0)) }
    await record("set /a at 0 again") { () throws(RegistryError) in describe(try await registry.setData("/a", data: bytes("z"), version: 0)) }
    await record("set /a any") { () throws(RegistryError) in describe(try await registry.setData("/a", data: bytes("zzz"), version: nil)) }
    await record("delete /a with children") { () throws(RegistryError) in
        try await registry.delete("/a", version: nil)
        return "ok"
    }
    await record("create /e ephemeral") { () throws(RegistryError) in try await registry.create("/e", data: bytes("me"), mode: .ephemeral) }
    await record("stat /e") { () throws(RegistryError) in describe(try await registry.exists("/e", watch: nil)) }
    await record("create /e/x") { () throws(RegistryError) in try await registry.create("/e/x", data: [], mode: .persistent) }
    await record("create /q- ephemeral sequential") { () throws(RegistryError) in try await registry.create("/q-", data: [], mode: .ephemeralSequential) }
    await record("data /missing") { () throws(RegistryError) in String(try await registry.data("/missing", watch: watches.watcher("data /missing")).data.count) }
    await record("exists watch /w") { () throws(RegistryError) in describe(try await registry.exists("/w", watch: watches.watcher("exists /w"))) }
    await record("children /missing") { () throws(RegistryError) in try await registry.children("/missing", watch: nil).joined() }
    await record("create /w") { () throws(RegistryError) in try await registry.create("/w", data: [], mode: .persistent) }
    await record("multi create, create child, set, check") { () throws(RegistryError) in
        let results = try await registry.multi([
            .create("/m", data: [], mode: .persistent),
            .create("/m/s-", data: bytes("1"), mode: .persistentSequential),
            .setData("/m", data: bytes("m"), version: 0),
            .check("/m", version: 1),
        ])
        return results.map { result in
            switch result {
            case .created(let path): "created \(path)"
            case .deleted: "deleted"
            case .set(let stat): "set \(describe(stat))"
            case .checked: "checked"
            }
        }.joined(separator: "; ")
    }
    await record("multi failing at 1") { () throws(RegistryError) in
        try await registry.multi([.create("/n", data: [], mode: .persistent), .delete("/missing", version: nil)])
        return "ok"
    }
    await record("exists /n after the failed multi") { () throws(RegistryError) in describe(try await registry.exists("/n", watch: nil)) }
    await record("multi failing check at 2") { () throws(RegistryError) in
        try await registry.multi([.check("/m", version: nil), .setData("/m", data: [], version: nil), .check("/m", version: 7)])
        return "ok"
    }
    await record("delete /w at version 3") { () throws(RegistryError) in
        try await registry.delete("/w", version: 3)
        return "ok"
    }
    await record("data watch /w, then delete") { () throws(RegistryError) in
        _ = try await registry.data("/w", watch: watches.watcher("data /w"))
        try await registry.delete("/w", version: 0)
        return "ok"
    }
    await record("root children") { () throws(RegistryError) in
        try await registry.children("/", watch: nil).filter { $0 != "zookeeper" }.sorted().joined(separator: ",")
    }
    // Watches fire on the C client's thread: give them a moment to land.
    for _ in 0..<100 where watches.all.count < 4 { try? await Task.sleep(for: .milliseconds(20)) }
    lines.append(contentsOf: watches.all.sorted())
    return lines
}

@Suite("ZooKeeperRegistry against a real ZooKeeper server", .timeLimit(.minutes(3)))
struct ZooKeeperRegistryTests {
    @Test("the embedded registry and ZooKeeper give the same transcript for the same operations")
    func sameAsEmbedded() async throws {
        let (zookeeper, _) = try await zookeeperRegistry()
        let embedded = EmbeddedRegistry.standalone()
        let expected = await transcript(embedded)
        let actual = await transcript(zookeeper)
        #expect(actual == expected)
        if actual != expected {
            for (index, pair) in zip(expected, actual).enumerated() where pair.0 != pair.1 {
                Issue.record("line \(index): embedded '\(pair.0)', ZooKeeper '\(pair.1)'")
            }
        }
        await zookeeper.close()
    }

    @Test("every node lives under /{namespace}; paths come back without it")
    func namespace() async throws {
        let namespace = "ns-\(UUID().uuidString.prefix(8))"
        let (registry, ensemble) = try await zookeeperRegistry(namespace: namespace)
        try await registry.create("/job", data: [], mode: .persistent)
        let sequential = try await registry.create("/job/n-", data: [UInt8](utf8: "v"), mode: .ephemeralSequential)
        #expect(sequential == "/job/n-0000000000")
        let raw = try ZooKeeperClient(servers: ensemble.connectString, sessionTimeout: .seconds(4), logger: quiet)
        let seen = try await raw.children("/\(namespace)/job")
        #expect(seen == ["n-0000000000"])
        #expect(try await raw.data("/\(namespace)/job/n-0000000000").data == [UInt8](utf8: "v"))
        #expect(try await registry.children("/", watch: nil) == ["job"])
        await registry.close()
        await raw.close()
    }

    @Test("close ends the session: its ephemeral nodes are gone at once, later calls throw .closed")
    func closeDeletesEphemerals() async throws {
        let namespace = "close-\(UUID().uuidString.prefix(8))"
        let (first, _) = try await zookeeperRegistry(namespace: namespace)
        let (second, _) = try await zookeeperRegistry(namespace: namespace)
        try await first.create("/mine", data: [], mode: .ephemeral)
        #expect(try await second.exists("/mine", watch: nil)?.ephemeralOwner == first.sessionID)
        let states = first.sessionStates()
        await first.close()
        #expect(try await second.exists("/mine", watch: nil) == nil)
        await #expect(throws: RegistryError(.closed)) { try await first.exists("/", watch: nil) }
        var seen: [SessionState] = []
        for await state in states { seen.append(state) }
        #expect(seen.first.map { if case .connected = $0 { true } else { false } } == true)
        #expect(seen.last == .closed)
        await second.close()
    }

    @Test("a partition shorter than the session: disconnected, then connected with the same session")
    func shortPartition() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let proxy = try TCPProxy(upstreamPort: ensemble.member(1).clientPort)
        // 800 ms of partition against a 15 s session: under the suite's load the client's reconnect
        // (and the shared server) can lag seconds, and a 4 s session once expired in that time.
        let registry = try await partitionable(proxy, sessionTimeout: 15_000)
        try await registry.create("/eph", data: [], mode: .ephemeral)
        let id = try #require(registry.sessionID)
        let states = registry.sessionStates()
        proxy.cut()
        try await Task.sleep(for: .milliseconds(800))
        proxy.restore()
        var seen: [SessionState] = []
        for await state in states {
            seen.append(state)
            if seen.count >= 3 { break }
        }
        #expect(seen == [.connected(sessionID: id), .disconnected, .connected(sessionID: id)])
        #expect(try await registry.exists("/eph", watch: nil)?.ephemeralOwner == id)
        await registry.close()
        proxy.close()
    }

    @Test("a partition past the session timeout: expired, then a new session; the old ephemerals are gone")
    func expiryOpensANewSession() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let proxy = try TCPProxy(upstreamPort: ensemble.member(1).clientPort)
        let registry = try await partitionable(proxy, sessionTimeout: 1000)
        try await registry.create("/eph", data: [], mode: .ephemeral)
        let oldID = try #require(registry.sessionID)
        let states = registry.sessionStates()
        proxy.cut()
        // The server expires the session one timeout (plus up to a tick) after the last ping.
        try await Task.sleep(for: .milliseconds(2500))
        proxy.restore()
        var seen: [SessionState] = []
        for await state in states {
            seen.append(state)
            if case .connected(let id) = state, id != oldID { break }
        }
        #expect(seen.first == .connected(sessionID: oldID))
        #expect(seen.contains(.disconnected))
        #expect(seen.contains(.expired))
        let newID = try #require(registry.sessionID)
        #expect(newID != oldID)
        #expect(try await registry.exists("/eph", watch: nil) == nil)
        try await registry.create("/eph", data: [], mode: .ephemeral)
        #expect(try await registry.exists("/eph", watch: nil)?.ephemeralOwner == newID)
        await registry.close()
        proxy.close()
    }

    @Test("watches as async sequences: one event, or the end when the client closes")
    func watchSequences() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let client = try ZooKeeperClient(servers: ensemble.connectString, sessionTimeout: .seconds(4), logger: quiet)
        let path = "/seq-\(UUID().uuidString.prefix(8))"
        let (stat, creation) = try await client.existsWatch(path)
        #expect(stat == nil)
        try await client.create(path, data: [], mode: .persistent)
        var events: [ZooKeeperWatchEvent] = []
        for await event in creation { events.append(event) }
        #expect(events == [ZooKeeperWatchEvent(.created, path)])
        let (_, _, change) = try await client.dataWatch(path)
        await client.close()
        var after: [ZooKeeperWatchEvent] = []
        for await event in change { after.append(event) }
        #expect(after.isEmpty)
    }

    @Test("many concurrent requests from many tasks all complete, in one session")
    func concurrency() async throws {
        let (registry, _) = try await zookeeperRegistry()
        try await registry.create("/c", data: [], mode: .persistent)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask { try await registry.create("/c/\(index)", data: [UInt8](utf8: "\(index)"), mode: .persistent) }
            }
            try await group.waitForAll()
        }
        #expect(try await registry.children("/c", watch: nil).count == 200)
        let counts = registry.statistics.snapshot
        #expect(counts.creates == 201)
        await registry.close()
    }

    @Test("an unreachable ensemble: a clear error naming the address and the timeout, after the timeout")
    func unreachable() async throws {
        let port = try await SharedZooKeeper.unusedPort()
        var configuration = ZooKeeperConfiguration(serverLists: "127.0.0.1:\(port)", namespace: "x")
        configuration.connectionTimeoutMilliseconds = 1500
        configuration.baseSleepTimeMilliseconds = 200
        configuration.maxSleepTimeMilliseconds = 400
        let started = ContinuousClock.now
        do {
            _ = try await ZooKeeperRegistry.connect(configuration, logger: quiet)
            Issue.record("connected to nothing")
        } catch {
            #expect(error.description.contains("cannot connect to ZooKeeper at 127.0.0.1:\(port)"))
            #expect(error.description.contains("1500 ms"))
            #expect(error.description.contains("waitForServer"))
        }
        #expect(ContinuousClock.now - started >= .milliseconds(1500))
    }

    @Test("waitForServer: the registry keeps waiting and connects once the server is up")
    func waitForServer() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        await ensemble.stop(1)
        var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: "wait")
        configuration.connectionTimeoutMilliseconds = 500
        configuration.waitForServer = true
        let connecting = Task { try await ZooKeeperRegistry.connect(configuration, logger: quiet) }
        try await Task.sleep(for: .seconds(1))
        try await ensemble.restart(1)
        let registry = try await connecting.value
        #expect(registry.sessionID != nil)
        await registry.close()
        ensemble.stopAll()
    }

    @Test("digest: nodes are created for their creator only; another identity is refused")
    func digest() async throws {
        let ensemble = try await SharedZooKeeper.ensemble()
        let namespace = "digest-\(UUID().uuidString.prefix(8))"
        var configuration = ZooKeeperConfiguration(serverLists: ensemble.connectString, namespace: namespace)
        configuration.digest = "alice:secret"
        let alice = try await ZooKeeperRegistry.connect(configuration, logger: quiet)
        try await alice.create("/private", data: [UInt8](utf8: "mine"), mode: .persistent)
        #expect(try await alice.string("/private") == "mine")

        configuration.digest = "mallory:guess"
        let mallory = try await ZooKeeperRegistry.connect(configuration, logger: quiet)
        await #expect(throws: RegistryError(.noAuth, path: "/private")) { try await mallory.data("/private", watch: nil) }
        let anonymous = try ZooKeeperClient(servers: ensemble.connectString, sessionTimeout: .seconds(4), logger: quiet)
        await #expect(throws: ZooKeeperError.self) { try await anonymous.data("/\(namespace)/private") }
        await alice.close()
        await mallory.close()
        await anonymous.close()
    }
}
