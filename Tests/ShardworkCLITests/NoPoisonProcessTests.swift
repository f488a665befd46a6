import Foundation
import Logging
import ShardworkCore
import ShardworkTestSupport
import Testing
import ZooKeeper

/// No single bad value, plugin or request takes a real host, or a cluster of them, down.

/// A host process on the embedded registry with the C test plugin, in a directory of its own.
private final class LoneHost {
    let directory: TemporaryDirectory
    let plugins: String
    let config: String
    private(set) var runs = 0

    init(defines: [String] = []) async throws {
        directory = try TemporaryDirectory("shardwork-lone")
        plugins = try directory.subdirectory("plugins")
        try await CPluginBuilder.testPlugin(in: plugins, defines: defines)
        config = directory.file("host.yaml")
    }

    /// Writes the configuration: `extra` top-level sections, then `jobs`.
    func configure(_ jobs: String, plugins extraPlugins: String = "  preflight: false", extra: String = "") throws {
        try """
            plugins:
              directories: [\(plugins)]
            \(extraPlugins)
            host:
              ip: 127.0.0.1
              stateDirectory: \(directory.file("state"))
              shutdownTimeoutSeconds: 2
            \(extra)
            jobs:
            \(jobs)
            """.write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// Starts `shardwork run` with the configuration as it is now, logging to a file of its own.
    /// Without Swift's backtracer: a host that crashes here does so on purpose, and symbolicating
    /// its crash would take both cores for seconds from the tests running alongside.
    func start() throws -> HostProcess {
        runs += 1
        return try HostProcess(
            ip: "127.0.0.1", config: config, log: directory.file("run-\(runs).log"), environment: ["SWIFT_BACKTRACE": "enable=no"])
    }

    var journal: String { (try? String(contentsOfFile: directory.file("state/crashes-127.0.0.1.log"), encoding: .utf8)) ?? "" }
}

/// Whether a line of `output` is about `job` (its `job=` metadata) and contains `text`.
private func logged(_ output: String, job: String, _ text: String) -> Bool {
    output.split(separator: "\n").contains { $0.contains("job=\(job) ") && $0.contains(text) }
}

/// Processes whose command line contains every one of `words`.
private func processes(with words: [String]) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> Int32? in
        guard let pid = Int32(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return words.allSatisfy { word in arguments.contains { $0.contains(word) } } ? pid : nil
    }
}

/// Deletes `path` and everything under it with a client of its own, over again while hosts write
/// into it (as zkCli's `deleteall` would be run again); true once it is gone.
private func deleteAll(_ path: String, on servers: String) async throws -> Bool {
    let client = try ZooKeeperClient(servers: servers, sessionTimeout: .seconds(10), logger: Logger(label: "zk") { _ in SwiftLogNoOpLogHandler() })
    defer { Task { await client.close() } }
    /// Deletes `node` and its subtree; the error code of the first failure other than a node
    /// already gone, or `nil`.
    func remove(_ node: String) async -> ZooKeeperError.Code? {
        var children: [String] = []
        var failure: ZooKeeperError?
        do {
            children = try await client.children(node)
        } catch {
            failure = error
        }
        if let failure { return failure.code == .noNode ? nil : failure.code }
        for child in children {
            if let code = await remove(node + "/" + child) { return code }
        }
        do {
            try await client.delete(node, version: nil)
        } catch {
            failure = error
        }
        if let failure, failure.code != .noNode { return failure.code }
        return nil
    }
    for _ in 0..<20 {
        // A host may write a node meanwhile (`notEmpty`): delete again.
        if await remove(path) == nil { return true }
    }
    return false
}

private let sturdyJob = """
      - jobName: sturdy
        jobType: c-echo
        cron: "* * * * * ?"
        shardingTotalCount: 1
    """

