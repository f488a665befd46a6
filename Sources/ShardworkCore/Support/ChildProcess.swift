import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion and collects what it printed.
public enum ChildProcess {
    /// The environment of a process that runs plugin code for the host (a trial load, an isolated
    /// job's worker): the host's, with Swift's crash backtracer off unless the host's environment
    /// sets `SWIFT_BACKTRACE` itself. A plugin that crashes there is expected and reported by the
    /// host with its signal; the backtracer would hold the dying process for seconds (9 s measured
    /// on two busy cores) while it symbolicates, and the item's outcome with it.
    public static var pluginChildEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        return environment
    }

    public struct Outcome: Sendable {
        /// The exit status, or the signal number when `signalled`.
        public var status: Int32
        public var signalled: Bool
        /// True when the process outlived its timeout and was killed.
        public var timedOut: Bool
        public var standardOutput: Data
        public var standardError: Data

        public var succeeded: Bool { !signalled && status == 0 }

        /// The signal's name (`Segmentation fault`), when `signalled`.
        public var signalName: String? {
            guard signalled else { return nil }
            return strsignal(status).map { String(cString: $0) } ?? "signal \(status)"
        }
    }

    /// Runs `executable` with `arguments` (standard input empty), killing it with SIGKILL if it runs
    /// longer than `timeout`. Throws only when the program cannot be started.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        currentDirectory: String? = nil, timeout: Duration? = nil
    ) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()

        let killed = KillFlag()
        var killer: DispatchWorkItem?
        if let timeout {
            let pid = process.processIdentifier
            let work = DispatchWorkItem {
                killed.set()
                kill(pid, SIGKILL)
            }
            let (seconds, attoseconds) = timeout.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds), execute: work)
            killer = work
        }
        // Drain both pipes to the end before waiting, so a chatty child cannot fill one and stall.
        let errorData = PipeDrain(errors.fileHandleForReading)
        let outputData = output.fileHandleForReading.readToEndRetryingInterrupts()
        process.waitUntilExit()
        killer?.cancel()
        return Outcome(
            status: process.terminationStatus,
            signalled: process.terminationReason == .uncaughtSignal,
            timedOut: killed.isSet,
            standardOutput: outputData,
            standardError: errorData.wait())
    }
}

private final class KillFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// Reads a pipe to its end on a thread of its own.
private final class PipeDrain: @unchecked Sendable {
    // Written only by the reading thread before `done` is signalled, read only after.
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readToEndRetryingInterrupts()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}

extension FileHandle {
    /// Everything a pipe holds until its writers close it. Foundation's `readDataToEndOfFile`
    /// traps when a signal interrupts its read (EINTR, seen when many children exit at once);
    /// this retries.
    public func readToEndRetryingInterrupts() -> Data {
        var data = Data()
        while true {
            let chunk = readChunkRetryingInterrupts()
            if chunk.isEmpty { return data }
            data.append(chunk)
        }
    }

    /// What the pipe holds now (waiting for at least one byte), or empty data at its end; the same
    /// as `availableData`, without its trap on EINTR.
    public func readChunkRetryingInterrupts() -> Data {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fileDescriptor, $0.baseAddress, $0.count) }
            if count >= 0 { return Data(buffer[0..<count]) }
            if errno != EINTR { return Data() }
        }
    }
}
