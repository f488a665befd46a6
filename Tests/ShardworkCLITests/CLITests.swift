import CShardworkSupport
import Foundation
import Synchronization
import ShardworkCore
import ShardworkTestSupport
import Testing

/// Runs the real `shardwork` binary from the build directory.
func shardwork(_ arguments: String...) async throws -> ProcessOutcome {
    try await shardwork(arguments)
}

func shardwork(_ arguments: [String]) async throws -> ProcessOutcome {
    try await Subprocess.run(try TestPaths.shardworkBinary, arguments)
}

/// Bad input: exit status 2 and exactly one line on standard error, starting with "shardwork: ".
func expectBadInput(_ outcome: ProcessOutcome, saying phrase: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(outcome.status == 2 && !outcome.signalled, "status \(outcome.status)", sourceLocation: sourceLocation)
    let lines = outcome.standardError.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "stderr: \(outcome.standardError)", sourceLocation: sourceLocation)
    #expect(lines.first?.hasPrefix("shardwork: ") == true, sourceLocation: sourceLocation)
    #expect(outcome.standardError.contains(phrase), "stderr: \(outcome.standardError)", sourceLocation: sourceLocation)
    #expect(outcome.standardOutput.isEmpty, sourceLocation: sourceLocation)
}

@Suite("shardwork plugins")
struct PluginsCommandTests {
    @Test("plugins list shows every standard provider with its kind, aliases, plugin, version and file")
    func listText() async throws {
        let outcome = try await shardwork("plugins", "list")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        let lines = outcome.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["KIND", "NAME", "ALIASES", "PLUGIN", "VERSION", "FILE"])
        let sharding = try TestPaths.builtInPlugin("ShardworkStandardSharding")
        #expect(lines.contains { $0.hasPrefix("sharding strategy  average ") && $0.contains("AVG_ALLOCATION") && $0.contains("standard-sharding") && $0.hasSuffix(sharding) })
        #expect(lines.count == 1 + BuiltInPlugins.providerNames.count)
        #expect(outcome.standardError.isEmpty)
    }

    @Test("plugins list --json")
    func listJSON() async throws {
        let outcome = try await shardwork("plugins", "list", "--json")
        #expect(outcome.succeeded)
        let document = try OrderedJSON.parse(outcome.standardOutput)
        let providers = try #require(document["providers"]?.array)
        #expect(providers.compactMap { $0["name"]?.string } == BuiltInPlugins.providerNames)
        let average = try #require(providers.first { $0["name"]?.string == "average" })
        #expect(average["kind"]?.string == "sharding-strategy")
        #expect(average["aliases"] == .array([.string("AVG_ALLOCATION")]))
        #expect(average["plugin"]?.string == "standard-sharding")
        #expect(average["version"]?.string == "0.1.0")
        #expect(average["file"]?.string == (try TestPaths.builtInPlugin("ShardworkStandardSharding")))
        #expect(document["refused"] == .array([]))
    }

    @Test("plugins list with a plugin directory: good plugins load, a crashing one is listed as refused")
    func listWithBadPlugins() async throws {
        let directory = try TemporaryDirectory()
        let plugins = try directory.subdirectory("plugins")
        try await CPluginBuilder.testPlugin(in: plugins, named: "libgood.so")
        try await CPluginBuilder.testPlugin(in: plugins, named: "libcrash.so", defines: ["VARIANT_CRASH", "NAME_PREFIX=\"x\""])
        try await CPluginBuilder.testPlugin(in: plugins, named: "libmajor.so", defines: ["VARIANT_ABI_MAJOR", "NAME_PREFIX=\"y\""])
        let outcome = try await shardwork("plugins", "list", "--json", "--plugin-dir", plugins)
        #expect(outcome.succeeded, "\(outcome.standardError)")
        let document = try OrderedJSON.parse(outcome.standardOutput)
        let names = try #require(document["providers"]?.array).compactMap { $0["name"]?.string }
        #expect(names.contains("c-modulo") && names.contains("average"))
        let refused = try #require(document["refused"]?.array)
        #expect(refused.compactMap { $0["file"]?.string } == [plugins + "/libcrash.so", plugins + "/libmajor.so"])
        let crashReasons = refused[0]["reasons"]?.array?.compactMap(\.string) ?? []
        #expect(crashReasons.contains { $0.contains("it crashed (Segmentation fault, signal 11) while a separate trial process loaded it") })
        #expect(refused[1]["reasons"]?.array?.first?.string?.contains("built for ABI 2.0, but this host speaks ABI 1.0") == true)
    }

    @Test("plugins list with a plugin directory that does not exist is bad input")
    func listMissingDirectory() async throws {
        expectBadInput(try await shardwork("plugins", "list", "--plugin-dir", "/nonexistent/plugins"),
                       saying: "--plugin-dir /nonexistent/plugins: no such directory")
    }

    @Test("plugins inspect of a sound plugin: descriptor, every check passed, exit 0")
    func inspectGood() async throws {
        let file = try TestPaths.builtInPlugin("ShardworkStandardExecutors")
        let outcome = try await shardwork("plugins", "inspect", file, "--json")
        #expect(outcome.status == 0, "\(outcome.standardError)")
        let document = try OrderedJSON.parse(outcome.standardOutput)
        #expect(document["accepted"] == .bool(true))
        #expect(document["file"]?.string == file)
        let checks = try #require(document["checks"]?.array)
        #expect(checks.compactMap { $0["id"]?.string } == [
            "file", "permissions", "elf", "entry-symbol", "load", "descriptor", "magic", "abi-version", "struct-sizes",
            "toolchain", "providers",
        ])
        #expect(checks.allSatisfy { $0["status"]?.string == "passed" })
        let descriptor = try #require(document["descriptor"])
        #expect(descriptor["name"]?.string == "standard-executors")
        #expect(descriptor["abiMajor"]?.int == 1)
        #expect(descriptor["toolchain"]?.string?.hasPrefix("swift-") == true)
        #expect(descriptor["providers"]?.array?.compactMap { $0["name"]?.string } == ["cpu", "single-thread", "fixed"])

        let text = try await shardwork("plugins", "inspect", file)
        #expect(text.status == 0)
        #expect(text.standardOutput.contains("  [ok  ] was built for an ABI version this host speaks"))
        #expect(text.standardOutput.hasSuffix("verdict: loadable\n"))
    }

    @Test("plugins inspect of a refused plugin: the failed check explained, exit 1")
    func inspectRefused() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_DESCRIPTOR_SIZE"])
        let outcome = try await shardwork("plugins", "inspect", file)
        #expect(outcome.status == 1 && !outcome.signalled)
        #expect(outcome.standardOutput.contains("  [FAIL] its struct sizes match the host's\n         the descriptor is 56 bytes, but ABI 1.0 defines it as 64"))
        #expect(outcome.standardOutput.contains("  [skip] was built by a toolchain this host can load"))
        #expect(outcome.standardOutput.hasSuffix("verdict: refused\n"))
    }

    @Test("plugins inspect of a plugin that crashes: the command survives and reports it, exit 1")
    func inspectCrash() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_CRASH"])
        let outcome = try await shardwork("plugins", "inspect", file, "--json")
        #expect(outcome.status == 1 && !outcome.signalled)
        let document = try OrderedJSON.parse(outcome.standardOutput)
        #expect(document["accepted"] == .bool(false))
        let load = document["checks"]?.array?.first { $0["id"]?.string == "load" }
        #expect(load?["status"]?.string == "failed")
        #expect(load?["details"]?.array?.first?.string?.contains("crashed (Segmentation fault, signal 11)") == true)
    }

    @Test("plugins inspect of a non-plugin library and of a text file: exit 1 with the reason")
    func inspectNonPlugins() async throws {
        let sdk = try await shardwork("plugins", "inspect", try TestPaths.product("libShardworkSDK.so"))
        #expect(sdk.status == 1)
        #expect(sdk.standardOutput.contains("not a Shardwork plugin: it does not define shardwork_plugin_entry"))
        let directory = try TemporaryDirectory()
        try "hello".write(toFile: directory.file("libtext.so"), atomically: true, encoding: .utf8)
        let text = try await shardwork("plugins", "inspect", directory.file("libtext.so"))
        #expect(text.status == 1)
        #expect(text.standardOutput.contains("not an ELF file"))
    }

    @Test("plugins inspect of a file that does not exist is bad input")
    func inspectMissing() async throws {
        expectBadInput(try await shardwork("plugins", "inspect", "/nonexistent/libx.so"), saying: "/nonexistent/libx.so: no such file")
    }
}

