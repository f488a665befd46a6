import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import ShardworkCore
import ShardworkTestSupport
import Testing

/// The control API and the `shardwork job`/`server` commands against real hosts on a real
/// ZooKeeper: each operation's effect in the registry and on the hosts.

let apiToken = "test-token-0123456789abcdef"

extension Cluster {
    /// An `api:` section on a free loopback port; returns the section and the host's URL.
    func api() async throws -> (section: String, url: String) {
        let port = try await SharedZooKeeper.unusedPort()
        return ("api:\n  address: 127.0.0.1:\(port)\n  token: \(apiToken)", "http://127.0.0.1:\(port)")
    }

    /// Waits until the host's control API answers.
    func waitForAPI(_ url: String) async -> Bool {
        await waitUntil(seconds: 30) { (try? await HTTP.request("GET", url + "/v1/jobs", token: apiToken).status) == 200 }
    }

    func exists(_ path: String) async -> Bool {
        ((try? await observer.exists(path, watch: nil)) ?? nil) != nil
    }

    func text(_ path: String) async -> String? {
        (try? await observer.textIfPresent(path))??.text
    }
}

/// Plain HTTP requests to the control API, for what the CLI does not send (no token, bad bodies).
enum HTTP {
    struct Answer {
        var status: Int
        var body: String
        var headers: [String: String]
        /// `error.field`, `error.message`, ... of an error answer.
        var error: [String: Any]? {
            ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["error"] as? [String: Any]
        }
    }

    static func request(_ method: String, _ url: String, token: String?, body: String? = nil, headers: [String: String] = [:]) async throws -> Answer {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = body.map { Data($0.utf8) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (key, value) in http.allHeaderFields { fields["\(key)".lowercased()] = "\(value)" }
        return Answer(status: http.statusCode, body: String(decoding: data, as: UTF8.self), headers: fields)
    }
}

/// Runs `shardwork ARGS --host URL --token T`.
func control(_ url: String, _ arguments: String...) async throws -> ProcessOutcome {
    try await shardwork(arguments + ["--host", url, "--token", apiToken])
}

@Suite("Operations on a running cluster, over the control API and the CLI", .timeLimit(.minutes(6)))
struct OperationsProcessTests {
    @Test("every job operation acts on the registry, and the hosts of the cluster follow it")
    func operations() async throws {
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let (apiA, urlA) = try await cluster.api()
        let (apiB, urlB) = try await cluster.api()
        let jobs = cluster.job("ops", total: 4) + "\n" + cluster.job("once", total: 2, cron: nil)
        let a = try cluster.start("127.0.0.21", jobs: jobs, extra: apiA)
        let b = try cluster.start("127.0.0.22", jobs: jobs, extra: apiB)
        defer { Task { await cluster.stopAll() } }
        let apiAUp = await cluster.waitForAPI(urlA)
        let apiBUp = await cluster.waitForAPI(urlB)
        let apisUp = apiAUp && apiBUp
        #expect(apisUp, "\(cluster.logs())")
        #expect(await cluster.waitForFire(of: "ops") { $0.count == 2 && $0.values.flatMap { $0 }.sorted() == [0, 1, 2, 3] } != nil, "\(cluster.logs())")

        // List and status, over either host.
        let list = try await control(urlB, "job", "list", "--json")
        #expect(list.succeeded, "\(list.standardError)")
        let briefs = try JSONDecoder().decode([JobBrief].self, from: Data(list.standardOutput.utf8))
        #expect(briefs.map(\.jobName) == ["once", "ops"])
        #expect(briefs.first { $0.jobName == "ops" }?.instanceCount == 2)
        let statusText = try await control(urlA, "job", "status", "ops")
        #expect(statusText.succeeded && statusText.standardOutput.contains(a.instanceID) && statusText.standardOutput.contains(b.instanceID), "\(statusText.standardOutput)")

        // Disable a server: its items go to the other.
        var outcome = try await control(urlA, "job", "disable", "ops", "--server", "127.0.0.22")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await cluster.text("/ops/servers/127.0.0.22") == "DISABLED")
        let disabledAt = now()
        #expect(await cluster.waitForFire(of: "ops", after: disabledAt) { $0 == ["127.0.0.21": [0, 1, 2, 3]] } != nil, "\(cluster.logs())")
        outcome = try await control(urlB, "job", "enable", "ops", "--server", "127.0.0.22")
        let enabledValue = await cluster.text("/ops/servers/127.0.0.22")
        #expect(outcome.succeeded && enabledValue == "ENABLED")
        let enabledAt = now()
        #expect(await cluster.waitForFire(of: "ops", after: enabledAt) { $0.count == 2 } != nil, "\(cluster.logs())")

