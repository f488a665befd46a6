import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// Every value the configuration checks accept is one the host can compute with, and every name is
/// checked by one rule: in a host's file, in a job sent to the control API (read by the same
/// reader) and in a configuration read from the registry.
@Suite("Configuration limits and names")
struct ConfigurationLimitsTests {
    static func job(_ lines: String, name: String = "a") -> String {
        "jobs:\n  - jobName: \(name)\n    jobType: t\n    shardingTotalCount: 1\n" + lines
    }

    static func failure(_ text: String) -> HostConfigurationError? {
        do {
            _ = try HostConfigurationReader.parse(text, file: "host.yaml")
            return nil
        } catch {
            return error
        }
    }

    @Test("numbers beyond what a host can compute with or the registry can carry are refused, naming the field and the bound", arguments: [
        (job("    maxTimeDiffSeconds: 9223372036854775807\n"), "job 'a': maxTimeDiffSeconds: must be from -2147483648 to 2147483647 (a Java int, as ElasticJob keeps it), got 9223372036854775807"),
        (job("    reconcileIntervalMinutes: 4294967296\n"), "job 'a': reconcileIntervalMinutes: must be from -2147483648 to 2147483647"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1000000\n", "job 'a': shardingTotalCount: must be at most 1024, got 1000000"),
        (job("    props:\n      shardwork.item.timeout.seconds: 1e300\n"), "props.shardwork.item.timeout.seconds: must be a number of seconds above zero and at most 2592000"),
        (job("    props:\n      shardwork.item.timeout.seconds: nan\n"), "props.shardwork.item.timeout.seconds: must be a number of seconds above zero"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    sessionTimeoutMilliseconds: 2147483648\n",
         "registry.zookeeper.sessionTimeoutMilliseconds: must be from 1 to 86400000 (or 0 for 60000), got 2147483648"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    baseSleepTimeMilliseconds: 4611686018427387904\n",
         "registry.zookeeper.baseSleepTimeMilliseconds: must be from 0 to 3600000, got 4611686018427387904"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    connectionTimeoutMilliseconds: -1\n",
         "registry.zookeeper.connectionTimeoutMilliseconds: must be from 1 to 86400000 (or 0 for 15000), got -1"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    maxRetries: 30\n",
         "registry.zookeeper.maxRetries: must be from 0 to 29, got 30: Curator"),
        ("host:\n  shutdownTimeoutSeconds: 1e12\n", "host.shutdownTimeoutSeconds: must be from 0 to 86400 seconds"),
        ("host:\n  shutdownTimeoutSeconds: .nan\n", "host.shutdownTimeoutSeconds: must be from 0 to 86400 seconds"),
    ])
    func numericBounds(text: String, phrase: String) throws {
        let error = try #require(Self.failure(text), "accepted:\n\(text)")
        #expect(error.description.contains(phrase), "\(error)")
        #expect(error.location != nil, "\(error)")
    }

    @Test("job names: one node name ZooKeeper accepts, without whitespace, controls or invisible characters, at most 128 bytes", arguments: [
        (".", "must not be '.' or '..'"),
        ("..", "must not be '.' or '..'"),
        ("\"a\\tb\"", "must not contain a control character (U+0009 at character 2)"),
        ("\"a\\nb\"", "must not contain a control character (U+000A at character 2)"),
        ("\"a\\x1b[31mred\"", "must not contain a control character (U+001B at character 2)"),
        ("\"a b\"", "must not contain whitespace (U+0020 at character 2)"),
        ("\"a\\u202Eb\"", "must not contain an invisible formatting character (U+202E at character 2)"),
        ("\"job😀\"", "must not contain a character outside the Basic Multilingual Plane (such as an emoji), which ZooKeeper refuses (U+1F600 at character 4)"),
        ("\"a\\uE000\"", "must not contain a private-use character"),
        ("a@-@b", "must not contain '@-@'"),
        (String(repeating: "x", count: 129), "is 129 bytes long, more than the 128 allowed"),
    ])
    func jobNames(name: String, phrase: String) throws {
        let error = try #require(Self.failure(Self.job("", name: name)), "accepted \(name)")
        #expect(error.field == "jobs[0].jobName", "\(error)")
        #expect(error.message.contains(phrase), "\(error)")
        #expect(error.location != nil)
        // The message quotes the name escaped: it stays one line, whatever the name held.
        #expect(!error.description.contains("\n") && !error.description.contains("\u{1B}"), "\(error)")
    }

    @Test("good names of every kind pass, up to the limit")
    func goodNames() throws {
        for name in ["orderSync", "order-sync_2", "com.acme.Billing", "订单同步", "Zürich.täglich", String(repeating: "x", count: 128)] {
            #expect(Self.failure(Self.job("", name: "\"\(name)\"")) == nil, "\(name)")
        }
    }

    @Test("namespaces: the same rule, plus ZooKeeper's own tree; an empty digest or a token that cannot travel in a header are refused", arguments: [
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: zookeeper\n", "registry.zookeeper.namespace: 'zookeeper' is ZooKeeper's own reserved tree"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: \"..\"\n", "registry.zookeeper.namespace: must not be '.' or '..'"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: \"ns\\t1\"\n", "registry.zookeeper.namespace: must not contain a control character"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: \"ns😀\"\n", "registry.zookeeper.namespace: must not contain a character outside the Basic Multilingual Plane"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    digest: \"\"\n",
         "registry.zookeeper.digest: is empty; give `user:password`, or remove the field to connect without authentication"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    digest: \"user:\"\n", "registry.zookeeper.digest: must be `user:password`, both parts non-empty"),
        ("api:\n  token: \"0123456789abcdef\\n0123\"\n", "api.token: holds a line break: a token travels in an HTTP header"),
        ("api:\n  token: \"0123456789 abcdef\"\n", "api.token: holds a space"),
    ])
    func otherNames(text: String, phrase: String) throws {
        let error = try #require(Self.failure(text), "accepted:\n\(text)")
        #expect(error.description.contains(phrase), "\(error)")
    }

