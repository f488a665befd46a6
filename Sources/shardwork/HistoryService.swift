import Logging
import ServiceLifecycle
import ShardworkCore
import ShardworkHistory

/// The host's execution history as a service of `shardwork run` (docs/history.md): it follows the
/// host's events from before the host starts, and ends once the host has stopped (its event stream
/// ends then), writing what is still queued within the shutdown timeout. A database that cannot
/// be used leaves the host running without history, and says why.
struct HistoryService: Service {
    let writer: HistoryWriter
    let subscription: HostEventSubscription
    let flushLimit: Duration
    let logger: Logger

    /// Opens and prepares the history's database; no service (with an error logged) when it cannot
    /// be used: history is not worth losing fires over. The access is what the control API reads.
    static func make(
        _ settings: TracingSettings, configuration: HostConfiguration, host: ShardworkHost, logger: Logger
    ) async -> (service: HistoryService?, access: HistoryAccess) {
        let instance = host.services.instance
        let store: any HistoryStore
        do {
            store = try HistoryStores.open(settings, ip: instance.serverIP, hostSettings: configuration.host, logger: logger)
            try await store.prepare()
        } catch {
            logger.error(
                "history: OFF for this run; fires go on without it. Fix the setting named and restart the host",
                metadata: ["error": "\(LogText.escaped("\(error)"))"])
            return (nil, .off(reason: "\(error)"))
        }
        let writer = HistoryWriter(
            store: store, events: host.events, instance: instance, hostname: host.services.hostName,
            capacity: settings.queueCapacity, retentionDays: settings.retentionDays, logger: logger)
        let database = HistoryStores.describe(settings, ip: instance.serverIP, hostSettings: configuration.host)
        logger.info("history: on", metadata: ["database": "\(LogText.escaped(database))"])
        let service = HistoryService(
            writer: writer, subscription: writer.subscribe(),
            flushLimit: .milliseconds(Int64(configuration.host.shutdownTimeoutSeconds * 1000)), logger: logger)
        return (service, .on(store, writer: writer, database: database))
    }

    func run() async throws {
        await writer.run(subscription)
        _ = await writer.finish(within: flushLimit)
        await writer.store.close()
        // Returns when the group asks it to, last: one that ended on its own while the group was
        // shutting another service down would be taken for a failure (see MetricsService).
        try? await gracefulShutdown()
    }
}
