import CShardworkSupport
import Dispatch
package import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion, with every wait bounded, and collects what it printed.
///
/// The child leads a process group of its own. At its time limit, or when its ``ChildProcessSet``
/// is stopped, the whole group is killed; when it ends, what it left behind in its group is killed
/// too, and so is any process that left the group (`setsid`, a daemon) but still carries the
/// child's environment marker. The child's output is read until the child has ended, not until the
/// pipes close (a grandchild that holds them open cannot make the wait endless), and only up to a
/// limit.
package enum ChildProcess {
    package struct Outcome: Sendable {
        /// The exit status, or the signal number when `signalled`.
        package var status: Int32
        package var signalled: Bool
        /// True when the process outlived its time limit and was killed.
        package var timedOut: Bool
        /// True when it was killed because its ``ChildProcessSet`` was stopped.
        package var stopped = false
        package var standardOutput: Data
        package var standardError: Data
        /// True when it printed more than the output limit; the rest was read and dropped.
        package var outputTruncated = false

        package var succeeded: Bool { !signalled && status == 0 }

        /// The signal's name (`Segmentation fault`), when `signalled`.
        package var signalName: String? {
            guard signalled else { return nil }
            return strsignal(status).map { String(cString: $0) } ?? "signal \(status)"
        }
    }

    /// The environment of a process that runs plugin code for the host (a trial load, an isolated
    /// job's worker): the host's, with Swift's crash backtracer off unless the host's environment
    /// sets `SWIFT_BACKTRACE` itself. A plugin that crashes there is expected and reported by the
    /// host with its signal; the backtracer would hold the dying process for seconds (9 s measured
    /// on two busy cores) while it symbolicates, and the item's outcome with it.
    package static var pluginChildEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        return environment
    }

    /// The variable that marks every process a child starts (unless it clears its environment), so
    /// that those that left its process group can be found and ended with it.
    static let markerVariable = "SHARDWORK_CHILD_MARKER"

    /// How long output is still read once the child has ended, for what it wrote just before.
    static let drainGrace: Duration = .milliseconds(200)

    /// Runs `executable` with `arguments` and waits for it (blocking the calling thread).
    ///
    /// - Parameters:
    ///   - environment: variables added to (or replacing) the host's; `nil` for the host's own.
    ///   - input: written to the child's standard input, which is then closed; without it the
    ///     child reads from /dev/null.
    ///   - timeout: the longest the child may run; then its process group is killed.
    ///   - idleTimeout: the longest the child may go without printing to its standard output.
    ///   - outputLimit: the most bytes kept of each of standard output and standard error.
    ///   - set: the set the child belongs to while it runs: stopping the set kills it.
    /// - Throws: only when the program cannot be started.
    package static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        currentDirectory: String? = nil, input: Data? = nil, timeout: Duration? = nil, idleTimeout: Duration? = nil,
        outputLimit: Int = 16 << 20, set: ChildProcessSet? = nil
    ) throws -> Outcome {
        let marker = UUID().uuidString
        var variables = ProcessInfo.processInfo.environment.merging(environment ?? [:]) { $1 }
        variables[markerVariable] = marker

        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        var stdin: [Int32] = [-1, -1]
        func closeAll() {
            for fd in output + errors + stdin where fd >= 0 { close(fd) }
        }
        guard shardwork_pipe(&output) == 0, shardwork_pipe(&errors) == 0, input == nil || shardwork_pipe(&stdin) == 0 else {
            let problem = String(cString: strerror(errno))
            closeAll()
            throw ChildProcessError(description: "cannot make pipes for \(executable): \(problem)")
        }
        let pid = spawn(executable, [executable] + arguments, variables, stdin: stdin[0], stdout: output[1], stderr: errors[1],
                        directory: currentDirectory)
        // The child's ends are the child's now.
        close(output[1])
        close(errors[1])
        output[1] = -1
        errors[1] = -1
        if stdin[0] >= 0 {
            close(stdin[0])
            stdin[0] = -1
        }
        guard pid > 0 else {
            closeAll()
            throw ChildProcessError(description: "cannot start \(executable): \(String(cString: strerror(-pid)))")
        }
        let member = set?.insert(pid)
        defer {
            if let member { set?.remove(member) }
            closeAll()
        }
        for fd in [output[0], errors[0], stdin[1]] where fd >= 0 {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }

        var outcome = Outcome(status: 0, signalled: false, timedOut: false, standardOutput: Data(), standardError: Data())
        let started = ContinuousClock.now
        var lastOutput = started
        var pendingInput = input.map { [UInt8]($0) } ?? []
        var inputOffset = 0
        var outputOpen = true
        var errorsOpen = true
        var killed = false
        var exitedAt: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 65_536)

        var truncated = false
        func drain(_ fd: Int32, into data: inout Data, open: inout Bool) -> Bool {
            var read = false
            while open {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    read = true
                    let room = max(0, outputLimit - data.count)
                    if room > 0 { data.append(contentsOf: buffer[0..<min(count, room)]) }
                    if count > room { truncated = true }
                } else if count == 0 {
                    open = false
                } else if errno == EINTR {
                    continue
                } else {
                    if errno != EAGAIN && errno != EWOULDBLOCK { open = false }
                    break
                }
            }
            return read
        }

        var quietWait: Int32 = 1
        while true {
            let now = ContinuousClock.now
            if let exitedAt {
                if (!outputOpen && !errorsOpen) || now - exitedAt >= drainGrace { break }
            } else if !killed {
                var reason: WhyKilled?
                if let timeout, now - started >= timeout { reason = .timeout }
                if let idleTimeout, now - lastOutput >= idleTimeout { reason = .timeout }
                if set?.isStopped == true { reason = .stopped }
                if let reason {
                    kill(-pid, SIGKILL)
                    killed = true
                    if reason == .timeout { outcome.timedOut = true } else { outcome.stopped = true }
                }
            }
            if exitedAt == nil, shardwork_child_exited(pid) == 1 {
                // Still a zombie: its process group id cannot be reused yet, so the group kill
                // reaches only what it left behind.
                kill(-pid, SIGKILL)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                if status & 0x7F == 0 {
                    outcome.status = (status >> 8) & 0xFF
                } else {
                    outcome.status = status & 0x7F
                    outcome.signalled = true
                }
                exitedAt = ContinuousClock.now
                if stdin[1] >= 0 { close(stdin[1]); stdin[1] = -1 }
            }
            var fds: [pollfd] = []
            if outputOpen { fds.append(pollfd(fd: output[0], events: Int16(POLLIN), revents: 0)) }
            if errorsOpen { fds.append(pollfd(fd: errors[0], events: Int16(POLLIN), revents: 0)) }
            if stdin[1] >= 0 {
                if inputOffset < pendingInput.count {
                    fds.append(pollfd(fd: stdin[1], events: Int16(POLLOUT), revents: 0))
                } else {
                    close(stdin[1])
                    stdin[1] = -1
                }
            }
            // Short waits: the child's exit and the limits are looked at between them. With its
            // output closed, the child is usually about to exit: look again soon, then less and less
            // often for one that lives on without output (a poll of nothing sleeps its whole
            // timeout, and a trial load was 50 ms slower for a fixed 50 ms).
            let wait: Int32
            if fds.isEmpty {
                wait = quietWait
                quietWait = min(quietWait * 2, 50)
            } else {
                wait = exitedAt == nil ? 50 : 20
            }
            _ = poll(&fds, nfds_t(fds.count), wait)
            if drain(output[0], into: &outcome.standardOutput, open: &outputOpen) { lastOutput = ContinuousClock.now }
            _ = drain(errors[0], into: &outcome.standardError, open: &errorsOpen)
            if stdin[1] >= 0, inputOffset < pendingInput.count {
                let written = pendingInput.withUnsafeBytes { bytes in
                    write(stdin[1], bytes.baseAddress! + inputOffset, bytes.count - inputOffset)
                }
                if written > 0 {
                    inputOffset += written
                } else if written < 0, errno != EAGAIN, errno != EINTR {
                    // The child does not read its input (it ended, or closed it): nothing more to give.
                    pendingInput = []
                    inputOffset = 0
                }
            }
        }
        endEscapees(marker: marker)
        outcome.outputTruncated = truncated
        return outcome
    }

    private enum WhyKilled { case timeout, stopped }

    /// Starts a child as the leader of a new process group; its pid, or -errno.
    package static func spawn(
        _ executable: String, _ argv: [String], _ environment: [String: String], stdin: Int32, stdout: Int32, stderr: Int32,
        directory: String?
    ) -> Int32 {
        let arguments = argv.map { strdup($0) } + [nil]
        let variables = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in arguments + variables { free(pointer) }
        }
        return arguments.withUnsafeBufferPointer { argv in
            variables.withUnsafeBufferPointer { envp in
                shardwork_spawn(executable, argv.baseAddress, envp.baseAddress, stdin, stdout, stderr, directory)
            }
        }
    }

    /// Kills every process that still carries `marker` in its environment: what a child started and
    /// that left its process group (a daemon, `setsid`). Only processes of this user can be read.
    static func endEscapees(marker: String) {
        let needle = Array("\(markerVariable)=\(marker)".utf8) + [0]
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        let me = getpid()
        for entry in entries {
            guard let pid = Int32(entry), pid != me, let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
            if [UInt8](environ).split(separator: 0, omittingEmptySubsequences: true).contains(where: { Array($0) + [0] == needle }) {
                kill(pid, SIGKILL)
            }
        }
    }
}

