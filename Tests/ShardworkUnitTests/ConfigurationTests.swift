import Foundation
@testable import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("Host configuration")
struct ConfigurationTests {
    func parse(_ text: String) throws -> HostConfiguration {
        try HostConfigurationReader.parse(text, file: "host.yaml", baseDirectory: "/etc/shardwork")
    }

    func expectError(_ text: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try HostConfigurationReader.parse(text, file: "host.yaml", baseDirectory: "/etc/shardwork")
            Issue.record("accepted:\n\(text)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description == expected, sourceLocation: sourceLocation)
        }
    }

    @Test("a full file: registry, plugins, host settings and jobs with ElasticJob's field names")
    func full() throws {
        let configuration = try parse("""
            registry:
              embedded: {}
            plugins:
              directories: [plugins, /opt/shardwork/plugins]
              preflight: false
            host:
              shutdownTimeoutSeconds: 12.5
              workerThreads: 6
            jobs:
              - jobName: orders
                jobType: log-item
                cron: 0/5 * * * * ?
                timeZone: Asia/Shanghai
                shardingTotalCount: 3
                shardingItemParameters: 0=Beijing,1=Shanghai,2=Guangzhou
                jobParameter: sync
                monitorExecution: true
                failover: true
                misfire: yes
                maxTimeDiffSeconds: 60
                reconcileIntervalMinutes: 10
                jobShardingStrategyType: ROUND_ROBIN
                jobExecutorServiceHandlerType: SINGLE_THREAD
                jobErrorHandlerType: LOG
                jobListenerTypes: [audit, metrics]
                description: Sync orders
                props:
                  streaming.process: true
                  shardwork.item.timeout.seconds: 30
                disabled: false
                overwrite: true
                label: blue
                staticSharding: true
              - jobName: report
                jobType: report
                shardingTotalCount: 1
            """)
        #expect(configuration.registry == .embedded)
        #expect(configuration.plugins.directories == ["/etc/shardwork/plugins", "/opt/shardwork/plugins"])
        #expect(configuration.plugins.preflight == false)
        #expect(configuration.host.shutdownTimeoutSeconds == 12.5)
        #expect(configuration.host.workerThreads == 6)
        let orders = configuration.jobs[0]
        #expect(orders.jobName == "orders" && orders.jobType == "log-item")
        #expect(orders.cron == "0/5 * * * * ?")
        #expect(orders.timeZone == "Asia/Shanghai")
        #expect(orders.shardingTotalCount == 3)
        #expect(orders.monitorExecution && orders.failover && orders.misfire && orders.overwrite && orders.staticSharding)
        #expect(orders.maxTimeDiffSeconds == 60 && orders.reconcileIntervalMinutes == 10)
        #expect(orders.jobExecutorThreadPoolSizeProviderType == "SINGLE_THREAD")
        #expect(orders.jobListenerTypes == ["audit", "metrics"])
        #expect(orders.props["streaming.process"] == "true")
        #expect(orders.props[HostProperty.itemTimeoutSeconds] == "30")
        #expect(orders.label == "blue")
        #expect(configuration.locations["jobs[0].cron"] == FilePosition(line: 12, column: 11))
    }

