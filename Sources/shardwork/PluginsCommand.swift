import ArgumentParser
import Foundation
import Logging
import ShardworkCore
import ShardworkSDK

struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List the loaded plugins, or check one plugin file.",
        subcommands: [List.self, Inspect.self, Load.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every provider of every plugin that loads, and every plugin that was refused; with --host, a running host's plugin generations and the jobs that use each.")

        @OptionGroup var plugins: PluginOptions

        @Flag(help: "Print one JSON object: {\"providers\": [...], \"refused\": [...]} (with --host: the host's answer).")
        var json = false

        @Option(name: .customLong("host"), help: ArgumentHelp(
            "Ask this running host (its control API URL) instead of loading plugins here.", valueName: "url"))
        var host: String?

        @Option(name: .customLong("token"), help: ArgumentHelp("The host's api.token (default: SHARDWORK_TOKEN).", valueName: "token"))
        var token: String?

        func run() async throws {
            if host != nil || token != nil {
                return try await listRemote()
            }
            try listLocal()
        }

        private func listRemote() async throws {
            let client = try ControlOptions.client(host: host, token: token)
            let answer = try await client.send("GET", "plugins")
            if json { return printRaw(answer) }
            let generations = try client.decode([PluginGenerationStatus].self, from: answer)
            var rows = [["PLUGIN", "VERSION", "GENERATION", "STATE", "JOBS", "PATH"]]
            for generation in generations {
                rows.append([
                    generation.name, generation.version, "\(generation.generation)", generation.state.rawValue,
                    generation.jobs.joined(separator: ","), generation.path,
                ])
            }
            print(TextTable.render(rows))
        }

        private func listLocal() throws {
            var logger = try plugins.makeLogger()
            logger.logLevel = max(logger.logLevel, .critical)  // refusals are printed below, not logged
            let (registry, report) = try plugins.loadRegistry(logger: logger)
            let providers = registry.providers()
            if json {
                let document = ListDocument(
                    providers: providers.map {
                        .init(kind: $0.kind.identifier, name: $0.name, aliases: $0.aliases, plugin: $0.plugin.name,
                              version: $0.plugin.version, file: $0.plugin.file)
                    },
                    refused: report.refused.map { .init(file: $0.file, reasons: $0.reasons) })
                print(try JSONOutput.encode(document))
                return
            }
            var rows = [["KIND", "NAME", "ALIASES", "PLUGIN", "VERSION", "FILE"]]
            for provider in providers {
                rows.append([
                    provider.kind.description, provider.name, provider.aliases.joined(separator: ","),
                    provider.plugin.name, provider.plugin.version, provider.plugin.file,
                ])
            }
            print(TextTable.render(rows))
            for refusal in report.refused {
                print("refused \(refusal.file):")
                for reason in refusal.reasons { print("  - \(reason)") }
            }
        }

        struct ListDocument: Encodable {
            struct Provider: Encodable {
                var kind, name: String
                var aliases: [String]
                var plugin, version, file: String
            }
            struct Refused: Encodable {
                var file: String
                var reasons: [String]
            }
            var providers: [Provider]
            var refused: [Refused]
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a new version of a plugin into a running host, as a new generation.",
            discussion: """
                The file is sent to the host's control API, copied to its plugin cache under a \
                content-derived name and checked like any plugin. Jobs that use the plugin switch to \
                it from their next fire; running items finish on the old version. If the plugin \
                fails a check, or a job would not run on it, the running version stays and the \
                reasons are printed (exit 2). See docs/hot-loading.md.
                """)

        @OptionGroup var control: ControlOptions
        @Argument(help: "The plugin file (a shared object).") var file: String

        func run() async throws {
            let bytes = try readFile(file)
            let client = try control.client()
            let name = URL(fileURLWithPath: file).lastPathComponent
            let answer = try await client.send(
                "POST", "plugins", query: ["name": name.hasSuffix(".so") ? name : name + ".so"], body: bytes,
                contentType: "application/octet-stream")
            if control.json { return printRaw(answer) }
            print(try client.decode(PluginLoadOutcome.self, from: answer).description)
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a plugin file and show its descriptor, without registering anything.",
            discussion: """
                Exit status: 0 when the plugin passes every check, 1 when it would be refused, \
                2 when the file does not exist.
                """)

        @Argument(help: "The plugin file (a shared object).")
        var file: String

        @Flag(help: "Print the inspection as JSON.")
        var json = false

        @Flag(name: .customLong("in-process"), help: ArgumentHelp(
            "Load the plugin in this process instead of a separate trial process.", visibility: .hidden))
        var inProcess = false

        @Option(name: .customLong("log-level"), help: ArgumentHelp("Log level for the plugin's own messages.", valueName: "level"))
        var logLevel: String?

        func run() throws {
            guard FileManager.default.fileExists(atPath: file) else {
                throw CLIFailure.badInput("\(file): no such file")
            }
            var options = PluginOptions()
            options.logLevel = logLevel
            options.noPreflight = inProcess
            let logger = try options.makeLogger()
            let loader = PluginLoader(logger: logger, preflight: options.preflight)
            let (inspection, _) = loader.inspect(file)
            if json {
                print(try JSONOutput.encode(InspectDocument(inspection)))
            } else {
                print(InspectDocument.text(inspection))
            }
            if !inspection.accepted { throw ExitCode(1) }
        }
    }
}

/// `plugins inspect --json`: the inspection plus its verdict.
struct InspectDocument: Encodable {
    var file: String
    var accepted: Bool
    var checks: [PluginInspection.Check]
    var descriptor: PluginInspection.Descriptor?

    init(_ inspection: PluginInspection) {
        file = inspection.file
        accepted = inspection.accepted
        checks = inspection.checks
        descriptor = inspection.descriptor
    }

    static func text(_ inspection: PluginInspection) -> String {
        var lines = ["plugin file: \(inspection.file)"]
        if let descriptor = inspection.descriptor {
            lines.append("descriptor:")
            lines.append("  magic: \(descriptor.magic)")
            lines.append("  ABI: \(descriptor.abiMajor).\(descriptor.abiMinor)")
            lines.append("  sizes: descriptor \(descriptor.descriptorSize) bytes, provider \(descriptor.providerSize) bytes")
            if let name = descriptor.name { lines.append("  name: \(name)") }
            if let version = descriptor.version { lines.append("  version: \(version)") }
            if let toolchain = descriptor.toolchain { lines.append("  toolchain: \(toolchain)") }
            if let sdk = descriptor.sdkVersion { lines.append("  SDK: \(sdk)") }
            for provider in descriptor.providers {
                let aliases = provider.aliases.isEmpty ? "" : " (aliases: \(provider.aliases.joined(separator: ", ")))"
                lines.append("  provider: \(provider.kind) \(provider.name)\(aliases)")
            }
        }
        lines.append("checks:")
        for check in inspection.checks {
            let mark = switch check.status {
            case .passed: "ok  "
            case .failed: "FAIL"
            case .skipped: "skip"
            }
            lines.append("  [\(mark)] \(check.title)")
            for detail in check.details { lines.append("         \(detail)") }
        }
        lines.append("verdict: " + (inspection.accepted ? "loadable" : "refused"))
        return lines.joined(separator: "\n")
    }
}

extension ProviderKind {
    /// The kind as JSON and configuration spell it: `job-type`, `sharding-strategy`, ...
    var identifier: String { description.replacingOccurrences(of: " ", with: "-") }
}
