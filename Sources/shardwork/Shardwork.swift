import ArgumentParser
import Foundation
import Logging
import ShardworkCore

/// `shardwork`: runs a Shardwork host and speaks to its plugins.
///
/// Exit codes: 0 success; 1 the command ran but what it checked failed (a refused plugin, a failing
/// strategy); 2 bad input, with a one-line reason on standard error.
@main
struct Shardwork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardwork",
        abstract: "Distributed, sharded cron jobs for Swift services, with plugins.",
        version: ShardworkVersion.current,
        subcommands: [
            RunCommand.self, JobCommand.self, ServerCommand.self, PluginsCommand.self, ShardCommand.self, CronCommand.self,
            WorkerCommand.self,
        ]
    )

    static func main() async {
        // Writes to a closed pipe (a worker or trial process that died) must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CLIFailure {
            FileHandle.standardError.write(Data("shardwork: \(failure.message)\n".utf8))
            Foundation.exit(failure.exitCode)
        } catch {
            let code = exitCode(for: error)
            if code == .success || error is ExitCode {
                exit(withError: error)
            }
            // Argument errors: one line with the reason, exit status 2.
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            FileHandle.standardError.write(Data("shardwork: \(message)\n".utf8))
            Foundation.exit(2)
        }
    }
}

/// A failure the CLI reports in one line, with its exit status.
struct CLIFailure: Error {
    var message: String
    var exitCode: Int32

    /// Bad input: exit status 2.
    static func badInput(_ message: String) -> CLIFailure { CLIFailure(message: message, exitCode: 2) }

    /// The command ran, and what it checked failed: exit status 1.
    static func failed(_ message: String) -> CLIFailure { CLIFailure(message: message, exitCode: 1) }
}

enum ShardworkVersion {
    static let current = "0.1.0"
}