@Suite("shardwork shard")
struct ShardCommandTests {
    static let vectors: [OrderedJSON] = {
        let text = (try? String(contentsOfFile: TestPaths.fixture("sharding-vectors.json"), encoding: .utf8)) ?? "[]"
        return (try? OrderedJSON.parse(text).array) ?? []
    }()

    @Test("the vectors are there")
    func vectorsPresent() {
        #expect(Self.vectors.count == 305)
    }

    @Test("every sharding vector through shard --json, keys in the strategy's order", arguments: vectors)
    func vector(_ vector: OrderedJSON) async throws {
        let instances = vector["instances"]?.array?.compactMap(\.string) ?? []
        let outcome = try await shardwork(
            "shard", "--strategy", vector["strategy"]?.string ?? "", "--job", vector["jobName"]?.string ?? "",
            "--instances", instances.joined(separator: ","), "--total", "\(vector["shardingTotalCount"]?.int ?? 0)",
            "--json", "--no-preflight")
        #expect(outcome.succeeded, "\(outcome.standardError)")
        #expect(try OrderedJSON.parse(outcome.standardOutput) == vector["expected"], "\(vector["source"]?.string ?? "")")
    }

    @Test("text output: one line per instance in the strategy's order")
    func text() async throws {
        let outcome = try await shardwork("shard", "--strategy", "round-robin", "--job", "1", "--instances", "h0,h1,h2", "--total", "5")
        #expect(outcome.succeeded)
        #expect(outcome.standardOutput == "h1: 0, 3\nh2: 1, 4\nh0: 2\n")
    }

