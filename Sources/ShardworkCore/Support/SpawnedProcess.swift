import CShardworkSupport
import Foundation
import Synchronization

/// A long-lived child process (a job's worker; in the tests, a host, a ZooKeeper server, a guard),
/// started and reaped by its owner rather than by Foundation's `Process`.
///
/// Foundation's `Process` watches every child of the process from one shared thread, which reaps a
/// child with a blocking `waitpid` when it believes the child ended; when that belief is wrong (seen
/// in a full test run: the thread blocked in `waitpid` on a child that was alive and waiting),
/// every other `waitUntilExit` of the process spins its run loop for good, a core each, and no
/// other child's end is ever noticed. Here each child is reaped only by a `waitpid(pid, WNOHANG)`
/// of its own, and waiting for an exit sleeps between looks.
package final class SpawnedProcess: Sendable {
    package let pid: Int32
    /// The raw wait status, once the child has been reaped.
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` with `arguments` as the leader of a process group of its own. Its
    /// standard input is `input` (or /dev/null when -1); its output goes to `output` and its errors
    /// to `errors` (each /dev/null when -1; errors default to where the output goes). Its environment
    /// is `baseEnvironment` (this process's when `nil`) with `environment` over it. The caller keeps
    /// its descriptors and closes them.
    package init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], baseEnvironment: [String: String]? = nil,
        currentDirectory: String? = nil, input: Int32 = -1, output: Int32 = -1, errors: Int32? = nil
    ) throws {
        let variables = (baseEnvironment ?? ProcessInfo.processInfo.environment).merging(environment) { $1 }
        var null: Int32 = -1
        if output < 0 || errors.map({ $0 < 0 }) == true {
            null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        }
        defer { if null >= 0 { close(null) } }
        let target = output >= 0 ? output : null
        let errorTarget = errors.map { $0 >= 0 ? $0 : null } ?? target
        let pid = ChildProcess.spawn(
            executable, [executable] + arguments, variables, stdin: input, stdout: target, stderr: errorTarget, directory: currentDirectory)
        guard pid > 0 else { throw ChildProcessError(description: "cannot start \(executable): \(String(cString: strerror(-pid)))") }
        self.pid = pid
    }

    /// Starts `executable` with its output and errors appended to the file at `log`.
    package convenience init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], currentDirectory: String? = nil,
        log: String
    ) throws {
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ChildProcessError(description: "cannot open \(log): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try self.init(executable, arguments, environment: environment, currentDirectory: currentDirectory, output: fd)
    }

    /// Reaps the child if it has ended; its raw wait status then.
    private func reap() -> Int32? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            while true {
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid {
                    reaped = status
                    return status
                }
                if result == 0 { return nil }
                if errno == EINTR { continue }
                // Not our child any more (reaped elsewhere): take it as ended, status unknown.
                reaped = 0
                return 0
            }
        }
    }

    package var isRunning: Bool { reap() == nil }

    /// Sends `signal` unless the child has been reaped. Only ``reap()`` frees the pid (under the
    /// same lock), so a signal never reaches another process that was given the pid since.
    package func signal(_ signal: Int32) {
        reaped.withLock { reaped in
            if reaped == nil { _ = kill(pid, signal) }
        }
    }

    /// Waits for the child to end: its exit status, or the signal that ended it.
    @discardableResult
    package func waitForExit() async -> (status: Int32, signalled: Bool) {
        var pause = Duration.milliseconds(2)
        while true {
            if let status = reap() { return Self.decode(status) }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(50))
        }
    }

    /// Blocks the calling thread until the child ends (never call it on a cooperative thread): its
    /// exit status, or the signal that ended it.
    @discardableResult
    package func waitForExitBlocking() -> (status: Int32, signalled: Bool) {
        var pause: UInt32 = 2_000
        while true {
            if let status = reap() { return Self.decode(status) }
            usleep(pause)
            pause = min(pause * 2, 50_000)
        }
    }

    private static func decode(_ status: Int32) -> (status: Int32, signalled: Bool) {
        let signal = status & 0x7F
        return signal == 0 ? ((status >> 8) & 0xFF, false) : (signal, true)
    }
}
