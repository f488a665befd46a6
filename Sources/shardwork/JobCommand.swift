import ArgumentParser
import Foundation
import ShardworkCore
import ShardworkHistory

/// Job operations through a running host's control API. They act on the registry, so with
/// ZooKeeper they act on the whole cluster (docs/operations.md).
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "Look at and operate the jobs of a running cluster, through a host's control API.",
        subcommands: [
            List.self, Status.self, Add.self, Remove.self, Trigger.self, Disable.self, Enable.self, Item.self,
            Shutdown.self, Config.self, Dump.self, History.self,
        ]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every job of the cluster and its status (ElasticJob's job briefs).")
        @OptionGroup var control: ControlOptions

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("GET", "jobs")
            if control.json { return printRaw(answer) }
            let jobs = try client.decode([JobBrief].self, from: answer)
            var rows = [["JOB", "TYPE", "STATUS", "CRON", "ITEMS", "INSTANCES", "DYNAMIC", "INCAPABLE"]]
            for job in jobs {
                rows.append([
                    job.jobName, job.jobType, job.status.rawValue, job.cron ?? "(one-off)", "\(job.shardingTotalCount)",
                    "\(job.instanceCount)", job.dynamic ? "yes" : "no", job.incapableInstances.joined(separator: ","),
                ])
            }
            print(TextTable.render(rows))
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One job: its items with their instance, running, disabled and failover state; instances; servers; hosts that cannot run it.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("GET", "jobs/\(job)")
            if control.json { return printRaw(answer) }
            let status = try client.decode(JobStatus.self, from: answer)
            let brief = status.brief
            print(shown("job \(brief.jobName) (\(brief.jobType)): \(brief.status.rawValue), cron \(brief.cron ?? "(one-off)"), \(brief.shardingTotalCount) items, leader \(status.leader ?? "(none)")\(status.reshardingNecessary ? ", resharding at the next fire" : "")"))
            if let error = brief.configurationError { print("configuration: \(shown(error))") }
            var items = [["ITEM", "INSTANCE", "STATUS", "RUNNING", "FAILOVER", "EPOCH", "MISFIRE"]]
            for item in status.items {
                let failover = item.failoveringInstanceId ?? item.failoverInstanceId ?? (item.queuedForFailover ? "(queued)" : "")
                items.append([
                    "\(item.item)", item.instanceId ?? "", item.status.rawValue, item.runningInstanceId ?? "", failover,
                    item.epoch.map(String.init) ?? "", item.misfire ? "yes" : "",
                ])
            }
            print(TextTable.render(items))
            print(shown("instances: " + (status.instances.isEmpty ? "(none)" : status.instances.map(\.instanceId).joined(separator: ", "))))
            print(shown("servers: " + (status.servers.isEmpty ? "(none)" : status.servers.map { "\($0.serverIp) \($0.status)" }.joined(separator: ", "))))
            for incapable in status.incapable {
                print("cannot run it: \(shown(incapable.instanceId)): \(shown(incapable.reason))")
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a job to the running cluster: every host that has its job type starts firing it.",
            discussion: """
                The file holds one job, written as an entry of a host configuration's `jobs:` list \
                (YAML or JSON). It is checked as at start-up, against the plugins of the host that \
                serves the request.
                """)
        @OptionGroup var control: ControlOptions
        @Option(help: ArgumentHelp("The job (YAML or JSON).", valueName: "file")) var config: String
        @Flag(help: "Accept a job whose plugins the serving host lacks (other hosts have them).")
        var allowMissingPlugins = false

        func run() async throws {
            let body = try readFile(config)
            try await control.change(
                "POST", "jobs", query: ["allowMissingPlugins": allowMissingPlugins ? "true" : nil], body: body, contentType: "application/yaml")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a job from the cluster: it stops on every host and its registry nodes go.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("DELETE", "jobs/\(job)")
            if control.json { return printRaw(answer) }
            print("job '\(job)' removed; every host stops it")
        }
    }

    struct Trigger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a job once now on every instance (each runs its own items).")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String

        func run() async throws {
            try await control.change("POST", "jobs/\(job)/trigger")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable a job on every server, or on one (--server): its items go to the other servers.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String
        @Option(help: ArgumentHelp("Only on this server (IPv4).", valueName: "ip")) var server: String?

        func run() async throws {
            try await control.change("POST", "jobs/\(job)/disable", query: ["server": server])
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a job on every server, or on one (--server).")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String
        @Option(help: ArgumentHelp("Only on this server (IPv4).", valueName: "ip")) var server: String?

        func run() async throws {
            try await control.change("POST", "jobs/\(job)/enable", query: ["server": server])
        }
    }

    struct Item: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable or enable one sharding item: its owner skips a disabled item.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "disable or enable.") var action: String
        @Argument(help: "The job's name.") var job: String
        @Argument(help: "The item, from 0.") var item: Int

        func run() async throws {
            guard ["disable", "enable"].contains(action) else {
                throw CLIFailure.badInput("\(action): the action is `disable` or `enable`")
            }
            try await control.change("POST", "jobs/\(job)/items/\(item)/\(action)")
        }
    }

    struct Shutdown: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a job on its instances (all, those of one server, or one instance) until they restart.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String
        @Option(help: ArgumentHelp("Only the instances on this server.", valueName: "ip")) var server: String?
        @Option(help: ArgumentHelp("Only this instance (ip@-@pid).", valueName: "id")) var instance: String?

        func run() async throws {
            try await control.change("POST", "jobs/\(job)/shutdown", query: ["server": server, "instance": instance])
        }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a job's configuration as the registry holds it, or change it (--set).",
            discussion: """
                --set FILE replaces the configuration with the job in FILE (YAML or JSON, as a \
                `jobs:` entry), checked as at start-up; every instance applies it. With --version, \
                the change is refused if the configuration changed since that version.
                """)
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String
        @Option(help: ArgumentHelp("The new configuration (YAML or JSON).", valueName: "file")) var set: String?
        @Option(help: ArgumentHelp("Change only if the stored configuration is at this version.", valueName: "n")) var version: Int32?
        @Flag(help: "Accept a configuration whose plugins the serving host lacks (other hosts have them).")
        var allowMissingPlugins = false

        func run() async throws {
            guard let set else {
                let client = try control.client()
                let answer = try await client.send("GET", "jobs/\(job)/config")
                if control.json { return printRaw(answer) }
                let stored = try client.decode(StoredJobConfiguration.self, from: answer)
                print("# version \(stored.version)")
                print(stored.yaml, terminator: stored.yaml.hasSuffix("\n") ? "" : "\n")
                return
            }
            let body = try readFile(set)
            try await control.change(
                "PUT", "jobs/\(job)/config", query: ["allowMissingPlugins": allowMissingPlugins ? "true" : nil], body: body,
                contentType: "application/yaml", headers: version.map { ["If-Match": "\($0)"] } ?? [:])
        }
    }

    struct Dump: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every registry node of a job, with its value (ElasticJob's dump).")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("GET", "jobs/\(job)/dump")
            if control.json { return printRaw(answer) }
            for entry in try client.decode([DumpEntry].self, from: answer) {
                print("\(entry.path) | \(entry.value)")
            }
        }
    }
}