@Suite("No poison: real hosts survive bad jobs, plugins and values", .timeLimit(.minutes(4)))
struct NoPoisonProcessTests {
    @Test("a host that dies making a job's providers refuses that job at its next start (the crash journal), runs the rest, and takes the job up once it changes")
    func crashJournal() async throws {
        let lone = try await LoneHost()
        let fragile = """
              - jobName: fragile
                jobType: c-echo
                cron: "* * * * * ?"
                shardingTotalCount: 1
                props:
                  c.crash.create: yes
            """
        // No trial (preflight off): the provider is made in the host, which dies.
        try lone.configure(fragile + "\n" + sturdyJob)
        let first = try lone.start()
        let died = await first.exit()
        #expect(died.signalled && died.status == SIGSEGV, "\(first.output)")
        #expect(lone.journal.contains("crash\t11\t1\tfragile\t"), "journal: \(lone.journal)")

        // The same configuration again: the host starts, without the job.
        let second = try lone.start()
        let refused = await waitUntil { logged(second.output, job: "fragile", "this host cannot run it") && logged(second.output, job: "sturdy", "] fired") }
        #expect(refused, "\(second.output)")
        #expect(second.output.contains("this host died of Segmentation fault (signal 11) while creating its providers (crash journal)"), "\(second.output)")
        #expect(second.process.isRunning)
        #expect(await second.stop() == 0)

        // Changed (the plugin no longer asked to crash): taken up again.
        try lone.configure(fragile.replacingOccurrences(of: "c.crash.create", with: "c.note") + "\n" + sturdyJob)
        let third = try lone.start()
        #expect(await waitUntil { logged(third.output, job: "fragile", "] fired") }, "\(third.output)")
        #expect(await third.stop() == 0)
    }

    @Test("a host that dies in an item run in process (a fire armed ahead) records the job, and at its next start sets it aside and runs the rest")
    func crashWhileRunning() async throws {
        let lone = try await LoneHost()
        // In process, without listeners or running markers: the item is started from its wave.
        try lone.configure(
            """
              - jobName: brittle
                jobType: c-crash
                cron: "* * * * * ?"
                shardingTotalCount: 1
                shardingItemParameters: "0=crash"
            """ + "\n" + sturdyJob)
        let first = try lone.start()
        let died = await first.exit()
        #expect(died.signalled && died.status == SIGSEGV, "\(first.output)")
        #expect(lone.journal.contains("crash\t11\t\(CrashPhase.running.rawValue)\tbrittle\t"), "journal: \(lone.journal)")

        let second = try lone.start()
        let refused = await waitUntil { logged(second.output, job: "brittle", "this host cannot run it") && logged(second.output, job: "sturdy", "] fired") }
        #expect(refused, "\(second.output)")
        #expect(second.output.contains("while running one of its items (crash journal)"), "\(second.output)")
        #expect(await second.stop() == 0)
    }

    @Test("SIGTERM during a hot-load whose trial would take ten minutes stops the host at once, and the trial with it")
    func shutdownDuringHotLoad() async throws {
        let lone = try await LoneHost()
        let hanging = try await CPluginBuilder.testPlugin(in: try lone.directory.subdirectory("incoming"), named: "libhang.so", defines: ["VARIANT_HANG"])
        let port = try await SharedZooKeeper.unusedPort()
        try lone.configure(
            sturdyJob, plugins: "  preflightTimeoutSeconds: 600",
            extra: "api:\n  address: 127.0.0.1:\(port)\n  token: \(apiToken)")
        let host = try lone.start()
        let url = "http://127.0.0.1:\(port)"
        #expect(await waitUntil { (try? await HTTP.request("GET", url + "/v1/jobs", token: apiToken).status) == 200 }, "\(host.output)")
        let load = Task { try await shardwork("plugins", "load", hanging, "--host", url, "--token", apiToken) }
        // The hot-load is under way once its trial process runs.
        #expect(await waitUntil { !processes(with: ["--in-process", "libhang"]).isEmpty }, "\(host.output)")
        #expect(await host.stop(SIGTERM) == 0, "\(host.output)")
        let answer = try await load.value
        #expect(!answer.succeeded)
        #expect(await waitUntil { processes(with: ["--in-process", "libhang"]).isEmpty })
    }

    @Test("on a cluster: values over a limit and providers that crash are refused by the API, set aside by every host when written to the registry, and taken up when corrected; no host dies")
    func cluster() async throws {
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let plugins = try cluster.directory.subdirectory("plugins")
        try await CPluginBuilder.testPlugin(in: plugins)
        let (api, url) = try await cluster.api()
        let extra = "plugins:\n  directories: [\(plugins)]\n  preflight: true\n" + api
        let base = cluster.job("base", total: 4)
        let ips = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]
        var hosts: [HostProcess] = []
        for ip in ips {
            hosts.append(try cluster.start(ip, jobs: base, extra: ip == ips[0] ? extra : "plugins:\n  directories: [\(plugins)]\n  preflight: true"))
        }
        defer { Task { await cluster.stopAll() } }
        #expect(await cluster.waitForAPI(url), "\(cluster.logs())")
        #expect(await cluster.waitForFire(of: "base") { $0.count == 3 && $0.values.flatMap { $0 }.sorted() == [0, 1, 2, 3] } != nil, "\(cluster.logs())")
        func allAlive() -> Bool { hosts.allSatisfy { $0.process.isRunning } }
        func incapable(_ job: String) async -> [String] { (try? await cluster.observer.children("/\(job)/incapable", watch: nil)) ?? [] }

