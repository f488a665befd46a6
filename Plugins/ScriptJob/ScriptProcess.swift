import ShardworkSDK

#if canImport(Glibc)
import Glibc
#endif

/// One run of a script: a child process in a process group of its own, so that a timeout can kill
/// everything it started.
struct ScriptProcess {
    enum Ending: Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
        case cancelled
    }

    struct Outcome {
        var ending: Ending
        /// The last lines of standard error, at most ``stderrTailLimit`` characters.
        var standardErrorTail: String
    }

    /// The item's code when the script was killed for running too long (as coreutils' `timeout`).
    static let timedOutCode: Int32 = 124
    static let stderrTailLimit = 2_000

    /// Runs `arguments` (the first is the program, found on the PATH when it has no slash), with
    /// standard input empty. Each line of standard output goes to `outputLine`; standard error is
    /// kept for the outcome. Throws when the program cannot be started.
    static func run(
        _ arguments: [String], timeoutSeconds: Int?, isCancelled: () -> Bool, outputLine: (String) -> Void
    ) throws -> Outcome {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw JobError("script: pipe() failed: \(errorText())") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw JobError("script: pipe() failed: \(errorText())")
        }
        // Not inherited by other programs the host starts (pipe2 is not in Swift's Glibc module).
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer {
            close(outPipe[0])
            close(errPipe[0])
        }

        let pid: pid_t
        do {
            defer {
                close(outPipe[1])
                close(errPipe[1])
            }
            pid = try spawn(arguments, stdout: outPipe[1], stderr: errPipe[1])
        }

        let deadline = timeoutSeconds.map { monotonicMilliseconds() + Int64($0) * 1000 }
        var output = LineBuffer()
        var errors: [UInt8] = []
        var open = [outPipe[0], errPipe[0]]
        var exitStatus: Int32?
        var killedFor: Ending?
        var buffer = [UInt8](repeating: 0, count: 16_384)

        while exitStatus == nil || !open.isEmpty {
            if exitStatus == nil, killedFor == nil {
                if let deadline, monotonicMilliseconds() >= deadline {
                    killedFor = .timedOut
                } else if isCancelled() {
                    killedFor = .cancelled
                }
                // The process is not reaped yet, so its group id still names its group.
                if killedFor != nil { kill(-pid, SIGKILL) }
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), 50)
            if ready > 0 {
                for entry in fds where entry.revents != 0 {
                    let count = read(entry.fd, &buffer, buffer.count)
                    if count <= 0 {
                        open.removeAll { $0 == entry.fd }
                    } else if entry.fd == outPipe[0] {
                        output.append(buffer[0..<count], emit: outputLine)
                    } else {
                        errors.append(contentsOf: buffer[0..<count])
                        if errors.count > 4 * stderrTailLimit { errors.removeFirst(errors.count - stderrTailLimit) }
                    }
                }
            }
            if exitStatus == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    exitStatus = status
                    // Children the script left running may hold the pipes open: read what is
                    // there now, without waiting for them to close.
                    drain(&open, output: &output, errors: &errors, buffer: &buffer, outputLine: outputLine, outFD: outPipe[0])
                    open.removeAll()
                }
            }
        }
        output.flush(emit: outputLine)

        let status = exitStatus ?? 0
        let ending: Ending
        if let killedFor {
            ending = killedFor
        } else if status & 0x7f == 0 {
            ending = .exited((status >> 8) & 0xff)
        } else {
            ending = .signalled(status & 0x7f)
        }
        return Outcome(ending: ending, standardErrorTail: tail(errors))
    }

    private static func drain(
        _ open: inout [Int32], output: inout LineBuffer, errors: inout [UInt8], buffer: inout [UInt8],
        outputLine: (String) -> Void, outFD: Int32
    ) {
        for fd in open {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            while poll(&fds, 1, 0) > 0 {
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { break }
                if fd == outFD { output.append(buffer[0..<count], emit: outputLine) } else { errors.append(contentsOf: buffer[0..<count]) }
            }
        }
    }

    /// The last few lines of `bytes`, at most ``stderrTailLimit`` characters, on one line.
    static func tail(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map(String.init).filter { !$0.isEmpty }
        var kept: [String] = []
        var length = 0
        for line in lines.reversed() {
            if length + line.count > stderrTailLimit {
                if kept.isEmpty { kept.append(String(line.suffix(stderrTailLimit))) }
                break
            }
            kept.append(line)
            length += line.count + 3
        }
        return kept.reversed().joined(separator: " | ")
    }

    private static func spawn(_ arguments: [String], stdout: Int32, stderr: Int32) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        // Nothing else of the host's (sockets, files opened without O_CLOEXEC) reaches the script.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A group of its own, so that a timeout kills what the script started too; no blocked
        // signals and default actions, whatever the host's threads had.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, arguments[0], &actions, &attributes, cArguments, environ)
        guard result == 0 else {
            throw JobError("script: cannot start \(arguments[0]): \(String(cString: strerror(result)))", code: 127)
        }
        return pid
    }

    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34 and later), which Swift's Glibc module
    /// does not declare (it is a GNU extension): looked up once at run time.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32)? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32).self)
    }()

    private static func monotonicMilliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}

/// Standard output cut into lines.
struct LineBuffer {
    private var pending: [UInt8] = []

    mutating func append(_ bytes: ArraySlice<UInt8>, emit: (String) -> Void) {
        pending.append(contentsOf: bytes)
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            emit(String(decoding: pending[..<newline], as: UTF8.self))
            pending.removeSubrange(...newline)
        }
        // A very long line is emitted in pieces rather than held without bound.
        if pending.count > 8_192 {
            emit(String(decoding: pending, as: UTF8.self))
            pending.removeAll()
        }
    }

    mutating func flush(emit: (String) -> Void) {
        if !pending.isEmpty { emit(String(decoding: pending, as: UTF8.self)) }
        pending.removeAll()
    }
}