/// A child could not be started.
package struct ChildProcessError: Error, CustomStringConvertible, Sendable {
    package var description: String
}

/// The children a host runs for a while (trial loads, job trials): stopping the set kills them all
/// and every one started after, so that a host that is stopping never waits for one.
public final class ChildProcessSet: Sendable {
    private struct State {
        var running: [Int: pid_t] = [:]
        var next = 0
        var stopped = false
    }

    private let state = Mutex(State())

    public init() {}

    /// Whether the set was stopped: a child started now is killed at once.
    public var isStopped: Bool { state.withLock { $0.stopped } }

    func insert(_ pid: pid_t) -> Int {
        let (key, stopped) = state.withLock { state -> (Int, Bool) in
            state.next += 1
            state.running[state.next] = pid
            return (state.next, state.stopped)
        }
        if stopped { kill(-pid, SIGKILL) }
        return key
    }

    func remove(_ key: Int) {
        _ = state.withLock { $0.running.removeValue(forKey: key) }
    }

    /// Kills every child of the set (their whole process groups), now and from now on.
    public func stop() {
        let pids = state.withLock { state -> [pid_t] in
            state.stopped = true
            return Array(state.running.values)
        }
        for pid in pids { kill(-pid, SIGKILL) }
    }
}

extension FileHandle {
    /// Everything a pipe holds until its writers close it. Foundation's `readDataToEndOfFile`
    /// traps when a signal interrupts its read (EINTR, seen when many children exit at once);
    /// this retries.
    package func readToEndRetryingInterrupts() -> Data {
        var data = Data()
        while true {
            let chunk = readChunkRetryingInterrupts()
            if chunk.isEmpty { return data }
            data.append(chunk)
        }
    }

    /// What the pipe holds now (waiting for at least one byte), or empty data at its end; the same
    /// as `availableData`, without its trap on EINTR.
    package func readChunkRetryingInterrupts() -> Data {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fileDescriptor, $0.baseAddress, $0.count) }
            if count >= 0 { return Data(buffer[0..<count]) }
            if errno != EINTR { return Data() }
        }
    }
}