        // 1. Over a limit: refused by the API, naming the field.
        let overflow = cluster.directory.file("overflow.yaml")
        try "jobName: overflow\njobType: c-echo\ncron: \"* * * * * ?\"\nshardingTotalCount: 2\nmaxTimeDiffSeconds: 9223372036854775807\n"
            .write(toFile: overflow, atomically: true, encoding: .utf8)
        let refusedLimit = try await control(url, "job", "add", "--config", overflow)
        #expect(!refusedLimit.succeeded && refusedLimit.standardError.contains("maxTimeDiffSeconds"), "\(refusedLimit.standardError)")

        // Written to the registry directly (a tool, an older version): every host sets it aside.
        for (path, value) in [("/overflow", "c-echo"), ("/overflow/config", "cron: '* * * * * ?'\njobName: overflow\nmaxTimeDiffSeconds: 9223372036854775807\nshardingTotalCount: 2\n"),
                              ("/overflow/dynamic", "{\"addedBy\":\"test\",\"addedAt\":\"2026-12-06T00:00:00Z\"}")] {
            _ = try await cluster.observer.create(path, data: [UInt8](utf8: value), mode: .persistent)
        }
        #expect(await waitUntil { await incapable("overflow").count == 3 }, "\(cluster.logs())")
        #expect(await cluster.text("/overflow/incapable/\(hosts[1].instanceID)")?.contains("maxTimeDiffSeconds: must be from") == true)
        #expect(allAlive(), "\(cluster.logs())")

        // 2. A provider that crashes while it is made: refused by the API after its trial.
        let crashing = cluster.directory.file("crashing.yaml")
        try "jobName: crashing\njobType: c-echo\ncron: \"* * * * * ?\"\nshardingTotalCount: 2\nprops:\n  c.crash.create: \"yes\"\n"
            .write(toFile: crashing, atomically: true, encoding: .utf8)
        let refusedCrash = try await control(url, "job", "add", "--config", crashing)
        #expect(!refusedCrash.succeeded && refusedCrash.standardError.contains("crashed a separate trial process"), "\(refusedCrash.standardError)")
        #expect(allAlive(), "\(cluster.logs())")
        for (path, value) in [("/crashing", "c-echo"), ("/crashing/config", "cron: '* * * * * ?'\njobName: crashing\nprops:\n  c.crash.create: 'yes'\nshardingTotalCount: 2\n"),
                              ("/crashing/dynamic", "{\"addedBy\":\"test\",\"addedAt\":\"2026-12-06T00:00:00Z\"}")] {
            _ = try await cluster.observer.create(path, data: [UInt8](utf8: value), mode: .persistent)
        }
        #expect(await waitUntil { await incapable("crashing").count == 3 }, "\(cluster.logs())")
        #expect(allAlive(), "\(cluster.logs())")
        let status = try await control(url, "job", "status", "crashing", "--json")
        #expect(status.standardOutput.contains("crashed a separate trial process"), "\(status.standardOutput)")