        // A server for every job at once.
        outcome = try await control(urlA, "server", "disable", "127.0.0.22")
        let disabledValues = [await cluster.text("/ops/servers/127.0.0.22"), await cluster.text("/once/servers/127.0.0.22")]
        let serverDisabled = disabledValues == ["DISABLED", "DISABLED"]
        #expect(outcome.succeeded && serverDisabled, "\(outcome.standardError)")
        outcome = try await control(urlA, "server", "enable", "127.0.0.22")
        let enabledValues = [await cluster.text("/ops/servers/127.0.0.22"), await cluster.text("/once/servers/127.0.0.22")]
        let serverEnabled = enabledValues == ["ENABLED", "ENABLED"]
        #expect(outcome.succeeded && serverEnabled, "\(outcome.standardError)")

        // Disable an item: its owner skips it.
        outcome = try await control(urlA, "job", "item", "disable", "ops", "3")
        let itemDisabled = await cluster.exists("/ops/sharding/3/disabled")
        #expect(outcome.succeeded && itemDisabled)
        let itemDisabledAt = now()
        #expect(await cluster.waitForFire(of: "ops", after: itemDisabledAt) { $0.values.flatMap { $0 }.sorted() == [0, 1, 2] } != nil)
        outcome = try await control(urlA, "job", "item", "enable", "ops", "3")
        let stillDisabled = await cluster.exists("/ops/sharding/3/disabled")
        #expect(outcome.succeeded && !stillDisabled)

        // Trigger a one-off job: each instance runs its items once.
        outcome = try await control(urlB, "job", "trigger", "once")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await waitUntil { cluster.entries.filter { $0.job == "once" }.map(\.item).sorted() == [0, 1] })

        // Read and change the configuration: validated, versioned, applied by every host.
        outcome = try await control(urlA, "job", "config", "ops", "--json")
        let stored = try JSONDecoder().decode(StoredJobConfiguration.self, from: Data(outcome.standardOutput.utf8))
        #expect(stored.configuration?.shardingTotalCount == 4)
        let changed = cluster.directory.file("ops-2.yaml")
        try """
            jobName: ops
            jobType: log-item
            cron: "* * * * * ?"
            shardingTotalCount: 2
            monitorExecution: true
            props:
              log-item.ledger: \(cluster.ledger)
            """.write(toFile: changed, atomically: true, encoding: .utf8)
        outcome = try await control(urlB, "job", "config", "ops", "--set", changed, "--version", "\(stored.version + 7)")
        #expect(outcome.status == 2 && outcome.standardError.contains("version"), "a stale version is refused: \(outcome.standardError)")
        outcome = try await control(urlB, "job", "config", "ops", "--set", changed, "--version", "\(stored.version)")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        let resizedAt = now()
        #expect(await cluster.waitForFire(of: "ops", after: resizedAt) { $0.values.flatMap { $0 }.sorted() == [0, 1] } != nil, "\(cluster.logs())")
        let bad = cluster.directory.file("ops-bad.yaml")
        try "jobName: ops\njobType: log-item\ncron: \"61 * * * * ?\"\nshardingTotalCount: 2\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let before = await cluster.text("/ops/config")
        outcome = try await control(urlA, "job", "config", "ops", "--set", bad)
        #expect(outcome.status == 2 && outcome.standardError.contains("cron"), "\(outcome.standardError)")
        #expect(await cluster.text("/ops/config") == before, "a refused configuration changes nothing")

