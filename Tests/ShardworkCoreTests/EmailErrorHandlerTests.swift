import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The email handler (Plugins/EmailErrorHandler) against a real SMTP server on 127.0.0.1: aiosmtpd
/// (Tests/Fixtures/servers/smtp_server.py), plain, with STARTTLS and with TLS from the first byte.
@Suite("Email error handler")
struct EmailErrorHandlerTests {
    static let username = "shardwork-mailer"
    static let password = "p4ss-w0rd-secret"
    let log = CapturedLog()
    let registry = ProviderRegistry()

    init() throws {
        try TestPlugins.load(try TestPaths.builtInPlugin("ShardworkEmailErrorHandler"), into: registry, log: log)
    }

    static let failure = JobFailure(
        origin: .item, jobName: "orders", taskID: "orders@-@2@-@READY@-@10.0.0.1@-@7", instanceID: "10.0.0.1@-@7",
        hostName: "web-1", item: 2, fireTimeMilliseconds: 1_800_000_001_000,
        message: "script /opt/export.sh exited with status 3; the end of its standard error: disk full", code: 3)

    /// A self-signed certificate for 127.0.0.1, made with the openssl command.
    static func certificate(in directory: TemporaryDirectory) async throws -> (cert: String, key: String) {
        guard let openssl = Subprocess.which("openssl") else {
            throw TestSetupError("openssl is not on the PATH: the TLS tests make a certificate with it. Install it with `scripts/install-dependencies test`.")
        }
        let (cert, key) = (directory.file("cert.pem"), directory.file("key.pem"))
        let outcome = try await Subprocess.run(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
        ])
        guard outcome.succeeded else { throw TestSetupError("openssl req failed: \(outcome.standardError)") }
        return (cert, key)
    }

    static func smtpServer(tls: String = "none", certificate: (cert: String, key: String)? = nil) async throws -> FixtureServer {
        var arguments = ["--username", username, "--password", password, "--tls", tls]
        if let certificate { arguments += ["--cert", certificate.cert, "--key", certificate.key] }
        return try await FixtureServer.start("smtp_server.py", arguments)
    }

    func handler(_ properties: [(String, String)]) throws -> ErrorHandlerInstance {
        try ErrorHandlerInstance(try registry.resolve(.errorHandler, "EMAIL"), setup: TestPlugins.setup("EMAIL", properties, job: "orders"))
    }

    func properties(port: Int, _ extra: [(String, String)] = []) -> [(String, String)] {
        var properties = [
            ("email.host", "127.0.0.1"), ("email.port", String(port)),
            ("email.username", Self.username), ("email.password", Self.password),
            ("email.from", "shardwork@example.com"), ("email.to", "ops@example.com, dev@example.com"),
            ("email.useSsl", "false"),
        ]
        for (key, value) in extra {
            properties.removeAll { $0.0 == key }
            properties.append((key, value))
        }
        return properties
    }

    func handle(_ handler: ErrorHandlerInstance) async throws -> ErrorDisposition {
        try await onDedicatedThread { try handler.handle(Self.failure) }
    }

    func waitForLog(_ text: String) async -> Bool {
        await eventually(seconds: 20) { log.contains(text) }
    }

    @Test("the server receives the mail with the right sender, recipients, subject and body, after AUTH")
    func plainWithAuth() async throws {
        let server = try await Self.smtpServer()
        defer { server.terminate() }
        let email = try handler(properties(port: server.port, [
            ("email.cc", "lead@example.com"), ("email.bcc", "audit@example.com"),
            ("email.subject", "Shardwork: job orders failed — 失败"),
        ]))
        #expect(try await handle(email) == .handled)
        let mail = try #require(try await server.waitForReceived(1).first)
        #expect(mail["mailFrom"]?.string == "shardwork@example.com")
        #expect(mail["rcptTos"] == .array(["ops@example.com", "dev@example.com", "lead@example.com", "audit@example.com"].map { .string($0) }))
        #expect(mail["login"]?.string == Self.username)
        #expect(mail["tls"] == .bool(false))
        #expect(mail["from"]?.string == "shardwork@example.com")
        #expect(mail["to"]?.string == "ops@example.com, dev@example.com")
        #expect(mail["cc"]?.string == "lead@example.com")
        #expect(mail["bcc"]?.string == "", "a Bcc header would reveal the hidden recipient")
        #expect(mail["subject"]?.string == "Shardwork: job orders failed — 失败")
        #expect(mail["contentType"]?.string == "text/plain")
        let body = try #require(mail["body"]?.string)
        #expect(body.hasPrefix("Job 'orders' exception occur in job processing, caused by script /opt/export.sh exited with status 3"))
        #expect(body.contains("host: web-1 (instance 10.0.0.1@-@7)"))
        #expect(body.contains("items: 2"))
        #expect(body.contains("fire time: 2027-01-15T08:00:01.000Z"))
        #expect(body.contains("code: 3"))
        #expect(await waitForLog("email notification of job 'orders' item 2 sent via smtp://127.0.0.1:\(server.port) to 4 recipient(s)"))
        #expect(!log.messages.contains { $0.contains(Self.password) }, "the password was logged")
    }

    @Test("ElasticJob's default subject, and email.debug logs the envelope but never the password")
    func defaultsAndDebug() async throws {
        let server = try await Self.smtpServer()
        defer { server.terminate() }
        _ = try await handle(try handler(properties(port: server.port, [("email.debug", "true")])))
        let mail = try #require(try await server.waitForReceived(1).first)
        #expect(mail["subject"]?.string == "ElasticJob error message")
        #expect(await waitForLog("sending from shardwork@example.com to ops@example.com, dev@example.com via smtp://127.0.0.1:\(server.port)"))
        #expect(!log.messages.contains { $0.contains(Self.password) })
    }

    @Test("STARTTLS: the mail goes over TLS after STARTTLS, the certificate trusted through email.ssl.trust")
    func startTLS() async throws {
        let directory = try TemporaryDirectory("shardwork-tls")
        let server = try await Self.smtpServer(tls: "starttls", certificate: try await Self.certificate(in: directory))
        defer { server.terminate() }
        _ = try await handle(try handler(properties(port: server.port, [("email.useStartTls", "true"), ("email.ssl.trust", "*")])))
        let mail = try #require(try await server.waitForReceived(1).first)
        #expect(mail["tls"] == .bool(true))
        #expect(mail["login"]?.string == Self.username)
    }

    @Test("SSL (email.useSsl, ElasticJob's default): TLS from the first byte; an untrusted certificate is refused")
    func implicitTLS() async throws {
        let directory = try TemporaryDirectory("shardwork-tls")
        let server = try await Self.smtpServer(tls: "implicit", certificate: try await Self.certificate(in: directory))
        defer { server.terminate() }
        _ = try await handle(try handler(properties(port: server.port, [("email.useSsl", "true"), ("email.ssl.trust", "127.0.0.1")])))
        let mail = try #require(try await server.waitForReceived(1).first)
        #expect(mail["tls"] == .bool(true))

        // Without email.ssl.trust the self-signed certificate fails verification: nothing is sent.
        _ = try await handle(try handler(properties(port: server.port, [("email.useSsl", "true")])))
        #expect(await waitForLog("could not be sent via smtps://127.0.0.1:\(server.port): SSL peer certificate or SSH remote key was not OK"), "\(log.messages)")
        #expect(try server.received().count == 1)
    }

    @Test("a wrong password: nothing is sent, the error is logged, the password is not")
    func wrongPassword() async throws {
        let server = try await Self.smtpServer()
        defer { server.terminate() }
        _ = try await handle(try handler(properties(port: server.port, [("email.password", "wrong-secret-value")])))
        #expect(await waitForLog("could not be sent via smtp://127.0.0.1:\(server.port): Login denied"), "\(log.messages)")
        #expect(try server.received().isEmpty)
        #expect(!log.messages.contains { $0.contains("wrong-secret-value") })
    }

    @Test("its props are checked when the job is registered, naming the key")
    func validation() throws {
        let base = properties(port: 2525)
        func without(_ key: String) -> [(String, String)] { base.filter { $0.0 != key } }
        func with(_ key: String, _ value: String) -> [(String, String)] { base.filter { $0.0 != key } + [(key, value)] }
        var cases: [([(String, String)], String, String)] = []
        for key in ["email.host", "email.port", "email.username", "email.password", "email.from", "email.to"] {
            cases.append((without(key), key, "The property `\(key)` is required."))
        }
        cases += [
            (with("email.port", "smtp"), "email.port", "should be an integer, got 'smtp'"),
            (with("email.port", "70000"), "email.port", "should be a port number"),
            (with("email.to", "ops@example.com, nobody"), "email.to", "should hold mail addresses like ops@example.com, got 'nobody'"),
            (with("email.from", "Shardwork <s@example.com>"), "email.from", "should hold mail addresses"),
            (with("email.cc", "a@example.com,b@example.com"), "email.cc", "should hold mail addresses"),
            (with("email.useSsl", "yes"), "email.useSsl", "should be true or false, got 'yes'"),
            (with("email.useSsl", "true") + [("email.useStartTls", "true")], "email.useStartTls", "choose one"),
            (with("email.debug", "maybe"), "email.debug", "should be true or false"),
            (with("email.connectTimeoutMilliseconds", "0"), "email.connectTimeoutMilliseconds", "should be positive"),
        ]
        for (properties, key, text) in cases {
            do {
                _ = try handler(properties)
                Issue.record("accepted \(properties)")
            } catch let error as ProviderCallError {
                #expect(error.isInvalidConfiguration)
                #expect(error.field == key)
                #expect(error.message.contains(text), "\(error.message)")
                #expect(!error.message.contains(Self.password))
            }
        }
    }
}
