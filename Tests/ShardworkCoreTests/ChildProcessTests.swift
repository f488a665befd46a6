import Foundation
import ShardworkCore
import ShardworkTestSupport
import Testing

/// Children of the host end when they should, and take what they started with them. What they
/// leave behind would sleep ten minutes: a wait that lasted as long as it does breaks the suite's
/// time limit.
@Suite("Child processes", .timeLimit(.minutes(3)))
struct ChildProcessTests {
    /// Whether process `pid` still exists (a zombie counts as gone).
    static func alive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        return !stat.contains(") Z ")
    }

    /// Runs `script` under sh; it prints the pid of what it left behind on its first line.
    static func run(_ script: String, timeout: Duration? = nil, set: ChildProcessSet? = nil) async throws -> ChildProcess.Outcome {
        try await onOwnThread { try ChildProcess.run("/bin/sh", ["-c", script], timeout: timeout, set: set) }
    }

    @Test("a background process that holds the output open does not hold the wait, and is killed with the child's group")
    func heldOutput() async throws {
        let outcome = try await Self.run("sleep 600 & echo $!; echo done")
        let lines = String(decoding: outcome.standardOutput, as: UTF8.self).split(separator: "\n")
        #expect(lines.last == "done" && outcome.succeeded && !outcome.timedOut)
        let left = try #require(lines.first.flatMap { Int32($0) })
        #expect(await eventually { !Self.alive(left) }, "the background sleep \(left) outlived the child")
    }

    @Test("a process that left the child's group (setsid) is still found by its environment and killed")
    func escapedProcess() async throws {
        // The escaped process writes its pid to a file, and the child waits for it there: on a loaded
        // machine a fixed pause can end before the escaped process has run at all.
        let directory = try TemporaryDirectory("shardwork-escaped")
        let file = directory.file("pid")
        let outcome = try await Self.run(
            "setsid sh -c 'echo $$ > \"\(file).tmp\" && mv \"\(file).tmp\" \"\(file)\"; exec sleep 600' & "
                + "while [ ! -s \"\(file)\" ]; do sleep 0.05; done; cat \"\(file)\"; echo done")
        #expect(outcome.succeeded && !outcome.timedOut)
        let lines = String(decoding: outcome.standardOutput, as: UTF8.self).split(separator: "\n")
        #expect(lines.last == "done")
        let escaped = try #require(lines.first.flatMap { Int32($0) }, "\(lines)")
        #expect(await eventually { !Self.alive(escaped) }, "the setsid process \(escaped) outlived the child")
    }

    @Test("at its time limit the whole group is killed, forked children included")
    func timeout() async throws {
        let outcome = try await Self.run("sleep 600 & echo $!; sleep 600", timeout: .milliseconds(500))
        #expect(outcome.timedOut && outcome.signalled && outcome.status == SIGKILL)
        let left = try #require(String(decoding: outcome.standardOutput, as: UTF8.self).split(separator: "\n").first.flatMap { Int32($0) })
        #expect(await eventually { !Self.alive(left) })
    }

    @Test("stopping the set kills a running child at once and every child started after")
    func stoppedSet() async throws {
        let set = ChildProcessSet()
        let running = Task { try await Self.run("sleep 600", set: set) }
        try await Task.sleep(for: .milliseconds(300))
        set.stop()
        let outcome = try await running.value
        #expect(outcome.stopped && outcome.signalled)
        let later = try await Self.run("sleep 600", set: set)
        #expect(later.stopped)
    }

    @Test("input goes to the child's standard input; output beyond the limit is dropped, not kept")
    func inputAndLimit() async throws {
        let input = Data(String(repeating: "line of input\n", count: 20_000).utf8)
        let echoed = try await onOwnThread { try ChildProcess.run("/bin/cat", [], input: input) }
        #expect(echoed.standardOutput == input && echoed.succeeded)
        let limited = try await onOwnThread { try ChildProcess.run("/bin/cat", [], input: input, outputLimit: 1000) }
        #expect(limited.standardOutput.count == 1000 && limited.outputTruncated && limited.succeeded)
    }

    @Test("the signals the host ignores are back to their defaults in a child")
    func signalDefaults() async throws {
        signal(SIGPIPE, SIG_IGN)
        // The kernel lists a process's ignored signals as a mask (SIGPIPE is 13: bit 12).
        let outcome = try await onOwnThread { try ChildProcess.run("/bin/cat", ["/proc/self/status"]) }
        let line = try #require(String(decoding: outcome.standardOutput, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("SigIgn:") })
        let mask = try #require(UInt64(line.dropFirst("SigIgn:".count).trimmingCharacters(in: .whitespaces), radix: 16))
        #expect(mask & (1 << (UInt64(SIGPIPE) - 1)) == 0, "\(line)")
    }
}