    @Test("no instances: an empty assignment")
    func noInstances() async throws {
        let outcome = try await shardwork("shard", "--strategy", "round-robin", "--job", "j", "--instances", "", "--total", "3", "--json")
        #expect(outcome.succeeded)
        #expect(outcome.standardOutput == "{}\n")
    }

    @Test("JSON output escapes instance ids")
    func escaping() async throws {
        let outcome = try await shardwork("shard", "--strategy", "average", "--job", "j", "--instances", "a\"b,c\\d", "--total", "2", "--json")
        #expect(outcome.standardOutput == "{\"a\\\"b\":[0],\"c\\\\d\":[1]}\n")
    }

    @Test("bad input: exit 2 and one line naming the problem", arguments: [
        (["--strategy", "avrage", "--job", "j", "--instances", "a", "--total", "1"],
         "--strategy: unknown sharding strategy 'avrage'; did you mean 'average'?; registered sharding strategies: average (AVG_ALLOCATION), odd-even (ODEVITY), round-robin (ROUND_ROBIN)"),
        (["--strategy", "average", "--job", "j", "--instances", "a", "--total", "0"], "--total must be at least 1"),
        (["--strategy", "average", "--job", "j", "--instances", "a", "--total", "many"], "many"),
        (["--strategy", "average", "--job", "j", "--instances", "a,b,a", "--total", "3"], "--instances: 'a' is listed twice"),
        (["--strategy", "average", "--job", "j", "--instances", "a,,b", "--total", "3"], "--instances: instance 2 is empty"),
        (["--strategy", "average", "--instances", "a", "--total", "3"], "--job"),
        (["--strategy", "average", "--job", "j", "--instances", "a", "--total", "2000000"], "--total must be at most 1024"),
    ])
    func badInput(arguments: [String], phrase: String) async throws {
        expectBadInput(try await shardwork(["shard"] + arguments), saying: phrase)
    }
}

