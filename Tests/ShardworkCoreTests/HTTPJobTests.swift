import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The HTTP job (Plugins/HTTPJob) against a real HTTP server on 127.0.0.1
/// (Tests/Fixtures/servers/http_server.py).
@Suite("HTTP job")
struct HTTPJobTests {
    let log = CapturedLog()
    let registry = ProviderRegistry()

    init() throws {
        try TestPlugins.load(try TestPaths.builtInPlugin("ShardworkHTTPJob"), into: registry, log: log)
    }

    func job(_ properties: [(String, String)]) throws -> JobTypeInstance {
        try JobTypeInstance(try registry.resolve(.jobType, "HTTP"), setup: TestPlugins.setup("HTTP", properties, job: "sync"))
    }

    static let context = ShardingContext(
        jobName: "sync", taskID: "sync@-@0@-@READY@-@10.0.0.3@-@77", shardingTotalCount: 2, jobParameter: "a=b",
        shardingItem: 0, shardingParameter: "Beijing", fireTimeMilliseconds: 1_800_000_000_000, fencingEpoch: 1)

    func run(_ job: JobTypeInstance, control: ItemControl = ItemControl()) async throws {
        let logger = log.logger()
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: Self.context, control: control, logger: logger))
        }
    }

    func failure(_ job: JobTypeInstance) async throws -> ProviderCallError? {
        do {
            try await run(job)
            Issue.record("the item succeeded")
            return nil
        } catch let error as ProviderCallError {
            return error
        }
    }

    @Test("GET: the request carries the shardingContext header as Gson's JSON, and no body even with http.data")
    func get() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        try await run(try job([("http.uri", server.baseURL + "/sync?region=north"), ("http.method", "get"), ("http.data", "ignored")]))
        let request = try #require(try server.received().first)
        #expect(request["method"]?.string == "GET")
        #expect(request["path"]?.string == "/sync" && request["query"]?.string == "region=north")
        #expect(request["headers"]?["shardingcontext"]?.string
            == #"{"jobName":"sync","taskId":"sync@-@0@-@READY@-@10.0.0.3@-@77","shardingTotalCount":2,"jobParameter":"a\u003db","shardingItem":0,"shardingParameter":"Beijing"}"#)
        #expect(request["body"]?.string == "")
        #expect(request["headers"]?["content-length"] == nil)
    }

    @Test("POST, PUT and DELETE send http.data as the body with http.content.type")
    func methodsWithBody() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        for method in ["POST", "PUT", "DELETE"] {
            try await run(try job([
                ("http.uri", server.baseURL + "/items"), ("http.method", method),
                ("http.data", #"{"region":"north","note":"café"}"#), ("http.content.type", "application/json"),
            ]))
        }
        // PATCH is sent as such, without a body (ElasticJob sends data with POST, PUT and DELETE only).
        try await run(try job([("http.uri", server.baseURL + "/items"), ("http.method", "PATCH"), ("http.data", "x")]))
        let requests = try server.received()
        #expect(requests.compactMap { $0["method"]?.string } == ["POST", "PUT", "DELETE", "PATCH"])
        for request in requests.prefix(3) {
            #expect(request["body"]?.string == #"{"region":"north","note":"café"}"#)
            #expect(request["headers"]?["content-type"]?.string == "application/json")
            #expect(request["headers"]?["shardingcontext"]?.string?.contains(#""shardingItem":0"#) == true)
        }
        #expect(requests.last?["body"]?.string == "")
    }

    @Test("an answer of 400 or above fails the item with the status as its code (ElasticJob only logs it)")
    func statusFails() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        for status in [400, 404, 503] {
            let error = try #require(await failure(try job([("http.uri", server.baseURL + "/status/\(status)"), ("http.method", "POST")])))
            #expect(error.code == Int32(status))
            #expect(error.message == "HTTP job: POST \(server.baseURL)/status/\(status) answered \(status): status \(status)")
        }
        // Below 400 is success, a redirect included (it is not followed).
        try await run(try job([("http.uri", server.baseURL + "/status/302"), ("http.method", "GET")]))
        try await run(try job([("http.uri", server.baseURL + "/status/204"), ("http.method", "GET")]))
    }

    @Test("a server slower than http.read.timeout.milliseconds, or none at all, fails the item")
    func timeoutsAndNetworkErrors() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let slow = try #require(await failure(try job([
            ("http.uri", server.baseURL + "/delay/5000"), ("http.method", "GET"), ("http.read.timeout.milliseconds", "300"),
        ])))
        #expect(slow.message.contains("timed out (http.connect.timeout.milliseconds 3000, http.read.timeout.milliseconds 300)"), "\(slow.message)")

        let port = try await SharedZooKeeper.unusedPort()
        let closed = try #require(await failure(try job([("http.uri", "http://127.0.0.1:\(port)/sync"), ("http.method", "GET")])))
        #expect(closed.message.contains("failed: Couldn't connect to server"), "\(closed.message)")
    }

    @Test("a server that never completes the TCP handshake fails the item after http.connect.timeout.milliseconds")
    func connectTimeout() async throws {
        // A listener on 127.0.0.1 whose accept queue is full and which never accepts: the kernel
        // drops further connection requests, so a new connect waits until its timeout.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && getsockname(listener, pointer, &length) == 0 && listen(listener, 0) == 0
            }
        }
        try #require(listening)
        var fillers: [Int32] = []
        defer {
            for socket in fillers { close(socket) }
            close(listener)
        }
        for _ in 0..<4 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = fcntl(filler, F_SETFL, O_NONBLOCK)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            fillers.append(filler)
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let stalled = try #require(await failure(try job([
            ("http.uri", "http://127.0.0.1:\(port)/sync"), ("http.method", "GET"),
            ("http.connect.timeout.milliseconds", "300"), ("http.read.timeout.milliseconds", "20000"),
        ])))
        #expect(stalled.message.contains("timed out (http.connect.timeout.milliseconds 300, http.read.timeout.milliseconds 20000)"),
                "\(stalled.message)")
        #expect(stalled.message.lowercased().contains("connect"), "\(stalled.message)")
    }

    @Test("an item the host asks to stop stops waiting for the answer")
    func cancellation() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let job = try job([("http.uri", server.baseURL + "/delay/5000"), ("http.method", "GET"), ("http.read.timeout.milliseconds", "60000")])
        do {
            try await run(job, control: ItemControl(isCancelled: { true }))
            Issue.record("the item succeeded")
        } catch let error as ProviderCallError {
            #expect(error.message.contains("was stopped because the host asked the item to stop"), "\(error.message)")
        }
    }

    @Test("its props are checked when the job is registered, naming the key")
    func validation() throws {
        for (properties, key, text) in [
            ([("http.method", "GET")], "http.uri", "The property `http.uri` is required."),
            ([("http.uri", "file:///etc/passwd"), ("http.method", "GET")], "http.uri", "should be an http:// or https:// URL"),
            ([("http.uri", "http://127.0.0.1/")], "http.method", "The property `http.method` is required."),
            ([("http.uri", "http://127.0.0.1/"), ("http.method", "GE T")], "http.method", "should be a method such as GET"),
            ([("http.uri", "http://127.0.0.1/"), ("http.method", "GET"), ("http.connect.timeout.milliseconds", "0")],
             "http.connect.timeout.milliseconds", "should be positive, got 0"),
            ([("http.uri", "http://127.0.0.1/"), ("http.method", "GET"), ("http.read.timeout.milliseconds", "fast")],
             "http.read.timeout.milliseconds", "should be an integer, got 'fast'"),
        ] {
            do {
                _ = try job(properties)
                Issue.record("accepted \(properties)")
            } catch let error as ProviderCallError {
                #expect(error.isInvalidConfiguration)
                #expect(error.field == key)
                #expect(error.message.contains(text), "\(error.message)")
            }
        }
    }
}
