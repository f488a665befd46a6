import ArgumentParser
import Foundation
import Logging
import ShardworkCore

/// Where to find plugins and how to load them; shared by every command that loads plugins.
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugin-dir"), help: ArgumentHelp(
        "A directory to load plugins from (repeatable), after the built-in directory beside the shardwork binary.",
        valueName: "dir"))
    var pluginDirectories: [String] = []

    @Flag(name: .customLong("no-builtin-plugins"), help: "Do not load the plugins beside the shardwork binary.")
    var noBuiltInPlugins = false

    @Flag(name: .customLong("no-preflight"), help: ArgumentHelp(
        "Load plugins in this process without trying each in a separate process first "
            + "(faster; a plugin that crashes while loading then takes the command down)."))
    var noPreflight = false

    @Option(name: .customLong("log-level"), help: ArgumentHelp(
        "trace, debug, info, notice, warning, error or critical (default: warning, or SHARDWORK_LOG_LEVEL).",
        valueName: "level"))
    var logLevel: String?

    /// How long a trial load may take (`plugins.preflightTimeoutSeconds` for `run`).
    var preflightTimeout: Duration = .seconds(30)

    var searchPath: PluginSearchPath {
        PluginSearchPath(directories: pluginDirectories, includeBuiltIn: !noBuiltInPlugins)
    }

    func makeLogger() throws -> Logger {
        let text = logLevel ?? ProcessInfo.processInfo.environment["SHARDWORK_LOG_LEVEL"] ?? "warning"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw CLIFailure.badInput(
                "unknown log level '\(text)'; use trace, debug, info, notice, warning, error or critical")
        }
        LoggingBootstrap.once()
        var logger = Logger(label: "shardwork")
        logger.logLevel = level
        return logger
    }

    /// The preflight through this very binary, unless switched off.
    var preflight: PluginPreflight? {
        guard !noPreflight, let executable = Self.executablePath else { return nil }
        return .shardwork(executable: executable, timeout: preflightTimeout)
    }

    static var executablePath: String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    }

    /// Loads every plugin of the search path into a new registry. Configured directories that
    /// cannot be searched are bad input.
    func loadRegistry(logger: Logger) throws -> (ProviderRegistry, PluginLoadReport) {
        for directory in pluginDirectories {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw CLIFailure.badInput("--plugin-dir \(directory): no such directory")
            }
        }
        let registry = ProviderRegistry()
        let loader = PluginLoader(logger: logger, preflight: preflight)
        let report = loader.loadAll(searchPath, into: registry)
        if let unusable = report.unusableDirectories.first {
            throw CLIFailure.badInput("cannot search plugin directory \(unusable)")
        }
        return (registry, report)
    }
}

/// swift-log may be bootstrapped once per process.
enum LoggingBootstrap {
    private static let done: Void = {
        LoggingSystem.bootstrap { label in
            ConsoleLogHandler(label: label)  // at trace: each Logger sets its own level
        }
    }()

    static func once() {
        _ = done
    }
}