        // 3. A running job's total set to 1,000,000 in the registry: set aside everywhere, no
        // leader wedged sharding it; set back to 4, taken up at once.
        let stored = try #require(await cluster.text("/base/config"))
        try await cluster.observer.put("/base/config", stored.replacingOccurrences(of: "shardingTotalCount: 4", with: "shardingTotalCount: 1000000"))
        #expect(await waitUntil { await incapable("base").count == 3 }, "\(cluster.logs())")
        #expect(await waitUntil { await cluster.instances("base").isEmpty })
        #expect(!(await cluster.exists("/base/leader/election/instance")))
        #expect(allAlive(), "\(cluster.logs())")
        try await cluster.observer.put("/base/config", stored)
        #expect(await waitUntil { await cluster.instances("base").count == 3 }, "\(cluster.logs())")
        let fixedAt = now()
        #expect(await cluster.waitForFire(of: "base", after: fixedAt) { $0.values.flatMap { $0 }.sorted() == [0, 1, 2, 3] } != nil, "\(cluster.logs())")
        #expect(allAlive(), "\(cluster.logs())")
    }

    @Test("a namespace deleted, or deleted and created again, is written back by the hosts: configured and added jobs fire again")
    func namespaceDeleted() async throws {
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let (api, url) = try await cluster.api()
        let configured = cluster.job("configured", total: 4)
        try cluster.start("127.0.0.41", jobs: configured, extra: api)
        try cluster.start("127.0.0.42", jobs: configured)
        defer { Task { await cluster.stopAll() } }
        #expect(await cluster.waitForAPI(url), "\(cluster.logs())")
        let added = cluster.directory.file("added.yaml")
        try """
            jobName: added
            jobType: log-item
            cron: "* * * * * ?"
            shardingTotalCount: 2
            monitorExecution: true
            props:
              log-item.ledger: \(cluster.ledger)
            """.write(toFile: added, atomically: true, encoding: .utf8)
        let outcome = try await control(url, "job", "add", "--config", added)
        #expect(outcome.succeeded, "\(outcome.standardError)")
        for job in ["configured", "added"] {
            #expect(await cluster.waitForFire(of: job) { $0.count == 2 } != nil, "\(job): \(cluster.logs())")
        }
        for recreate in [false, true] {
            // As an operator would (zkCli's `deleteall`), while the hosts write into it.
            #expect(try await deleteAll("/\(cluster.namespace)", on: cluster.ensemble.connectString), "\(cluster.logs())")
            if recreate { try await cluster.observer.ensureNamespace() }
            let deletedAt = now()
            for (job, total) in [("configured", 4), ("added", 2)] {
                let back = await cluster.waitForFire(of: job, after: deletedAt + 1000, seconds: 40) {
                    $0.count == 2 && $0.values.flatMap { $0 }.sorted() == Array(0..<total)
                }
                #expect(back != nil, "\(job) after the namespace was deleted\(recreate ? " and created again" : ""): \(cluster.logs())")
            }
            #expect(await cluster.exists("/added/dynamic"))
        }
    }

    @Test("generated configurations through the real binary: each exits 2 with one located line, or starts and stops on SIGTERM with 0; never a signal or a hang")
    func generatedConfigurations() async throws {
        let seed = ProcessInfo.processInfo.environment["SHARDWORK_GENERATED_SEED"].flatMap { UInt64($0) } ?? UInt64(Date().timeIntervalSince1970)
        print("generated runs: seed \(seed) (SHARDWORK_GENERATED_SEED replays it)")
        var random = SplitMix64(seed: seed &+ 2)
        let lone = try await LoneHost()
        var outcomes: [String: Int] = [:]
        for index in 0..<24 {
            var yaml = GeneratedConfiguration.base
            for _ in 0...Int.random(in: 0..<2, using: &random) { yaml = GeneratedConfiguration.mutate(yaml, &random) }
            let text = yaml.render().replacingOccurrences(of: "{PLUGINS}", with: lone.plugins) + "\n"
            try text.write(toFile: lone.config, atomically: true, encoding: .utf8)
            let label = "case \(index) of seed \(seed)"
            let host = try lone.start()
            let settled = await waitUntil(seconds: 60) { !host.process.isRunning || host.output.contains("host started") }
            #expect(settled, "\(label): neither refused nor started within a minute\n--- input:\n\(text.prefix(1500))\n--- output:\n\(host.output.suffix(1500))")
            if host.process.isRunning {
                let stopped = await host.terminate(SIGTERM)
                #expect(stopped.status == 0 && !stopped.signalled, "\(label): a started host stopped with \(stopped)\n\(host.output.suffix(1500))")
                outcomes["started", default: 0] += 1
            } else {
                let exited = await host.exit()
                let lines = host.output.split(separator: "\n").filter { $0.hasPrefix("shardwork: ") }
                #expect(!exited.signalled && exited.status == 2,
                        "\(label): exited with \(exited.status) (\(exited.signalled ? "signal" : "status"))\n--- input:\n\(text.prefix(1500))\n--- output:\n\(host.output.suffix(1500))")
                // One line, naming the file (and, from the reader, the place in it).
                #expect(lines.count == 1 && lines[0].contains(lone.config), "\(label): \(host.output.suffix(800))")
                outcomes["refused", default: 0] += 1
            }
        }
        print("generated runs: \(outcomes)")
    }

    @Test("a stop signal before the host listens for one (waiting for ZooKeeper at start) ends it at once with 0, rather than killing it")
    func signalDuringStart() async throws {
        let lone = try await LoneHost()
        let port = try await SharedZooKeeper.unusedPort()
        try lone.configure(
            sturdyJob,
            extra: "registry:\n  zookeeper:\n    serverLists: 127.0.0.1:\(port)\n    namespace: nowhere\n    waitForServer: true\n    baseSleepTimeMilliseconds: 100\n    maxSleepTimeMilliseconds: 200")
        let host = try lone.start()
        #expect(await waitUntil { host.output.contains("not connected to ZooKeeper") }, "\(host.output)")
        let stopped = await host.terminate(SIGTERM)
        #expect(stopped.status == 0 && !stopped.signalled, "\(host.output)")
    }
}
