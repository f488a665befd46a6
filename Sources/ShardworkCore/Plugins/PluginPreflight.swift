import Foundation

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
    /// The set the trial processes belong to: a host stops it when it stops, so that no trial load
    /// holds the host's shutdown.
    public var children: ChildProcessSet?

    public init(executable: String, arguments: [String], timeout: Duration = .seconds(30), children: ChildProcessSet? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.timeout = timeout
        self.children = children
    }

    /// A preflight through the `shardwork` binary at `executable`.
    public static func shardwork(executable: String, timeout: Duration = .seconds(30)) -> PluginPreflight {
        PluginPreflight(executable: executable, arguments: ["plugins", "inspect", "--json", "--in-process"], timeout: timeout)
    }

    /// The child's inspection of `file`. `checked` holds the checks the caller already made on the
    /// file itself; when the child dies or hangs, the refusal is recorded after those.
    func inspect(_ file: String, checked: PluginInspection) -> PluginInspection {
        var failed = checked
        let outcome: ChildProcess.Outcome
        do {
            outcome = try ChildProcess.run(
                executable, arguments + [file], environment: ChildProcess.pluginChildEnvironment, timeout: timeout, set: children)
        } catch {
            failed.fail("load", ["could not start the trial-load process \(executable): \(error)"])
            return failed
        }
        let stderrTail = String(decoding: outcome.standardError, as: UTF8.self)
            .split(separator: "\n").suffix(5).joined(separator: " | ")
        if outcome.stopped {
            failed.fail("load", ["the host stopped while a separate trial process loaded it; the host did not load it"])
            return failed
        }
        if outcome.timedOut {
            failed.fail("load", [
                "loading it did not finish within \(timeout) in a separate trial process, which was killed; "
                    + "the host did not load it",
            ])
            return failed
        }
        if let signal = outcome.signalName {
            var details = [
                "it crashed (\(signal), signal \(outcome.status)) while a separate trial process loaded it; "
                    + "the host did not load it",
            ]
            if !stderrTail.isEmpty { details.append("the trial process printed: \(stderrTail)") }
            failed.fail("load", details)
            return failed
        }
        if var inspection = try? JSONDecoder().decode(PluginInspection.self, from: outcome.standardOutput) {
            inspection.file = checked.file
            return inspection
        }
        failed.fail("load", [
            "the trial-load process exited with status \(outcome.status) without a verdict"
                + (stderrTail.isEmpty ? "" : ": \(stderrTail)"),
        ])
        return failed
    }
}