extension JobCommand {
    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A job's executions, newest first, from the history of the host asked (docs/history.md).",
            discussion: """
                Times are milliseconds since 1970, an ISO 8601 time (2026-12-07T14:00:00Z) or a time ago \
                (90m, 24h, 7d). With SQLite each host keeps its own history: ask the host you mean, or give \
                the cluster one PostgreSQL database.
                """)
        @OptionGroup var control: ControlOptions
        @Argument(help: "The job's name.") var job: String
        @Option(help: "Only this item.") var item: Int?
        @Option(help: "Only this instance (ip@-@pid).") var instance: String?
        @Option(help: "Only executions that started at or after this time.") var since: String?
        @Option(help: "Only executions that started at or before this time.") var until: String?
        @Flag(help: "Only executions that did not succeed.") var failed = false
        @Option(help: "Only this source: schedule, trigger, misfire or failover.") var source: String?
        @Option(help: "At most this many (1 to 1,000).") var limit = 50
        @Option(help: "Skip this many (paging).") var offset = 0

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("GET", "jobs/\(job)/executions", query: [
                "item": item.map(String.init), "instance": instance, "since": since, "until": until, "failed": failed ? "true" : nil,
                "source": source, "limit": String(limit), "offset": String(offset),
            ])
            if control.json { return printRaw(answer) }
            let page = try client.decode(ExecutionPage.self, from: answer)
            var rows = [["STARTED (UTC)", "ITEM", "SOURCE", "OUTCOME", "DURATION", "LAG", "INSTANCE", "FAILURE"]]
            for execution in page.executions {
                rows.append([
                    Self.time(execution.startTime), "\(execution.item)", execution.source,
                    execution.outcome.map { execution.fenced ? "\($0) (fenced)" : $0 } ?? "running",
                    execution.durationMs.map { "\($0) ms" } ?? "", "\(execution.lagMs) ms", execution.instanceId,
                    String((execution.failureCause ?? "").prefix(80)),
                ])
            }
            print(TextTable.render(rows))
            if page.executions.isEmpty { print("no executions match") }
            if let next = page.next { print("more: --offset \(next)") }
        }

        static func time(_ milliseconds: Int64) -> String {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
        }
    }
}

/// Servers across every job, through a host's control API.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Look at the servers of the cluster, and disable, enable or shut down one for every job.",
        subcommands: [List.self, Disable.self, Enable.self, Shutdown.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every server and its jobs (ElasticJob's server briefs).")
        @OptionGroup var control: ControlOptions

        func run() async throws {
            let client = try control.client()
            let answer = try await client.send("GET", "servers")
            if control.json { return printRaw(answer) }
            var rows = [["SERVER", "JOBS", "DISABLED", "INSTANCES"]]
            for server in try client.decode([ServerBrief].self, from: answer) {
                rows.append([server.serverIp, "\(server.jobsNum)", "\(server.disabledJobsNum)", server.instances.joined(separator: ",")])
            }
            print(TextTable.render(rows))
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a server for every job: its items go to the other servers.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The server's IPv4 address.") var server: String
        func run() async throws { try await control.change("POST", "servers/\(server)/disable") }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a server for every job.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The server's IPv4 address.") var server: String
        func run() async throws { try await control.change("POST", "servers/\(server)/enable") }
    }

    struct Shutdown: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop every job on the instances of a server, until they restart.")
        @OptionGroup var control: ControlOptions
        @Argument(help: "The server's IPv4 address.") var server: String
        func run() async throws { try await control.change("POST", "servers/\(server)/shutdown") }
    }
}

func printRaw(_ answer: ControlClient.Answer) {
    print(answer.text, terminator: answer.text.hasSuffix("\n") ? "" : "\n")
}

func readFile(_ path: String) throws -> Data {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CLIFailure.badInput("\(path): cannot read the file")
    }
    return data
}