    @Test("absent fields take ElasticJob's YAML defaults, not its builder's")
    func yamlDefaults() throws {
        let job = try #require(try parse("""
            jobs:
              - jobName: j
                jobType: t
                shardingTotalCount: 2
            """).jobs.first)
        #expect(job.cron == nil && job.isOneOff)
        #expect(job.monitorExecution == false)
        #expect(job.misfire == false)
        #expect(job.reconcileIntervalMinutes == 0)
        #expect(job.maxTimeDiffSeconds == -1)
        #expect(job.failover == false && job.disabled == false && job.overwrite == false && job.staticSharding == false)
        #expect(job.jobShardingStrategyType == nil && job.jobExecutorThreadPoolSizeProviderType == nil && job.jobErrorHandlerType == nil)
        #expect(job.shardingItemParameters == "" && job.jobParameter == "" && job.description == "")
    }

    @Test("a ZooKeeper registry with ElasticJob's names; 0 timeouts mean Curator's defaults")
    func zookeeper() throws {
        let configuration = try parse("""
            registry:
              zookeeper:
                serverLists: 127.0.0.1:2181, 127.0.0.1:2182
                namespace: shardwork
                sessionTimeoutMilliseconds: 0
                connectionTimeoutMilliseconds: 5000
                maxRetries: 5
                digest: app:secret
            jobs: []
            """)
        guard case .zookeeper(let zookeeper) = configuration.registry else {
            Issue.record("not ZooKeeper")
            return
        }
        #expect(zookeeper.serverLists == "127.0.0.1:2181,127.0.0.1:2182")
        #expect(zookeeper.namespace == "shardwork")
        #expect(zookeeper.sessionTimeoutMilliseconds == 60_000)
        #expect(zookeeper.connectionTimeoutMilliseconds == 5_000)
        #expect(zookeeper.baseSleepTimeMilliseconds == 1_000 && zookeeper.maxSleepTimeMilliseconds == 3_000)
        #expect(zookeeper.maxRetries == 5)
        #expect(zookeeper.digest == "app:secret")
        #expect(zookeeper.waitForServer == false)
    }

    @Test("no registry section means the embedded registry; no plugins section means the defaults")
    func sectionDefaults() throws {
        let configuration = try parse("jobs: []")
        #expect(configuration.registry == .embedded)
        #expect(configuration.plugins == PluginSettings())
        #expect(configuration.host.shutdownTimeoutSeconds == 30)
    }

    @Test("hot-load settings: cache and watched directories relative to the file, poll interval, generation limit")
    func hotLoadSettings() throws {
        let configuration = try parse("""
            plugins:
              cacheDirectory: cache
              watchDirectory: /srv/incoming
              watchIntervalSeconds: 0.5
              maxGenerations: 4
            jobs: []
            """)
        #expect(configuration.plugins.cacheDirectory == "/etc/shardwork/cache")
        #expect(configuration.plugins.watchDirectory == "/srv/incoming")
        #expect(configuration.plugins.watchIntervalSeconds == 0.5)
        #expect(configuration.plugins.maxGenerations == 4)
        let defaults = PluginSettings()
        #expect(defaults.cacheDirectory == nil && defaults.watchDirectory == nil)
        #expect(defaults.watchIntervalSeconds == 2 && defaults.maxGenerations == 16)
        #expect(PluginSettings.defaultCacheDirectory.contains("/shardwork-plugin-cache-"))
    }

    @Test("the control API: loopback by default, an address and a token or a token file; absent, no API")
    func apiSettings() throws {
        #expect(try parse("jobs: []\n").api == nil)
        let defaults = try parse("api:\n  token: 0123456789abcdef\njobs: []\n").api
        #expect(defaults?.host == "127.0.0.1" && defaults?.port == 8470 && defaults?.enabled == true)
        let given = try parse("api:\n  address: 0.0.0.0:9000\n  token: 0123456789abcdef\n").api
        #expect(given?.host == "0.0.0.0" && given?.port == 9000 && given?.token == "0123456789abcdef")
        #expect(APISettings.parseAddress(":0")! == ("127.0.0.1", 0))
        #expect(APISettings.parseAddress("[::1]:8470")! == ("::1", 8470))
        let off = try parse("api:\n  enabled: false\n").api
        #expect(off?.enabled == false && off?.token == nil)
        let directory = try TemporaryDirectory()
        try "  from-a-file-0123456789\n".write(toFile: directory.file("token"), atomically: true, encoding: .utf8)
        let fromFile = try HostConfigurationReader.parse("api:\n  tokenFile: token\n", file: "host.yaml", baseDirectory: directory.path).api
        #expect(fromFile?.token == "from-a-file-0123456789")
    }

    @Test("the metrics endpoint: absent, none; an empty section, loopback port 9471 without a token; an address; a token with the API's")
    func metricsSettings() throws {
        #expect(try parse("jobs: []\n").metrics == nil)
        let defaults = try parse("metrics: {}\njobs: []\n").metrics
        #expect(defaults?.host == "127.0.0.1" && defaults?.port == 9471 && defaults?.enabled == true && defaults?.requireToken == false)
        let given = try parse("api:\n  token: 0123456789abcdef\nmetrics:\n  address: 0.0.0.0:9100\n  requireToken: true\n").metrics
        #expect(given?.host == "0.0.0.0" && given?.port == 9100 && given?.requireToken == true)
        #expect(try parse("metrics:\n  enabled: false\n  requireToken: true\n").metrics?.enabled == false)
    }

    @Test("one job read alone, as the control API reads it, in YAML or JSON, with the same checks")
    func singleJob() throws {
        let yaml = try HostConfigurationReader.parseJob("jobName: a\njobType: t\ncron: \"0/5 * * * * ?\"\nshardingTotalCount: 2\n")
        let json = try HostConfigurationReader.parseJob(#"{"jobName": "a", "jobType": "t", "cron": "0/5 * * * * ?", "shardingTotalCount": 2}"#)
        #expect(yaml == json && yaml.shardingTotalCount == 2)
        #expect(throws: HostConfigurationError.self) { try HostConfigurationReader.parseJob("") }
        do {
            _ = try HostConfigurationReader.parseJob(#"{"jobName": "a", "jobType": "t", "shardingTotalCont": 2}"#, source: "request body")
            Issue.record("accepted a misspelt field")
        } catch {
            #expect(error.field == "shardingTotalCont" && error.message.contains("`shardingTotalCount`"))
        }
    }

    @Test("bad input names the file, line and column, the job and the field", arguments: [
        ("plugins:\n  maxGenerations: 0\n", "host.yaml:2:19: plugins.maxGenerations: must be between 1 and 1024 plugin images loaded by hot-loads, got 0"),
        ("plugins:\n  watchIntervalSeconds: 0\n", "host.yaml:2:25: plugins.watchIntervalSeconds: must be between 0.1 and 3600 seconds, got 0.0"),
        ("plugins:\n  watchDir: /srv/incoming\n", "host.yaml:2:3: plugins.watchDir: unknown field; did you mean `watchDirectory`?"),
        ("plugins:\n  cacheDirectory: [a]\n", "host.yaml:2:19: plugins.cacheDirectory: expected a text value, got a list"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 0\n",
         "host.yaml:4:25: job 'a': shardingTotalCount: must be at least 1 (shardingTotalCount should be larger than zero), got 0"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: three\n",
         "host.yaml:4:25: job 'a': shardingTotalCount: expected a whole number, got 'three'"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 2\n    corn: 0 * * * * ?\n",
         "host.yaml:5:5: jobs[0].corn: unknown field; did you mean `cron`?"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 2\n    shardingItemParameters: 0=a,b\n",
         "host.yaml:5:29: job 'a': shardingItemParameters: Sharding item parameters '0=a,b' format error, should be int=xx,int=xx"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 2\n    shardingItemParameters: x=a\n",
         "host.yaml:5:29: job 'a': shardingItemParameters: Sharding item parameters key 'x' is not an integer."),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n",
         "host.yaml:5:5: job 'a': jobName: two jobs have this name (first at line 2); job names are unique"),
        ("jobs:\n  - jobType: t\n    shardingTotalCount: 1\n",
         "host.yaml:2:5: jobs[0].jobName: required: every job needs a name"),
        ("jobs:\n  - jobName: a\n    shardingTotalCount: 1\n",
         "host.yaml:2:5: job 'a': jobType: required: the name of a job type a plugin provides (`shardwork plugins list` shows them)"),
        ("jobs:\n  - jobName: a/b\n    jobType: t\n    shardingTotalCount: 1\n",
         "host.yaml:2:14: jobs[0].jobName: 'a/b' must not contain '/' (it is one registry node name)"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    failover: true\n",
         "host.yaml:5:15: job 'a': failover: failover needs monitorExecution: true (without running markers a crashed host's items cannot be found)"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    misfire: maybe\n",
         "host.yaml:5:14: job 'a': misfire: expected true or false, got 'maybe'"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    props:\n      shardwork.item.timeout.seconds: -5\n",
         "host.yaml:6:7: job 'a': props.shardwork.item.timeout.seconds: must be a number of seconds above zero and at most 2592000 (30 days), got '-5'"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    props:\n      shardwork.item.timeout: 5\n",
         "host.yaml:6:7: job 'a': props.shardwork.item.timeout: unknown host property (the `shardwork.` prefix is reserved for the host); did you mean `shardwork.item.timeout.seconds`?"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    jobExecutorThreadPoolSizeProviderType: CPU\n    jobExecutorServiceHandlerType: SINGLE_THREAD\n",
         "host.yaml:6:36: job 'a': jobExecutorServiceHandlerType: contradicts jobExecutorThreadPoolSizeProviderType ('SINGLE_THREAD' against 'CPU'); they are two spellings of one setting (ElasticJob 3.0.4 and 3.0.5), give one"),
        ("jobs:\n  - jobName: a\n    jobType: t\n    shardingTotalCount: 1\n    jobListenerTypes: audit\n",
         "host.yaml:5:23: job 'a': jobListenerTypes: expected a list (`[a, b]` or lines starting with `- `), got 'audit'"),
        ("registry:\n  zookeeper:\n    namespace: x\n", "host.yaml:3:5: registry.zookeeper.serverLists: required: the ZooKeeper servers, as `host:port,host:port`"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181,b\n    namespace: x\n", "host.yaml:3:18: registry.zookeeper.serverLists: 'b' is not `host:port` with a port from 1 to 65535"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n", "host.yaml:3:5: registry.zookeeper.namespace: required: the top node under which every job lives, for example `shardwork`"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a/b\n", "host.yaml:4:16: registry.zookeeper.namespace: must not contain '/' (it is one registry node name)"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    digest: nocolon\n", "host.yaml:5:13: registry.zookeeper.digest: must be `user:password`, both parts non-empty"),
        ("registry:\n  zookeeper:\n    serverLists: a:2181\n    namespace: a\n    sessionTimeout: 5\n", "host.yaml:5:5: registry.zookeeper.sessionTimeout: unknown field; did you mean `sessionTimeoutMilliseconds`?"),
        ("jobz: []\n", "host.yaml:1:1: jobz: unknown field; did you mean `jobs`?"),
        ("host:\n  workerThreads: 0\n", "host.yaml:2:18: host.workerThreads: must be between 1 and 4096, got 0"),
        ("api:\n  address: 127.0.0.1:1\n", "host.yaml:2:3: api.token: required: every request to the control API must carry this bearer token; set api.token or api.tokenFile (or api.enabled: false)"),
        ("api:\n  token: short\n", "host.yaml:2:10: api.token: too short: use at least 16 characters (for example `openssl rand -hex 24`)"),
        ("api:\n  address: localhost\n  token: 0123456789abcdef\n", "host.yaml:2:12: api.address: must be HOST:PORT such as 127.0.0.1:8470 (port 0 picks a free one), got 'localhost'"),
        ("api:\n  address: 127.0.0.1:70000\n  token: 0123456789abcdef\n", "host.yaml:2:12: api.address: must be HOST:PORT such as 127.0.0.1:8470 (port 0 picks a free one), got '127.0.0.1:70000'"),
        ("api:\n  token: 0123456789abcdef\n  tokenFile: t\n", "host.yaml:3:14: api.tokenFile: give api.token or api.tokenFile, not both"),
        ("api:\n  tokenFile: /nonexistent/token\n", "host.yaml:2:14: api.tokenFile: cannot read /nonexistent/token"),
        ("api:\n  tokn: 0123456789abcdef\n", "host.yaml:2:3: api.tokn: unknown field; did you mean `token`?"),
        ("metrics:\n  address: 9471\n", "host.yaml:2:12: metrics.address: must be HOST:PORT such as 127.0.0.1:9471 (port 0 picks a free one), got '9471'"),
        ("metrics:\n  requireToken: true\n", "host.yaml:2:3: metrics.requireToken: needs the control API's token: set api.token or api.tokenFile, or drop metrics.requireToken"),
        ("api:\n  token: 0123456789abcdef\nmetrics:\n  address: 127.0.0.1:8470\n",
         "host.yaml:4:3: metrics.address: is the control API's address (127.0.0.1:8470); the metrics need a listener of their own, such as 127.0.0.1:9471"),
        ("metrics:\n  adress: 127.0.0.1:1\n", "host.yaml:2:3: metrics.adress: unknown field; did you mean `address`?"),
        ("host:\n  ip: 10.0.0\n", "host.yaml:2:7: host.ip: must be an IPv4 address such as 10.0.0.5 (ElasticJob's server nodes are IPv4), got '10.0.0'"),
        ("jobs:\n  - jobName: a\n    jobType: t\n   shardingTotalCount: 1\n", "host.yaml:4:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection at 2:3)"),
        ("", "host.yaml: the file is empty; it needs at least a `jobs:` list"),
        ("- a\n- b\n", "host.yaml:1:1: (top level): expected a mapping of `key: value` lines, got a list"),
    ])
    func badInput(text: String, expected: String) {
        expectError(text, expected)
    }

    @Test("ElasticJob's item-parameter rules", arguments: [
        ("0=a,1=b", [0: "a", 1: "b"]),
        (" 0 = Beijing , 1=Shanghai ", [0: "Beijing", 1: "Shanghai"]),
        ("0=a,", [0: "a"]),
        ("", [:]),
        ("5=x", [5: "x"]),
        ("-1=neg", [-1: "neg"]),
    ])
    func itemParameters(text: String, expected: [Int: String]) throws {
        #expect(try ShardingItemParameters.parse(text) == expected)
    }

    @Test("malformed item parameters get ElasticJob's messages", arguments: [
        ("0=a,b", "Sharding item parameters '0=a,b' format error, should be int=xx,int=xx"),
        ("0=a=b", "Sharding item parameters '0=a=b' format error, should be int=xx,int=xx"),
        ("0=", "Sharding item parameters '0=' format error, should be int=xx,int=xx"),
        ("a=b", "Sharding item parameters key 'a' is not an integer."),
        ("99999999999=b", "Sharding item parameters key '99999999999' is not an integer."),
        ("=b", "Sharding item parameters key '' is not an integer."),
    ])
    func badItemParameters(text: String, message: String) {
        #expect(throws: ShardingItemParameters.ParseError(message)) { try ShardingItemParameters.parse(text) }
    }
}

@Suite("ElasticJob's config node YAML")
struct ElasticJobYAMLTests {
    @Test("a builder-default config, as SnakeYAML writes it")
    func builderDefaults() {
        var job = JobConfiguration(jobName: "myJob", jobType: "t", cron: "0/5 * * * * ?", shardingTotalCount: 3)
        job.shardingItemParameters = "0=Beijing,1=Shanghai,2=Guangzhou"
        job.monitorExecution = true
        job.misfire = true
        job.reconcileIntervalMinutes = 10
        #expect(ElasticJobYAML.encode(job) == """
            cron: 0/5 * * * * ?
            description: ''
            disabled: false
            failover: false
            jobName: myJob
            jobParameter: ''
            maxTimeDiffSeconds: -1
            misfire: true
            monitorExecution: true
            overwrite: false
            reconcileIntervalMinutes: 10
            shardingItemParameters: 0=Beijing,1=Shanghai,2=Guangzhou
            shardingTotalCount: 3
            staticSharding: false

            """)
    }

    @Test("every optional field set, as SnakeYAML writes it")
    func allFields() {
        var job = JobConfiguration(jobName: "myJob", jobType: "t", cron: "0/5 * * * * ?", shardingTotalCount: 3)
        job.shardingItemParameters = "0=Beijing,1=Shanghai,2=Guangzhou"
        job.monitorExecution = true
        job.misfire = true
        job.failover = true
        job.reconcileIntervalMinutes = 10
        job.jobErrorHandlerType = "DINGTALK"
        job.jobExecutorThreadPoolSizeProviderType = "SINGLE_THREAD"
        job.jobListenerTypes = ["simpleListener"]
        job.jobShardingStrategyType = "ROUND_ROBIN"
        job.label = "blue"
        job.overwrite = true
        job.props = JobProperties([("dingtalk.webhook", "https://example.invalid/robot/send?access_token=x"), ("streaming.process", "true")])
        job.staticSharding = true
        job.timeZone = "GMT+08:00"
        #expect(ElasticJobYAML.encode(job) == """
            cron: 0/5 * * * * ?
            description: ''
            disabled: false
            failover: true
            jobErrorHandlerType: DINGTALK
            jobExecutorThreadPoolSizeProviderType: SINGLE_THREAD
            jobListenerTypes:
            - simpleListener
            jobName: myJob
            jobParameter: ''
            jobShardingStrategyType: ROUND_ROBIN
            label: blue
            maxTimeDiffSeconds: -1
            misfire: true
            monitorExecution: true
            overwrite: true
            props:
              dingtalk.webhook: https://example.invalid/robot/send?access_token=x
              streaming.process: 'true'
            reconcileIntervalMinutes: 10
            shardingItemParameters: 0=Beijing,1=Shanghai,2=Guangzhou
            shardingTotalCount: 3
            staticSharding: true
            timeZone: GMT+08:00

            """)
    }

    @Test("strings that would read as something else are quoted", arguments: [
        ("true", "'true'"), ("no", "'no'"), ("0", "'0'"), ("1.5", "'1.5'"), ("~", "'~'"), ("null", "'null'"),
        ("2026-01-01", "'2026-01-01'"), ("0x1F", "'0x1F'"), ("a: b", "'a: b'"), ("a #b", "'a #b'"), (" lead", "' lead'"),
        ("- x", "'- x'"), ("*star", "'*star'"), ("it's", "it's"), ("{x}", "'{x}'"), ("plain text", "plain text"),
        ("line\nbreak", "\"line\\nbreak\""), ("任务", "任务"), ("", "''"), ("=", "'='"), ("a,b", "a,b"),
    ])
    func quoting(value: String, written: String) {
        #expect(ElasticJobYAML.quoted(value) == written)
    }

    @Test("what is written reads back the same, and ElasticJob 3.0.4's executor key is read too")
    func roundTrip() throws {
        var job = JobConfiguration(jobName: "myJob", jobType: "report", cron: "0 0 * * * ?", shardingTotalCount: 4)
        job.jobParameter = "true"
        job.props = JobProperties([("a", "1"), ("b", "x: y")])
        job.jobListenerTypes = ["l1", "l2"]
        job.monitorExecution = true
        job.failover = true
        let decoded = try ElasticJobYAML.decode(ElasticJobYAML.encode(job), jobType: "report", job: "myJob")
        #expect(decoded == job)

        let legacy = try ElasticJobYAML.decode(
            "jobName: old\nshardingTotalCount: 2\njobExecutorServiceHandlerType: SINGLE_THREAD\n", jobType: "t", job: "old")
        #expect(legacy.jobExecutorThreadPoolSizeProviderType == "SINGLE_THREAD")
        #expect(legacy.monitorExecution == false && legacy.misfire == false && legacy.reconcileIntervalMinutes == 0)
    }

    @Test("garbage in a config node is an error naming the node")
    func garbage() {
        #expect {
            try ElasticJobYAML.decode("jobName: x\nshardingTotalCount: [\n", jobType: "t", job: "x")
        } throws: { error in
            "\(error)".hasPrefix("/x/config:")
        }
    }
}