    @Test("a token file whose token holds a line break is refused")
    func tokenFileWithLineBreak() throws {
        let directory = try TemporaryDirectory()
        try "0123456789abcdef\n0123456789abcdef\n".write(toFile: directory.path + "/token", atomically: true, encoding: .utf8)
        do {
            _ = try HostConfigurationReader.parse("api:\n  tokenFile: token\n", file: "host.yaml", baseDirectory: directory.path)
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("api.tokenFile: the token in \(directory.path)/token holds a line break"), "\(error)")
        }
    }

    @Test("a configuration too large for one registry request is refused, with its size")
    func tooLarge() throws {
        let parameter = String(repeating: "p", count: 300_000)
        let error = try #require(Self.failure(Self.job("    jobParameter: \(parameter)\n")))
        #expect(error.description.contains("job 'a': configuration: takes 300"), "\(error.description.prefix(300))")
        #expect(error.description.contains("more than the 262144 allowed"))
    }

    @Test("the registry's copy is read by the same rules: a total of 1,000,000, another job's name and a bad name are refused, naming the node")
    func registryCopy() throws {
        var job = JobConfiguration(jobName: "orders", jobType: "t", cron: nil, shardingTotalCount: 4)
        var yaml = ElasticJobYAML.encode(job)
        #expect(try ElasticJobYAML.decode(yaml, jobType: "t", job: "orders") == job)
        do {
            _ = try ElasticJobYAML.decode(yaml.replacingOccurrences(of: "shardingTotalCount: 4", with: "shardingTotalCount: 1000000"), jobType: "t", job: "orders")
            Issue.record("accepted 1,000,000 items")
        } catch {
            #expect(error.description.hasPrefix("/orders/config:") && error.description.contains("must be at most 1024"), "\(error)")
        }
        do {
            _ = try ElasticJobYAML.decode(yaml, jobType: "t", job: "payments")
            Issue.record("applied another job's configuration")
        } catch {
            #expect(error.description.contains("names job 'orders', but it is the configuration of 'payments'"), "\(error)")
        }
        job.jobName = "a\nb"
        yaml = ElasticJobYAML.encode(job)
        #expect(throws: HostConfigurationError.self) { try ElasticJobYAML.decode(yaml, jobType: "t", job: "a\nb") }
    }

    @Test("a job made in code is held to the same limits when a host prepares it")
    func preparedInCode() throws {
        var job = JobConfiguration(jobName: "big", jobType: "log-item", cron: nil, shardingTotalCount: 1)
        job.maxTimeDiffSeconds = Int.max
        #expect(JobLimits.violation(of: job)?.field == "maxTimeDiffSeconds")
        job.maxTimeDiffSeconds = -1
        job.shardingTotalCount = JobLimits.maximumShardingTotalCount + 1
        #expect(JobLimits.violation(of: job)?.field == "shardingTotalCount")
        job.shardingTotalCount = JobLimits.maximumShardingTotalCount
        #expect(JobLimits.violation(of: job) == nil)
    }

    @Test("plugin properties read as positive integers are bounded by a Java int, so plugins' arithmetic cannot overflow")
    func pluginIntegers() throws {
        let properties = JobProperties([(key: "n", value: "9223372036854775807")])
        #expect(throws: ConfigurationError.self) { try properties.positiveInteger("n", default: 1) }
        let fine = JobProperties([(key: "n", value: "2147483647")])
        #expect(try fine.positiveInteger("n", default: 1) == 2_147_483_647)
        #expect(throws: ConfigurationError.self) { try fine.positiveInteger("n", default: 1, maximum: 10) }
    }
}
