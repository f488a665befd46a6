import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The webhook, WeChat Work and DingTalk handlers (Plugins/WebhookErrorHandler) against a real HTTP
/// server on 127.0.0.1 (Tests/Fixtures/servers/http_server.py).
@Suite("Webhook error handlers", .stopsWhatItStarts)
struct WebhookErrorHandlerTests {
    static let secret = "s3cret-signing-key"
    let log = CapturedLog()
    let registry = ProviderRegistry()

    init() throws {
        try TestPlugins.load(try TestPaths.builtInPlugin("ShardworkWebhookErrorHandler"), into: registry, log: log)
    }

    func handler(_ name: String, _ properties: [(String, String)]) throws -> ErrorHandlerInstance {
        try ErrorHandlerInstance(try registry.resolve(.errorHandler, name), setup: TestPlugins.setup(name, properties, job: "orders"))
    }

    static let failure = JobFailure(
        origin: .item, jobName: "orders", taskID: "orders@-@2@-@READY@-@10.0.0.1@-@7", instanceID: "10.0.0.1@-@7",
        hostName: "web-1", item: 2, fireTimeMilliseconds: 1_800_000_001_000,
        message: "script /opt/export.sh exited with status 3; the end of its standard error: \"disk\" full", code: 3)

    func handle(_ handler: ErrorHandlerInstance) async throws -> ErrorDisposition {
        try await onDedicatedThread { try handler.handle(Self.failure) }
    }

    func waitForLog(_ text: String) async -> Bool {
        await eventually(seconds: 20) { log.contains(text) }
    }

    @Test("webhook: the server receives the failure as JSON, signed with HMAC-SHA256 of the body under the secret")
    func signedDocument() async throws {
        let server = try await FixtureServer.start("http_server.py", ["--secret", Self.secret])
        defer { server.terminate() }
        let webhook = try handler("webhook", [("webhook.url", server.baseURL + "/hooks/shardwork"), ("webhook.secret", Self.secret)])
        #expect(try await handle(webhook) == .handled)
        let request = try #require(try await server.waitForReceived(1).first)
        #expect(request["method"]?.string == "POST")
        #expect(request["path"]?.string == "/hooks/shardwork")
        #expect(request["headers"]?["content-type"]?.string == "application/json; charset=utf-8")
        let hmac = try #require(request["hmac"]?.string)
        #expect(request["headers"]?["x-shardwork-signature"]?.string == "sha256=" + hmac)
        let document = try OrderedJSON.parse(try #require(request["body"]?.string))
        #expect(document["job"]?.string == "orders")
        #expect(document["host"]?.string == "web-1")
        #expect(document["instance"]?.string == "10.0.0.1@-@7")
        #expect(document["items"] == .array([.number(2)]))
        #expect(document["fireTime"]?.string == "2027-01-15T08:00:01.000Z")
        #expect(document["fireTimeMilliseconds"]?.int64 == 1_800_000_001_000)
        #expect(document["error"]?["message"]?.string == Self.failure.message)
        #expect(document["error"]?["code"]?.int == 3)
        #expect(await waitForLog("webhook notification of job 'orders' item 2 sent to \(server.baseURL)/hooks/shardwork (HTTP 200, attempt 1)"))
        #expect(!log.messages.contains { $0.contains(Self.secret) }, "the secret was logged")
    }

    @Test("webhook and WECHAT: a failure that is no item's (the clock check) has no items, and says why")
    func environmentFailure() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let failure = JobFailure(
            origin: .environment, jobName: "orders", taskID: "", instanceID: "10.0.0.1@-@7", hostName: "web-1", item: nil,
            fireTimeMilliseconds: 1_800_000_001_000, message: "Time different between job server and register center exceed '70' seconds")
        let webhook = try handler("webhook", [("webhook.url", server.baseURL + "/hook")])
        let robot = try handler("wechat", [("wechat.webhook", server.baseURL + "/errcode/0")])
        for instance in [webhook, robot] {
            _ = try await onDedicatedThread { try instance.handle(failure) }
        }
        let requests = try await server.waitForReceived(2)
        let document = try OrderedJSON.parse(try #require(requests.first { $0["path"]?.string == "/hook" }?["body"]?.string))
        #expect(document["items"] == .array([]))
        #expect(document["origin"]?.string == "environment")
        #expect(document["taskId"]?.string == "")
        let message = try OrderedJSON.parse(try #require(requests.first { $0["path"]?.string == "/errcode/0" }?["body"]?.string))
        let content = try #require(message["text"]?["content"]?.string)
        #expect(content.contains("items: none (the host's environment check failed)"), "\(content)")
        #expect(!content.contains("task:") && !content.contains("code:"))
    }

    @Test("webhook: the handler returns before the server answers; the fire does not wait for the network")
    func returnsAtOnce() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let webhook = try handler("webhook", [("webhook.url", server.baseURL + "/delay/4000"), ("webhook.readTimeoutMilliseconds", "20000")])
        #expect(try await handle(webhook) == .handled)
        #expect(!log.contains("sent to"), "the handler waited for the answer")
        #expect(await waitForLog("sent to \(server.baseURL)/delay/4000 (HTTP 200, attempt 1)"))
    }

    @Test("webhook: on HTTP 500 it retries with backoff and gives up after webhook.attempts")
    func retriesThenGivesUp() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let webhook = try handler("webhook", [
            ("webhook.url", server.baseURL + "/status/500"), ("webhook.attempts", "3"), ("webhook.backoffMilliseconds", "50"),
        ])
        #expect(try await handle(webhook) == .handled)
        #expect(await waitForLog("webhook notification of job 'orders' item 2 gave up after 3 attempts: HTTP 500"), "\(log.messages)")
        #expect(try server.received().count == 3)
        #expect(log.contains("attempt 1 of 3 got HTTP 500") && log.contains("attempt 2 of 3 got HTTP 500"))
    }

