import ArgumentParser
import Foundation
import ShardworkCore

/// Runs one isolated job's items for a host (`props: shardwork.isolation: process`). The host
/// starts it and speaks to it over standard input and output; not for people.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run an isolated job's items for a host (started by the host).",
        shouldDisplay: false)

    @Flag(help: "Try jobs' providers for a host (a trial) instead of running a job's items.")
    var trial = false

    func run() throws {
        let status = trial ? WorkerProcess.serveTrial() : WorkerProcess.serve()
        if status != 0 { throw ExitCode(status) }
    }
}