        // Dump and servers.
        outcome = try await control(urlA, "job", "dump", "ops")
        #expect(outcome.succeeded && outcome.standardOutput.contains("/ops/config | ") && outcome.standardOutput.contains("/ops/servers/127.0.0.21 | ENABLED"))
        outcome = try await control(urlA, "server", "list", "--json")
        let servers = try JSONDecoder().decode([ServerBrief].self, from: Data(outcome.standardOutput.utf8))
        #expect(servers.map(\.serverIp) == ["127.0.0.21", "127.0.0.22"] && servers.allSatisfy { $0.jobsNum == 2 })

        // Shut one instance's job down: it leaves, the other runs every item.
        outcome = try await control(urlA, "job", "shutdown", "ops", "--instance", b.instanceID)
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await waitUntil { await cluster.instances("ops") == [a.instanceID] }, "\(cluster.logs())")
        let shutAt = now()
        #expect(await cluster.waitForFire(of: "ops", after: shutAt) { $0 == ["127.0.0.21": [0, 1]] } != nil, "\(cluster.logs())")

        // A server shut down for every job: its instance leaves the other job too.
        outcome = try await control(urlB, "server", "shutdown", "127.0.0.22")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await waitUntil { await cluster.instances("once") == [a.instanceID] }, "\(cluster.logs())")

        // Remove the job: it stops everywhere and its nodes go.
        outcome = try await control(urlB, "job", "remove", "ops")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await waitUntil { !(await cluster.exists("/ops/config")) })
        try await Task.sleep(for: .seconds(2))
        let removedAt = now()
        try await Task.sleep(for: .seconds(3))
        #expect(cluster.entries.filter { $0.job == "ops" && $0.fire > removedAt }.isEmpty, "no fire of a removed job")
        #expect(a.output.split(separator: "\n").contains {
            $0.contains("job=ops ") && $0.contains(" reason=removed from the cluster ") && $0.hasSuffix("] stopped on this host")
        })
        outcome = try await control(urlA, "job", "status", "ops")
        #expect(outcome.status == 2 && outcome.standardError.contains("ops"), "\(outcome.standardError)")
    }

    @Test("a job added to the running cluster fires on every host that has its job type; a host without it takes no items and says so, and joins once the plugin is hot-loaded into it")
    func dynamicJobAndCapability() async throws {
        let cluster = try await Cluster(ensemble: try await SharedZooKeeper.ensemble())
        let (apiA, urlA) = try await cluster.api()
        let binDirectory = URL(fileURLWithPath: try TestPaths.shardworkBinary).deletingLastPathComponent().path
        // Host .33 has the standard plugins only, not the example job types (log-item).
        let standardOnly = """
            plugins:
              preflight: false
              builtIn: false
              files:
                - \(binDirectory)/libShardworkStandardSharding.so
                - \(binDirectory)/libShardworkStandardExecutors.so
                - \(binDirectory)/libShardworkStandardErrorHandlers.so
            """
        try cluster.start("127.0.0.31", jobs: "  []", extra: apiA)
        try cluster.start("127.0.0.32", jobs: "  []")
        let (apiC, urlC) = try await cluster.api()
        let c = try cluster.start("127.0.0.33", jobs: "  []", extra: standardOnly + "\n" + apiC)
        defer { Task { await cluster.stopAll() } }
        #expect(await cluster.waitForAPI(urlA), "\(cluster.logs())")

        let file = cluster.directory.file("dynamic.yaml")
        try """
            jobName: dynamic
            jobType: log-item
            cron: "* * * * * ?"
            shardingTotalCount: 6
            monitorExecution: true
            props:
              log-item.ledger: \(cluster.ledger)
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let outcome = try await control(urlA, "job", "add", "--config", file)
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(await cluster.waitForFire(of: "dynamic") { Set($0.keys) == ["127.0.0.31", "127.0.0.32"] && $0.values.flatMap { $0 }.sorted() == Array(0..<6) } != nil, "\(cluster.logs())")
        #expect(await waitUntil { await cluster.exists("/dynamic/incapable/\(c.instanceID)") })
        let reason = await cluster.text("/dynamic/incapable/\(c.instanceID)") ?? ""
        #expect(reason.contains("log-item"), "\(reason)")
        #expect(cluster.entries.allSatisfy { $0.ip != "127.0.0.33" })
        let status = try await control(urlA, "job", "status", "dynamic", "--json")
        let parsed = try JSONDecoder().decode(JobStatus.self, from: Data(status.standardOutput.utf8))
        #expect(parsed.incapable.map(\.instanceId) == [c.instanceID] && parsed.brief.dynamic && parsed.instances.count == 2)

        // Given the plugin it lacked (hot-loaded), the third host joins and gets its share.
        let loaded = try await control(urlC, "plugins", "load", binDirectory + "/libShardworkExampleJobs.so")
        #expect(loaded.succeeded, "\(loaded.standardError)")
        let joined = await waitUntil { await cluster.instances("dynamic").count == 3 }
        #expect(joined, "\(cluster.logs())")
        let incapableGone = await waitUntil { !(await cluster.exists("/dynamic/incapable/\(c.instanceID)")) }
        #expect(incapableGone)
        let joinedAt = now()
        #expect(await cluster.waitForFire(of: "dynamic", after: joinedAt) { $0.count == 3 && $0.values.flatMap { $0 }.sorted() == Array(0..<6) } != nil, "\(cluster.logs())")

        // Adding it again is a conflict; removing it stops it everywhere.
        let again = try await control(urlA, "job", "add", "--config", file)
        #expect(again.status == 2 && again.standardError.contains("dynamic"), "\(again.standardError)")
        let removed = try await control(urlA, "job", "remove", "dynamic")
        #expect(removed.succeeded)
        try await Task.sleep(for: .seconds(2))
        let removedAt = now()
        try await Task.sleep(for: .seconds(3))
        #expect(cluster.entries.filter { $0.job == "dynamic" && $0.fire > removedAt }.isEmpty, "\(cluster.logs())")
    }
}

@Suite("The control API's authentication and bad requests")
struct ControlAPITests {
    /// One host on the embedded registry with the API on a free port.
    static func host(_ directory: TemporaryDirectory) async throws -> (HostProcess, String) {
        let port = try await SharedZooKeeper.unusedPort()
        let config = directory.file("host.yaml")
        try """
            api:
              address: 127.0.0.1:\(port)
              token: \(apiToken)
            plugins:
              preflight: false
            jobs:
              - jobName: hello
                jobType: log-item
                cron: "0 0 0 1 1 ? 2099"
                shardingTotalCount: 2
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let host = try HostProcess(ip: "127.0.0.1", config: config, log: directory.file("host.log"))
        return (host, "http://127.0.0.1:\(port)")
    }

    @Test("no token or a wrong one: 401 with a JSON error; malformed and invalid bodies: 4xx naming the field; nothing half-applies")
    func authAndBadRequests() async throws {
        let directory = try TemporaryDirectory()
        let (host, url) = try await Self.host(directory)
        defer { Task { await host.stop() } }
        #expect(await waitUntil { (try? await HTTP.request("GET", url + "/v1/jobs", token: apiToken).status) == 200 }, "\(host.output)")

        var answer = try await HTTP.request("GET", url + "/v1/jobs", token: nil)
        #expect(answer.status == 401 && answer.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect((answer.error?["message"] as? String)?.contains("bearer token") == true, "\(answer.body)")
        answer = try await HTTP.request("POST", url + "/v1/jobs/hello/trigger", token: "wrong-token-0123456789")
        #expect(answer.status == 401)
        answer = try await HTTP.request("GET", url + "/v1/plugins", token: apiToken + "x")
        #expect(answer.status == 401, "a longer token is not the token")
        let cli = try await shardwork("job", "list", "--host", url, "--token", "wrong-token-0123456789")
        expectBadInput(cli, saying: "refused the token (401)")

        // Malformed JSON.
        answer = try await HTTP.request("POST", url + "/v1/jobs", token: apiToken, body: #"{"jobName": "x", "#)
        #expect(answer.status == 400 && answer.error != nil, "\(answer.body)")
        // An unknown field, with the nearest known one.
        answer = try await HTTP.request("POST", url + "/v1/jobs", token: apiToken, body: #"{"jobName": "x", "jobType": "log-item", "shardingTotalCont": 2}"#)
        #expect(answer.status == 422 && answer.error?["field"] as? String == "shardingTotalCont", "\(answer.body)")
        #expect((answer.error?["message"] as? String)?.contains("shardingTotalCount") == true)
        // An unknown job type, listing the known ones.
        answer = try await HTTP.request("POST", url + "/v1/jobs", token: apiToken, body: #"{"jobName": "x", "jobType": "nope", "shardingTotalCount": 2}"#)
        #expect(answer.status == 422 && answer.error?["field"] as? String == "jobType" && answer.error?["job"] as? String == "x", "\(answer.body)")
        #expect((answer.error?["message"] as? String)?.contains("log-item") == true)
        // Unknown job, item out of range.
        answer = try await HTTP.request("GET", url + "/v1/jobs/missing", token: apiToken)
        #expect(answer.status == 404 && (answer.error?["message"] as? String)?.contains("missing") == true, "\(answer.body)")
        answer = try await HTTP.request("POST", url + "/v1/jobs/hello/items/9/disable", token: apiToken)
        #expect(answer.status == 422 && answer.error?["field"] as? String == "item", "\(answer.body)")
        answer = try await HTTP.request("POST", url + "/v1/jobs/hello/items/x/disable", token: apiToken)
        #expect(answer.status == 400 && answer.error?["field"] as? String == "item", "\(answer.body)")
        // A configuration change with an invalid cron, and one that renames the job: refused, nothing changes.
        let before = try await HTTP.request("GET", url + "/v1/jobs/hello/config", token: apiToken)
        answer = try await HTTP.request("PUT", url + "/v1/jobs/hello/config", token: apiToken, body: "jobName: hello\njobType: log-item\ncron: \"61 * * * * ?\"\nshardingTotalCount: 3\n")
        #expect(answer.status == 422 && answer.error?["field"] as? String == "cron", "\(answer.body)")
        answer = try await HTTP.request("PUT", url + "/v1/jobs/hello/config", token: apiToken, body: "jobName: other\njobType: log-item\nshardingTotalCount: 3\n")
        #expect(answer.status == 422 && answer.error?["field"] as? String == "jobName", "\(answer.body)")
        let after = try await HTTP.request("GET", url + "/v1/jobs/hello/config", token: apiToken)
        #expect(before.body == after.body)
        // A valid change goes through.
        answer = try await HTTP.request("PUT", url + "/v1/jobs/hello/config", token: apiToken, body: #"{"jobName": "hello", "jobType": "log-item", "cron": "0 0 0 1 1 ? 2099", "shardingTotalCount": 3}"#)
        #expect(answer.status == 200, "\(answer.body)")
        answer = try await HTTP.request("GET", url + "/v1/jobs/hello", token: apiToken)
        #expect(answer.status == 200 && answer.body.contains(#""shardingTotalCount":3"#), "\(answer.body)")
        // Unknown routes answer JSON too.
        answer = try await HTTP.request("GET", url + "/v1/nothing", token: apiToken)
        #expect(answer.status == 404 && answer.error != nil, "\(answer.body)")
    }
}

@Suite("Hot-loading through the CLI into a running host", .timeLimit(.minutes(10)))
struct HotLoadProcessTests {
    struct AcmeLine: Decodable {
        var job: String
        var item: Int
        var fireTime: Int64
        var version: String
    }

    @Test("v2 of the Acme plugin, loaded with `shardwork plugins load` while its job fires every second: v1 fires, then v2 fires, none missed or doubled")
    func v1ThenV2() async throws {
        let v1 = try await ExampleBuilds.acmeV1.value
        let v2 = try await ExampleBuilds.acmeV2.value
        let directory = try TemporaryDirectory()
        let plugins = try directory.subdirectory("plugins")
        try FileManager.default.copyItem(atPath: v1, toPath: plugins + "/libAcmePlugins.so")
        let upload = try directory.subdirectory("v2") + "/libAcmePlugins.so"
        try FileManager.default.copyItem(atPath: v2, toPath: upload)
        let ledger = directory.file("acme.jsonl")
        let port = try await SharedZooKeeper.unusedPort()
        let url = "http://127.0.0.1:\(port)"
        let config = directory.file("host.yaml")
        try """
            api:
              address: 127.0.0.1:\(port)
              token: \(apiToken)
            plugins:
              directories: [plugins]
              cacheDirectory: cache
            jobs:
              - jobName: reports
                jobType: acme-report
                cron: "* * * * * ?"
                shardingTotalCount: 2
                props:
                  acme.ledger: \(ledger)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let host = try HostProcess(ip: "127.0.0.1", config: config, log: directory.file("host.log"))
        defer { Task { await host.stop() } }
        func lines() -> [AcmeLine] {
            ((try? String(contentsOfFile: ledger, encoding: .utf8)) ?? "").split(separator: "\n")
                .compactMap { try? JSONDecoder().decode(AcmeLine.self, from: Data($0.utf8)) }
        }
        #expect(await waitUntil { lines().count >= 6 }, "\(host.output)")

        // A file that is not a plugin is refused; v1 goes on.
        let junk = directory.file("libJunk.so")
        try "not a plugin".write(toFile: junk, atomically: true, encoding: .utf8)
        var outcome = try await control(url, "plugins", "load", junk)
        #expect(outcome.status == 2 && outcome.standardError.contains("nothing changed"), "\(outcome.standardError)")

        outcome = try await control(url, "plugins", "load", upload)
        #expect(outcome.succeeded && outcome.standardOutput.contains("acme 2.0.0 loaded as generation 2"), "\(outcome.standardOutput)\(outcome.standardError)")
        #expect(await waitUntil { lines().filter { $0.version == "2.0.0" }.count >= 6 }, "\(host.output)")
        outcome = try await control(url, "plugins", "list", "--json")
        let generations = try JSONDecoder.iso8601.decode([PluginGenerationStatus].self, from: Data(outcome.standardOutput.utf8))
        let acme = generations.filter { $0.name == "acme" }
        #expect(acme.map(\.generation) == [1, 2] && acme.map(\.state) == [.superseded, .current])
        #expect(acme.last?.jobs == ["reports"] && acme.first?.jobs == [])
        #expect(acme.last?.file == "libAcmePlugins.so (uploaded)", "the staging path is not what the list shows")

        // The ledger: fires one second apart, each with both items on one version, v1 then v2.
        var byFire: [Int64: [AcmeLine]] = [:]
        for line in lines() { byFire[line.fireTime, default: []].append(line) }
        let fires = byFire.keys.sorted().dropLast()  // the last fire may be still running
        #expect(zip(fires, fires.dropFirst()).allSatisfy { $1 - $0 == 1000 }, "no fire missed: \(fires)")
        for fire in fires {
            let items = byFire[fire]!
            #expect(items.map(\.item).sorted() == [0, 1], "each item once at \(fire): \(items.map(\.item))")
            #expect(Set(items.map(\.version)).count == 1, "one version per fire at \(fire)")
        }
        let versions = fires.map { byFire[$0]!.first!.version }
        #expect(versions.first == "1.0.0" && versions.last == "2.0.0")
        #expect(versions == versions.sorted(), "every v1 fire before every v2 fire: \(versions)")
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