    @Test("webhook: a 4xx answer is not retried")
    func clientErrorNotRetried() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        // Credentials in the URL are sent (basic authentication) but never logged.
        let url = "http://hook-user:hunter2-secret@127.0.0.1:\(server.port)/status/404"
        let webhook = try handler("webhook", [("webhook.url", url), ("webhook.attempts", "3"), ("webhook.backoffMilliseconds", "10")])
        _ = try await handle(webhook)
        #expect(await waitForLog("to http://127.0.0.1:\(server.port)/status/404 was refused with HTTP 404; not retried"), "\(log.messages)")
        let requests = try server.received()
        #expect(requests.count == 1)
        #expect(requests.first?["headers"]?["authorization"]?.string?.hasPrefix("Basic ") == true)
        #expect(!log.messages.contains { $0.contains("hunter2") })
    }

    @Test("webhook: a read timeout and a refused connection are network errors, retried and given up on")
    func networkErrors() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let slow = try handler("webhook", [
            ("webhook.url", server.baseURL + "/delay/5000"), ("webhook.readTimeoutMilliseconds", "300"),
            ("webhook.attempts", "2"), ("webhook.backoffMilliseconds", "10"),
        ])
        _ = try await handle(slow)
        #expect(await waitForLog("/delay/5000: attempt 2 of 2 failed: Timeout was reached"), "\(log.messages)")
        #expect(await waitForLog("gave up after 2 attempts: Timeout was reached"))
        #expect(try server.received().count == 2)

        let port = try await SharedZooKeeper.unusedPort()
        let closed = try handler("webhook", [
            ("webhook.url", "http://127.0.0.1:\(port)/hook"), ("webhook.attempts", "2"), ("webhook.backoffMilliseconds", "10"),
        ])
        _ = try await handle(closed)
        #expect(await waitForLog("127.0.0.1:\(port)/hook: attempt 2 of 2 failed: Couldn't connect to server"), "\(log.messages)")
    }

    @Test("WECHAT: ElasticJob's text message to the robot; an errcode other than 0 is logged with its errmsg")
    func wechat() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let robot = try handler("WECHAT", [("wechat.webhook", server.baseURL + "/errcode/0?key=robot-key")])
        _ = try await handle(robot)
        let request = try #require(try await server.waitForReceived(1).first)
        #expect(request["query"]?.string == "key=robot-key")
        let message = try OrderedJSON.parse(try #require(request["body"]?.string))
        #expect(message["msgtype"]?.string == "text")
        let content = try #require(message["text"]?["content"]?.string)
        #expect(content.hasPrefix("Job 'orders' exception occur in job processing, caused by script /opt/export.sh exited with status 3"))
        #expect(content.contains("host: web-1") && content.contains("items: 2") && content.contains("fire time: 2027-01-15T08:00:01.000Z"))

        let refusing = try handler("wechat", [("wechat.webhook", server.baseURL + "/errcode/93000?key=robot-key")])
        _ = try await handle(refusing)
        #expect(await waitForLog("errcode 93000, errmsg test answer 93000"))
        #expect(!log.messages.contains { $0.contains("robot-key") }, "the robot's key was logged")
    }

    @Test("DINGTALK: keyword first, and with a secret the URL carries timestamp and DingTalk's signature")
    func dingtalk() async throws {
        let server = try await FixtureServer.start("http_server.py", ["--secret", Self.secret])
        defer { server.terminate() }
        let robot = try handler("DINGTALK", [
            ("dingtalk.webhook", server.baseURL + "/errcode/0?access_token=token-123"),
            ("dingtalk.keyword", "[shardwork]"), ("dingtalk.secret", Self.secret),
        ])
        _ = try await handle(robot)
        let request = try #require(try await server.waitForReceived(1).first)
        let query = try #require(request["query"]?.string)
        let fields = Dictionary(uniqueKeysWithValues: query.split(separator: "&").map { pair -> (String, String) in
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            return (parts[0], parts.count > 1 ? parts[1] : "")
        })
        #expect(fields["access_token"] == "token-123")
        #expect(fields["timestamp"].flatMap { Int64($0) } != nil)
        #expect(fields["sign"]?.removingPercentEncoding == request["dingtalkSign"]?.string)
        #expect(fields["sign"]?.contains("+") == false && fields["sign"]?.contains("/") == false)
        let message = try OrderedJSON.parse(try #require(request["body"]?.string))
        #expect(message["text"]?["content"]?.string?.hasPrefix("[shardwork] Job 'orders' exception occur in job processing") == true)
        #expect(await waitForLog("sent to \(server.baseURL)/errcode/0?… (HTTP 200, attempt 1)"))
        #expect(!log.messages.contains { $0.contains("token-123") || $0.contains(Self.secret) })
    }

    @Test("through the host: a failing item of a fire reaches the webhook with the job, host, item and code")
    func throughTheHost() async throws {
        let server = try await FixtureServer.start("http_server.py", ["--secret", Self.secret])
        defer { server.terminate() }
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 3
                shardingItemParameters: 1=fail
                jobErrorHandlerType: webhook
                props:
                  webhook.url: \(server.baseURL)/hook
                  webhook.secret: \(Self.secret)
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        let request = try #require(try await server.waitForReceived(1).first)
        #expect(request["headers"]?["x-shardwork-signature"]?.string == "sha256=" + (request["hmac"]?.string ?? "none"))
        let document = try OrderedJSON.parse(try #require(request["body"]?.string))
        #expect(document["job"]?.string == "orders")
        #expect(document["instance"]?.string == HostHarness.instance.id)
        #expect(document["items"] == .array([.number(1)]))
        #expect(document["fireTimeMilliseconds"]?.int64 == (HostHarness.start / 1000 + 1) * 1000)
        #expect(document["error"]?["code"]?.int == 7)
        #expect(document["error"]?["message"]?.string == "item 1 failed on purpose")
        await harness.host.shutdown()
    }

    @Test("through the host: while the webhook waits on a slow server, the failing job and other jobs keep firing")
    func slowServerDoesNotHoldFires() async throws {
        let server = try await FixtureServer.start("http_server.py")
        defer { server.terminate() }
        let harness = try await HostHarness("""
            jobs:
              - jobName: orders
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
                shardingItemParameters: 1=fail
                jobErrorHandlerType: webhook
                props:
                  webhook.url: \(server.baseURL)/delay/30000
                  webhook.readTimeoutMilliseconds: 60000
                  webhook.attempts: 1
              - jobName: ticks
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 2
            """)
        try await harness.host.start()
        for second in 1...3 {
            harness.advance(toSecond: Int64(second))
            await harness.waitForFires("orders", count: second)
            await harness.waitForFires("ticks", count: second)
        }
        // Three fires of each job ran, every one on schedule, while the first notification was
        // still waiting for the server's answer.
        #expect(harness.events.count { if case .misfire = $0 { true } else { false } } == 0)
        #expect(harness.fireEnds("orders").allSatisfy { $0.source == .schedule && $0.items == [0, 1] && $0.failedItems == [1] && $0.runs == 1 })
        #expect(try await server.waitForReceived(1).count >= 1)
        #expect(harness.lines(containing: "sent to").isEmpty, "a notification was answered already: the test proves nothing")
        await harness.host.shutdown()
    }

    @Test("props are checked when the job is registered, naming the key")
    func validation() throws {
        for (name, properties, key, text) in [
            ("webhook", [(String, String)](), "webhook.url", "The property `webhook.url` is required."),
            ("webhook", [("webhook.url", "ftp://example/x")], "webhook.url", "should be an http:// or https:// URL"),
            ("webhook", [("webhook.url", "http://127.0.0.1/x"), ("webhook.attempts", "three")], "webhook.attempts", "should be an integer, got 'three'"),
            ("webhook", [("webhook.url", "http://127.0.0.1/x"), ("webhook.secret", "")], "webhook.secret", "is empty"),
            ("WECHAT", [], "wechat.webhook", "The property `wechat.webhook` is required."),
            ("WECHAT", [("wechat.webhook", "http://127.0.0.1/x"), ("wechat.connectTimeoutMilliseconds", "-5")],
             "wechat.connectTimeoutMilliseconds", "should be positive, got -5"),
            ("DINGTALK", [], "dingtalk.webhook", "The property `dingtalk.webhook` is required."),
            ("DINGTALK", [("dingtalk.webhook", "http://127.0.0.1/x"), ("dingtalk.readTimeoutMilliseconds", "5s")],
             "dingtalk.readTimeoutMilliseconds", "should be an integer"),
        ] {
            do {
                _ = try handler(name, properties)
                Issue.record("\(name) accepted \(properties)")
            } catch let error as ProviderCallError {
                #expect(error.isInvalidConfiguration)
                #expect(error.field == key)
                #expect(error.message.contains(text), "\(error.message)")
            }
        }
    }
}
