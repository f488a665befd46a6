import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Loads a plugin in a separate, short-lived process before the host loads it.
///
/// `dlopen` runs a library's initialisers and the entry runs plugin code, before any check can
/// look at the result. A plugin that crashes there would take the host down; tried in a child
/// process first, it is refused with the signal that killed the child instead (the approach of
/// GStreamer's plugin scanner). The child is the `shardwork` binary running
/// `plugins inspect --json --in-process FILE`.
public struct PluginPreflight: Sendable {
    public var executable: String
    /// Arguments placed before the file.
    public var arguments: [String]
    public var timeout: Duration

    public init(executable: String, arguments: [String], timeout: Duration = .seconds(30)) {
        self.executable = executable
        self.arguments = arguments
        self.timeout = timeout
    }

    /// A preflight through the `shardwork` binary at `executable`.
    public static func shardwork(executable: String) -> PluginPreflight {
        PluginPreflight(executable: executable, arguments: ["plugins", "inspect", "--json", "--in-process"])
    }

    /// The child's inspection of `file`. `checked` holds the checks the caller already made on the
    /// file itself; when the child dies or hangs, the refusal is recorded after those.
    func inspect(_ file: String, checked: PluginInspection) -> PluginInspection {
        var failed = checked
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments + [file]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            failed.fail("load", ["could not start the trial-load process \(executable): \(error)"])
            return failed
        }

        let timedOutFlag = TimeoutFlag()
        let killer = DispatchWorkItem { [pid = process.processIdentifier] in
            timedOutFlag.set()
            kill(pid, SIGKILL)
        }
        let (seconds, attoseconds) = timeout.components
        DispatchQueue.global().asyncAfter(
            deadline: .now() + .milliseconds(Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)),
            execute: killer)
        // Read both pipes to the end before waiting, so a chatty child cannot fill a pipe and stall.
        let errorText = ErrorCollector(errors.fileHandleForReading)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        let timedOut = timedOutFlag.isSet
        let stderrTail = errorText.finish()

        if process.terminationReason == .uncaughtSignal {
            let signal = process.terminationStatus
            let name = strsignal(signal).map { String(cString: $0) } ?? "signal \(signal)"
            if timedOut {
                failed.fail("load", [
                    "loading it did not finish within \(timeout) in a separate trial process, which was killed; "
                        + "the host did not load it",
                ])
            } else {
                var details = [
                    "it crashed (\(name), signal \(signal)) while a separate trial process loaded it; the host did not load it",
                ]
                if !stderrTail.isEmpty { details.append("the trial process printed: \(stderrTail)") }
                failed.fail("load", details)
            }
            return failed
        }
        if var inspection = try? JSONDecoder().decode(PluginInspection.self, from: data) {
            inspection.file = checked.file
            return inspection
        }
        failed.fail("load", [
            "the trial-load process exited with status \(process.terminationStatus) without a verdict"
                + (stderrTail.isEmpty ? "" : ": \(stderrTail)"),
        ])
        return failed
    }
}

private final class TimeoutFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// Drains a pipe on its own thread and keeps the last lines.
private final class ErrorCollector: @unchecked Sendable {
    // Written only by the reading thread before `done` is signalled, read only after.
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func finish() -> String {
        done.wait()
        let text = String(decoding: data, as: UTF8.self)
        let lines = text.split(separator: "\n").suffix(5)
        return lines.joined(separator: " | ")
    }
}
