import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import ShardworkControl
import ShardworkCore
import ShardworkHistory
import UnixSignals

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a host in the foreground: load its plugins, register its jobs and fire them.",
        discussion: """
            The configuration is checked whole before anything starts: an invalid file, an unknown \
            field, an unknown type name, an invalid cron expression or a property a plugin refuses \
            exits 2 with the file, line, job and field. SIGINT, SIGTERM or SIGHUP stops firing, waits \
            for running items up to host.shutdownTimeoutSeconds, and exits 0. See docs/configuration.md.
            """)

    @Option(help: ArgumentHelp("The host configuration (YAML).", valueName: "file"))
    var config: String

    @Option(name: .customLong("trigger"), help: ArgumentHelp(
        "Run this job once as soon as the host has started (repeatable); how one-off jobs run.", valueName: "job"))
    var triggers: [String] = []

    @Option(name: .customLong("plugin-dir"), help: ArgumentHelp(
        "Another plugin directory, after those of the configuration (repeatable).", valueName: "dir"))
    var pluginDirectories: [String] = []

    @Option(name: .customLong("ip"), help: ArgumentHelp(
        "The IPv4 address that names this host in the registry (overrides host.ip).", valueName: "address"))
    var ip: String?

    @Option(name: .customLong("api"), help: ArgumentHelp(
        "The control API's HOST:PORT (overrides api.address; the configuration must have an api section with its token).", valueName: "address"))
    var apiAddress: String?

    @Option(name: .customLong("metrics"), help: ArgumentHelp(
        "The metrics endpoint's HOST:PORT (overrides metrics.address, and turns the metrics on without a metrics section).", valueName: "address"))
    var metricsAddress: String?

    @Flag(name: .customLong("no-preflight"), help: "Load plugins without trying each in a separate process first.")
    var noPreflight = false

    @Option(name: .customLong("log-level"), help: ArgumentHelp(
        "trace, debug, info, notice, warning, error or critical (default: info, or SHARDWORK_LOG_LEVEL).", valueName: "level"))
    var logLevel: String?

    func run() async throws {
        // From the first moment: a stop signal during the start ends it cleanly (StopSignals).
        let stopSignals = StopSignals([SIGTERM, SIGINT, SIGHUP])
        var options = PluginOptions()
        options.logLevel = logLevel ?? ProcessInfo.processInfo.environment["SHARDWORK_LOG_LEVEL"] ?? "info"
        let logger = try options.makeLogger()

        var configuration: HostConfiguration
        do {
            configuration = try HostConfigurationReader.read(file: config)
        } catch {
            throw CLIFailure.badInput(error.description)
        }
        if let ip {
            let octets = ip.split(separator: ".", omittingEmptySubsequences: false)
            guard octets.count == 4, octets.allSatisfy({ UInt8($0) != nil }) else {
                throw CLIFailure.badInput("--ip \(ip): not an IPv4 address such as 10.0.0.5 (ElasticJob's server nodes are IPv4)")
            }
            configuration.host.ip = ip
        }
        if let apiAddress {
            guard var api = configuration.api else {
                throw CLIFailure.badInput("--api \(apiAddress): \(config) has no api: section; add one with the token (docs/operations.md)")
            }
            guard let parsed = APISettings.parseAddress(apiAddress) else {
                throw CLIFailure.badInput("--api \(apiAddress): not HOST:PORT such as 127.0.0.1:8470")
            }
            api.host = parsed.host
            api.port = parsed.port
            configuration.api = api
        }
        if let metricsAddress {
            guard let parsed = APISettings.parseAddress(metricsAddress) else {
                throw CLIFailure.badInput("--metrics \(metricsAddress): not HOST:PORT such as 127.0.0.1:9471")
            }
            if let api = configuration.api, api.enabled, api.port != 0, api.port == parsed.port, api.host == parsed.host {
                throw CLIFailure.badInput("--metrics \(metricsAddress): that is the control API's address; the metrics need a listener of their own")
            }
            var metrics = configuration.metrics ?? MetricsSettings()
            metrics.enabled = true
            metrics.host = parsed.host
            metrics.port = parsed.port
            configuration.metrics = metrics
        }
        // The metrics back end comes first: the registry's request counters are made with it.
        let prometheus = configuration.metrics.map { $0.enabled } == true ? PrometheusCollectorRegistry() : nil
        if let prometheus {
            MetricsSystem.bootstrap(MetricsServer.prometheusFactory(prometheus))
        }
        let jobNames = Set(configuration.jobs.map(\.jobName))
        if let unknown = triggers.first(where: { !jobNames.contains($0) }) {
            throw CLIFailure.badInput("--trigger \(unknown): no such job in \(config); its jobs are \(jobNames.sorted().joined(separator: ", "))")
        }

        options.pluginDirectories = configuration.plugins.directories + pluginDirectories
        options.noBuiltInPlugins = !configuration.plugins.builtIn
        options.noPreflight = noPreflight || !configuration.plugins.preflight
        options.preflightTimeout = .milliseconds(Int64((configuration.plugins.preflightTimeoutSeconds * 1000).rounded()))
        var searchPath = options.searchPath
        searchPath.files = configuration.plugins.files
        for directory in options.pluginDirectories {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw CLIFailure.badInput("\(config): plugins.directories: \(directory): no such directory")
            }
        }
        let providers = ProviderRegistry()
        let report = PluginLoader(logger: logger, preflight: options.preflight).loadAll(searchPath, into: providers)

        let registry: any RegistryCenter
        switch configuration.registry {
        case .embedded:
            registry = EmbeddedRegistry.standalone()
        case .zookeeper(let zookeeper):
            logger.info("registry: connecting to ZooKeeper", metadata: ["servers": "\(zookeeper.serverLists)", "namespace": "\(zookeeper.namespace)"])
            do {
                registry = try await ZooKeeperRegistry.connect(zookeeper, logger: logger)
            } catch {
                throw CLIFailure.failed("\(config): registry.zookeeper: \(error.description)")
            }
        }
        let instance = JobInstance.local(ip: configuration.host.ip)
        // The jobs this host died for before: refused while they are unchanged (no crash loop).
        let journalPath = configuration.host.crashJournalPath(ip: instance.serverIP)
        let journal: CrashJournal
        do {
            journal = try CrashJournal.open(path: journalPath)
        } catch {
            throw CLIFailure.failed("\(config): host.stateDirectory: cannot keep the crash journal at \(journalPath): \(error)")
        }
        let host: ShardworkHost
        do {
            host = try await ShardworkHost(
                configuration: configuration, providers: providers, registry: registry,
                instance: instance, logger: logger,
                workerExecutable: PluginOptions.executablePath,
                pluginLoader: PluginLoader(logger: logger, preflight: options.preflight), crashJournal: journal)
        } catch {
            throw CLIFailure.badInput(error.description)
        }
        logger.info("plugins: loaded", metadata: [
            "plugins": "\(report.loaded.map { "\($0.name) \($0.version)" }.joined(separator: ", "))", "refused": "\(report.refused.count)",
        ])
        // The history follows the host's events from before it starts.
        var history: HistoryService?
        var historyAccess = HistoryAccess.off(reason: "the host has no tracing: section (docs/history.md)")
        if let tracing = configuration.tracing {
            (history, historyAccess) = await HistoryService.make(tracing, configuration: configuration, host: host, logger: logger)
        }
        // The metrics follow the host's events from before it starts, as the history does.
        let metrics = prometheus.map { _ in HostMetrics(host: host, build: .init(version: ShardworkVersion.current)) }
        let metricsSubscription = metrics?.subscribe()
        stopSignals.hostRegisters()
        do {
            try await host.start()
        } catch {
            await host.shutdown()
            throw CLIFailure.failed("cannot start: \(error)")
        }
        for job in triggers {
            try await host.trigger(job)
        }
        // Services stop in the reverse order of this list: the history last, once the host has stopped
        // and its last events are in.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let history { services.append(.init(service: history)) }
        if let metrics, let metricsSubscription { services.append(.init(service: MetricsService(metrics: metrics, subscription: metricsSubscription))) }
        services.append(.init(service: host))
        if let api = configuration.api, api.enabled {
            // The API ending (its address taken, say) ends the host too: an operator relies on it.
            services.append(.init(service: ControlServer(host: host, settings: api, history: historyAccess, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        if let settings = configuration.metrics, let metrics, let prometheus {
            // Like the API: a host that cannot be watched (its metrics address taken) stops.
            let server = MetricsServer(
                host: host, metrics: metrics, registry: prometheus, settings: settings, token: configuration.api?.token, logger: logger)
            services.append(.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            // SIGHUP too: a terminal that closes sends it, and a host then drains like on SIGTERM
            // rather than dying in the middle of its items.
            gracefulShutdownSignals: [.sigterm, .sigint, .sighup], logger: logger))
        // A signal that came during the start (or comes later: the group hears it too) drains.
        Task {
            for await _ in stopSignals.remembered {
                await group.triggerGracefulShutdown()
                return
            }
        }
        do {
            try await group.run()
        } catch let error as ControlServerError {
            throw CLIFailure.failed(error.description)
        }
    }
}

/// The host's metrics as a service of `shardwork run` (docs/metrics.md): it follows the host's
/// events from before the host starts and ends once the host has stopped (its event stream ends).
struct MetricsService: Service {
    let metrics: HostMetrics
    let subscription: HostEventSubscription

    func run() async throws {
        await metrics.run(subscription)
        // Its events end with the host; it returns when the group asks it to, after the host. A
        // service that returned on its own while the group was shutting the host down would be
        // taken for one that ended unexpectedly, and `shardwork run` exit 1 at a SIGTERM.
        try? await gracefulShutdown()
    }
}