@Suite("shardwork")
struct TopLevelTests {
    @Test("--version and --help exit 0")
    func versionAndHelp() async throws {
        let version = try await shardwork("--version")
        #expect(version.succeeded)
        #expect(version.standardOutput == "0.1.0\n")
        let help = try await shardwork("--help")
        #expect(help.succeeded)
        #expect(help.standardOutput.contains("plugins"))
        #expect(help.standardOutput.contains("shard"))
    }

    @Test("an unknown command or option is bad input", arguments: [["frobnicate"], ["plugins", "list", "--colour"], ["--log-level", "loud", "plugins", "list"]])
    func unknown(arguments: [String]) async throws {
        let outcome = try await shardwork(arguments)
        #expect(outcome.status == 2)
        #expect(outcome.standardError.split(separator: "\n").count == 1, "\(outcome.standardError)")
    }

    @Test("an unknown log level is bad input")
    func logLevel() async throws {
        expectBadInput(try await shardwork("plugins", "list", "--log-level", "loud"), saying: "unknown log level 'loud'")
    }
}

@Suite("shardwork cron next")
struct CronCommandTests {
    static let cases: [OrderedJSON] = {
        let text = (try? String(contentsOfFile: TestPaths.fixture("cron-quartz-sample.jsonl"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? OrderedJSON.parse(String($0)) }
    }()

    @Test("the Quartz sample is there")
    func casesPresent() {
        #expect(Self.cases.count == 240)
    }

    @Test("every case of the Quartz 2.3.2 sample through cron next --json; invalid ones exit 2", arguments: cases)
    func quartzCase(_ sample: OrderedJSON) async throws {
        let cron = sample["cron"]?.string ?? ""
        var arguments = ["cron", "next", cron, "--time-zone", sample["timeZone"]?.string ?? "UTC",
                         "--after", String(sample["start"]?.int64 ?? 0)]
        if sample["invalid"] == .bool(true) {
            arguments.append("--json")
            let outcome = try await shardwork(arguments)
            expectBadInput(outcome, saying: "invalid cron expression")
            return
        }
        let expected = sample["next"]?.array ?? []
        arguments += ["--count", "12", "--json"]  // the sample lists up to 12, fewer when the schedule ends
        let outcome = try await shardwork(arguments)
        #expect(outcome.succeeded, "\(cron): \(outcome.standardError)")
        #expect(try OrderedJSON.parse(outcome.standardOutput) == .array(expected), "\(cron) in \(sample["timeZone"]?.string ?? "")")
    }

    @Test("text output: local times in the zone and epoch milliseconds")
    func text() async throws {
        let outcome = try await shardwork("cron", "next", "0 15 10 ? * 6#3", "--time-zone", "America/New_York",
                                    "--after", "1830297598243", "--count", "2")
        #expect(outcome.succeeded)
        #expect(outcome.standardOutput == "2028-01-21T10:15:00-05:00  1832080500000\n2028-02-18T10:15:00-05:00  1834499700000\n")
    }

    @Test("no fire time left is said, not an error")
    func exhausted() async throws {
        let outcome = try await shardwork("cron", "next", "0 0 0 1 1 ? 2020", "--after", "1830297598243")
        #expect(outcome.succeeded)
        #expect(outcome.standardOutput == "(no fire time after that instant)\n")
    }

    @Test("bad input: exit 2 with the reason", arguments: [
        (["cron", "next", "60 * * * * ?"], "seconds: value 60 at position 1 is out of range 0-59"),
        (["cron", "next", "0 0 0 * * ?", "--time-zone", "Mars/Base"], "invalid time zone 'Mars/Base'"),
        (["cron", "next", "0 0 0 * * ?", "--count", "0"], "--count must be between 1 and 10000"),
        (["cron", "next", "0 0 0 * * ?", "--after", "soon"], "soon"),
    ])
    func badInput(arguments: [String], phrase: String) async throws {
        expectBadInput(try await shardwork(arguments), saying: phrase)
    }
}

@Suite("shardwork run")
struct RunCommandTests {
    func write(_ yaml: String, in directory: TemporaryDirectory) throws -> String {
        let file = directory.file("host.yaml")
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    @Test("bad configurations are refused before anything starts: exit 2, naming the job and the field", arguments: [
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n   cron: x\n", "invalid YAML"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n    cronn: 0 * * * * ?\n", "jobs[0].cronn: unknown field; did you mean `cron`?"),
        ("jobs:\n  - jobName: a\n    jobType: log-itm\n    shardingTotalCount: 1\n", "job 'a': jobType: unknown job type 'log-itm'; did you mean 'log-item'?; registered job types: countdown, "),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n    cron: 0 0 0 * * *\n", "job 'a': cron: invalid cron expression '0 0 0 * * *'"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 0\n", "job 'a': shardingTotalCount: must be at least 1"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 2\n    shardingItemParameters: 0-a\n", "job 'a': shardingItemParameters: Sharding item parameters '0-a' format error"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n  - jobName: a\n    jobType: countdown\n    shardingTotalCount: 1\n", "job 'a': jobName: two jobs have this name"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n    jobExecutorThreadPoolSizeProviderType: fixed\n", "job 'a': props.fixed.threads: The property `fixed.threads` is required."),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n    jobErrorHandlerType: PAGERDUTY\n", "job 'a': jobErrorHandlerType: unknown error handler 'PAGERDUTY'"),
        ("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n    jobErrorHandlerType: EMAIL\n", "job 'a': props.email.host: The property `email.host` is required."),
    ])
    func badConfiguration(yaml: String, phrase: String) async throws {
        let directory = try TemporaryDirectory()
        let file = try write(yaml, in: directory)
        let outcome = try await shardwork("run", "--config", file, "--no-preflight")
        expectBadInput(outcome, saying: phrase)
        #expect(outcome.standardError.hasPrefix("shardwork: \(file):"))
    }

    @Test("a missing file, an unknown --trigger, a missing plugin directory, a bad --api and a control command without a token are bad input")
    func badArguments() async throws {
        expectBadInput(try await shardwork("run", "--config", "/nonexistent/host.yaml"), saying: "/nonexistent/host.yaml: cannot read the file")
        let directory = try TemporaryDirectory()
        let file = try write("jobs:\n  - jobName: a\n    jobType: log-item\n    shardingTotalCount: 1\n", in: directory)
        expectBadInput(try await shardwork("run", "--config", file, "--trigger", "b"), saying: "--trigger b: no such job")
        let withDirectory = try write("plugins:\n  directories: [missing]\njobs: []\n", in: directory)
        expectBadInput(try await shardwork("run", "--config", withDirectory), saying: "plugins.directories: \(directory.path)/missing: no such directory")
        expectBadInput(try await shardwork("run", "--config", file, "--api", "127.0.0.1:8479"), saying: "has no api: section")
        let withAPI = try write("api:\n  token: 0123456789abcdef\njobs: []\n", in: directory)
        expectBadInput(try await shardwork("run", "--config", withAPI, "--api", "nowhere"), saying: "--api nowhere: not HOST:PORT")
        // The commands that speak to a host: a token and a URL are needed.
        expectBadInput(try await shardwork("job", "list", "--host", "ftp://x", "--token", "t"), saying: "not an http:// or https:// URL")
        expectBadInput(
            try await Subprocess.run(try TestPaths.shardworkBinary, ["job", "list", "--host", "http://127.0.0.1:1"], environment: ["SHARDWORK_TOKEN": ""]),
            saying: "no token")
        let unreachable = try await shardwork("job", "list", "--host", "http://127.0.0.1:1", "--token", "0123456789abcdef")
        #expect(unreachable.status == 1 && unreachable.standardError.contains("no answer from the control API"), "\(unreachable.standardError)")
    }

    /// Runs the real binary until its output holds every phrase of `awaited` (at most `timeout`
    /// seconds), then sends `signal`; returns its exit status and output.
    func runUntil(
        _ awaited: [String], timeout: Double = 30, _ arguments: [String], signal: Int32
    ) async throws -> (status: Int32, signalled: Bool, log: String) {
        // Its output comes through a pipe whose ends close on exec: only the child's copy (its
        // standard output and errors) stays open in it, so the reader sees the end when it exits.
        var ends: [Int32] = [-1, -1]
        guard shardwork_pipe(&ends) == 0 else { throw TestSetupError("pipe(): \(String(cString: strerror(errno)))") }
        let process: SpawnedProcess
        do {
            defer { close(ends[1]) }
            process = try SpawnedProcess(try TestPaths.shardworkBinary, arguments, currentDirectory: TestPaths.repositoryRoot, output: ends[1])
        } catch {
            close(ends[0])
            throw error
        }
        let guardian = try ChildGuard(process.pid)
        defer { guardian.release() }
        // Reading blocks: on a thread of its own, never on a cooperative one.
        let reader = FileHandle(fileDescriptor: ends[0], closeOnDealloc: true)
        let received = Mutex(Data())
        let collected = Task {
            try await onOwnThread {
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    received.withLock { $0.append(chunk) }
                }
            }
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            let text = received.withLock { String(decoding: $0, as: UTF8.self) }
            if awaited.allSatisfy({ text.contains($0) }) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        process.signal(signal)
        try await collected.value
        let exited = await process.waitForExit()
        let log = received.withLock { String(decoding: $0, as: UTF8.self) }
        return (exited.status, exited.signalled, log)
    }

    @Test("the quick start on the real binary: items fire within seconds, and SIGINT, SIGTERM or SIGHUP stops it with exit 0",
          arguments: [SIGINT, SIGTERM, SIGHUP])
    func quickStart(signal: Int32) async throws {
        // Every job fires within seconds (inventory-sync every 5 s); the signal comes once all have.
        // Waiting for the output rather than a fixed time keeps the test true on a busy machine,
        // where start-up (a trial load of each built-in plugin in a process of its own) is slow.
        // At info a fire shows as its items' own lines; the per-fire summaries are at debug.
        let (status, signalled, log) = try await runUntil(
            ["nightly-report item 3/4", "greetings item 1/3: parameter Shanghai", "inventory-sync item 0: processed 2, 1",
             "inventory-sync item 1: processed"],
            ["run", "--config", "examples/quickstart.yaml", "--trigger", "nightly-report"], signal: signal)
        #expect(status == 0 && !signalled, "\(log)")
        for item in 0..<4 { #expect(log.contains("nightly-report item \(item)/4: parameter"), "\(log)") }
        #expect(log.contains("greetings item 1/3: parameter Shanghai, job parameter 'hello'"))
        #expect(log.contains("inventory-sync item 0: processed 2, 1"))
        #expect(!log.split(separator: "\n").contains { $0.hasSuffix("] fired") }, "per-fire summaries are at debug")
        #expect(log.contains("stopped"))
        // Every line is stamped to the millisecond: `2026-12-06T07:21:04.123+0000 info shardwork: …`.
        let stamp = #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} (trace|debug|info|notice|warning|error|critical) /#
        let lines = log.split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.firstMatch(of: stamp) != nil }, "\(lines.filter { $0.firstMatch(of: stamp) == nil }.prefix(3))")
    }
}
