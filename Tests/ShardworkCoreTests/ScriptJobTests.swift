import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

/// The script job (Plugins/ScriptJob) loaded from the build directory, running real scripts.
@Suite("Script job", .stopsWhatItStarts)
struct ScriptJobTests {
    let log = CapturedLog()
    let registry = ProviderRegistry()
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory("shardwork-script")
        try TestPlugins.load(try TestPaths.builtInPlugin("ShardworkScriptJob"), into: registry, log: log)
    }

    func job(_ properties: [(String, String)]) throws -> JobTypeInstance {
        try JobTypeInstance(try registry.resolve(.jobType, "SCRIPT"), setup: TestPlugins.setup("SCRIPT", properties, job: "exports"))
    }

    /// A shell script in the test's directory, executable.
    func script(_ name: String, _ body: String) throws -> String {
        let path = directory.file(name)
        try writeExecutable("#!/bin/sh\n" + body, to: path)
        return path
    }

    static let context = ShardingContext(
        jobName: "exports", taskID: "exports@-@0,1@-@READY@-@10.0.0.3@-@77", shardingTotalCount: 3,
        jobParameter: "mode=full&verbose", shardingItem: 1, shardingParameter: "Shanghai <east>",
        fireTimeMilliseconds: 1_800_000_000_000, fencingEpoch: 4)

    func run(_ job: JobTypeInstance, context: ShardingContext = Self.context, control: ItemControl = ItemControl()) async throws {
        let logger = log.logger()
        try await onDedicatedThread {
            try job.execute(ItemInvocation(context: context, control: control, logger: logger))
        }
    }

    /// Runs and returns the failure; records an issue when the item succeeds.
    func failure(_ job: JobTypeInstance, control: ItemControl = ItemControl()) async throws -> ProviderCallError? {
        do {
            try await run(job, control: control)
            Issue.record("the item succeeded")
            return nil
        } catch let error as ProviderCallError {
            return error
        }
    }

    @Test("the command gets the item's sharding context as Gson's JSON in one last argument, and exit 0 succeeds")
    func contextArgument() async throws {
        let out = directory.file("arguments")
        let path = try script("record.sh", """
            for argument in "$@"; do printf '%s\\n' "$argument" >> '\(out)'; done
            echo "done with item"
            """)
        try await run(try job([("script.command.line", "\(path) --mode 'two words'")]))
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines == [
            "--mode", "two words",
            #"{"jobName":"exports","taskId":"exports@-@0,1@-@READY@-@10.0.0.3@-@77","shardingTotalCount":3,"#
                + #""jobParameter":"mode\u003dfull\u0026verbose","shardingItem":1,"shardingParameter":"Shanghai \u003ceast\u003e"}"#,
        ])
        #expect(log.contains("done with item"), "standard output is logged: \(log.messages)")

        // An item without a parameter: the member is left out, as Gson leaves out nulls.
        var plain = Self.context
        plain.shardingParameter = nil
        plain.jobParameter = ""
        try FileManager.default.removeItem(atPath: out)
        try await run(try job([("script.command.line", path)]), context: plain)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == #"{"jobName":"exports","taskId":"exports@-@0,1@-@READY@-@10.0.0.3@-@77","shardingTotalCount":3,"jobParameter":"","shardingItem":1}"# + "\n")
    }

    @Test("the script gets empty standard input and none of the host's other open files")
    func onlyStandardFiles() async throws {
        // A descriptor of the host's without O_CLOEXEC, as a library might leave one.
        let leaked = open(directory.file("held-open"), O_WRONLY | O_CREAT, 0o600)
        #expect(leaked > 2)
        defer { close(leaked) }
        let out = directory.file("fds")
        let path = try script("fds.sh", "ls /proc/$$/fd > '\(out)'\nread line && echo \"stdin was not empty\" >&2 && exit 1\nexit 0\n")
        try await run(try job([("script.command.line", "/bin/sh \(path)")]))
        let listed = Set(try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) })
        #expect(!listed.contains(leaked), "the script inherited descriptor \(leaked): \(listed.sorted())")
        #expect(listed.isSuperset(of: [0, 1, 2]))
    }

    @Test("a non-zero exit fails the item with the status as its code and the end of standard error")
    func exitStatus() async throws {
        let path = try script("fail.sh", """
            i=0
            while [ $i -lt 300 ]; do echo "noise line $i" >&2; i=$((i+1)); done
            echo "cannot reach the warehouse" >&2
            exit 3
            """)
        let error = try #require(await failure(try job([("script.command.line", path)])))
        #expect(error.code == 3)
        #expect(error.message.contains("exited with status 3"), "\(error.message)")
        #expect(error.message.hasSuffix("noise line 299 | cannot reach the warehouse"), "\(error.message)")
        #expect(!error.message.contains("noise line 0 "), "only the tail of standard error is kept")

        // A program that cannot be started fails the item too.
        let missing = try #require(await failure(try job([("script.command.line", directory.file("no-such-script"))])))
        #expect(missing.code == 127)
        #expect(missing.message.contains("No such file or directory"), "\(missing.message)")
    }

    @Test("a script past script.timeout.seconds has its process group killed, and the item fails")
    func timeoutKillsGroup() async throws {
        let pidFile = directory.file("child.pid")
        let path = try script("hang.sh", """
            sleep 300 &
            echo $! > '\(pidFile)'
            echo "started a child" >&2
            wait
            """)
        let error = try #require(await failure(try job([("script.command.line", path), ("script.timeout.seconds", "1")])))
        #expect(error.code == 124)
        #expect(error.message.contains("ran longer than script.timeout.seconds (1 s): its process group was killed"), "\(error.message)")
        #expect(error.message.contains("started a child"))
        let child = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let gone = await eventually(seconds: 10) { Self.isGone(child) }
        #expect(gone, "the script's background child \(child) survived the timeout")
    }

    @Test("an item the host asks to stop kills its script")
    func cancellation() async throws {
        let path = try script("long.sh", "sleep 300\n")
        let error = try #require(await failure(try job([("script.command.line", path)]), control: ItemControl(isCancelled: { true })))
        #expect(error.message.contains("the host asked the item to stop"), "\(error.message)")
    }

    @Test("through the host: every item of a fire runs the script; a failing one reaches the error handler with its exit status")
    func throughTheHost() async throws {
        let path = try script("item.sh", """
            item=$(printf '%s' "$1" | sed 's/.*"shardingItem":\\([0-9]*\\).*/\\1/')
            echo "script ran item $item"
            if [ "$item" = 1 ]; then echo "item one is broken" >&2; exit 3; fi
            """)
        let harness = try await HostHarness("""
            jobs:
              - jobName: exports
                jobType: SCRIPT
                cron: "* * * * * ?"
                shardingTotalCount: 3
                jobErrorHandlerType: c-recorder
                props:
                  script.command.line: \(path)
            """)
        try await harness.host.start()
        harness.advance(toSecond: 1)
        await harness.waitForFires("exports")
        for item in 0..<3 { #expect(harness.lines(containing: "script ran item \(item)").count == 1) }
        #expect(harness.lines(containing: "recorded failure: job=exports item=1 origin=1 code=3 message=script \(path) exited with status 3; "
            + "the end of its standard error: item one is broken").count == 1, "\(harness.log.messages)")
        #expect(harness.fireEnds("exports").map(\.failedItems) == [[1]])
        await harness.host.shutdown()
    }

    @Test("its props are checked when the job is registered, naming the key")
    func validation() throws {
        for (properties, key, text) in [
            ([(String, String)](), "script.command.line", "The property `script.command.line` is required."),
            ([("script.command.line", "  ")], "script.command.line", "is empty"),
            ([("script.command.line", "/bin/echo 'unbalanced")], "script.command.line", "unbalanced ' quote"),
            ([("script.command.line", "/bin/true"), ("script.timeout.seconds", "soon")], "script.timeout.seconds",
             "The property `script.timeout.seconds` should be an integer, got 'soon'."),
            ([("script.command.line", "/bin/true"), ("script.timeout.seconds", "0")], "script.timeout.seconds", "should be positive"),
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

    /// True when `pid` no longer runs (gone, or a zombie that nobody reaped yet).
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        guard let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)] == "Z"
    }
}
