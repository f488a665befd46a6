import Foundation
import Logging
import Synchronization

/// What the collaborators of a ``ShardworkHost`` share: its configuration, registry and services,
/// the jobs it runs with its bookkeeping of each, its timer and its background tasks.
///
/// The collaborators each own one concern: ``ClusterSyncer`` keeps each job in step with the
/// cluster, ``SessionSupervisor`` follows the registry session and fences, ``JobAdoption`` decides
/// which jobs run here, and ``PluginHotLoading`` loads new plugin versions. A request for a job's
/// sync goes through here (``requestSync(_:)``), so that none of them needs a reference to the
/// syncer.
final class HostContext: Sendable {
    let configuration: HostConfiguration
    let registry: any RegistryCenter
    let services: HostServices
    let timer: TimerService
    let logger: Logger
    /// What re-preparing a job after a configuration change (or a plugin hot-load) needs.
    let providers: ProviderRegistry
    /// How jobs are prepared: checked, tried in a separate process, then made here.
    let preparation: JobPreparation
    /// The host's background work, cancelled and awaited when it stops.
    let background = BackgroundTasks()
    /// The jobs that run on this host now, by name.
    let table: Mutex<[String: JobRuntime]>
    /// The host's own bookkeeping of each job's cluster state.
    let syncs: Mutex<[String: JobSync]>
    let lifecycle = Mutex((started: false, registered: false, stopped: false))
    /// The unusual registry values already logged (``explainOnce(_:logger:_:metadata:)``).
    private let explained = Mutex<Set<String>>([])
    /// One sync per job at a time; one more after it when asked during it.
    private let syncRuns = CoalescingRunner<String>()
    /// What a sync request runs: the syncer's look at the job, bound when the host is wired.
    /// In a class, not a closure in the lock: see ``Callback``.
    private let syncHandler = Mutex<AsyncCallback<JobRuntime>?>(nil)

    /// The host's own bookkeeping of a job's cluster state.
    struct JobSync {
        /// False once the job was shut down on this host by a command (or is being retired).
        var active = true
        /// Shut down on this host by a command: off here until the host restarts, or until the job
        /// is removed from the cluster (and perhaps added again).
        var shutDown = false
        /// The available instances when last looked at, to notice a membership change.
        var membership: [String]?
        /// The version of the registry's configuration this host applied last.
        var configVersion: Int32?
        /// When the job's last reconcile ran (on the host's clock, milliseconds).
        var lastReconcile: Int64
        /// The registry transaction that created the job's `config` node, as registered: another one
        /// means the job was removed and added again.
        var configCreated: Int64?
        /// The snapshot cache generation of the last sync that went through: while it is still the
        /// cache's, nothing changed in the registry and the periodic check has nothing to do.
        var syncedGeneration: UInt64?
        /// Added to the cluster (`job add`) rather than configured here: its `dynamic` node goes
        /// back with it if the namespace has to be written again.
        var dynamic = false

        init(now: Int64, dynamic: Bool = false) {
            lastReconcile = now
            self.dynamic = dynamic
        }
    }

    init(
        configuration: HostConfiguration, registry: any RegistryCenter, services: HostServices, timer: TimerService,
        logger: Logger, providers: ProviderRegistry, preparation: JobPreparation, runtimes: [String: JobRuntime]
    ) {
        self.configuration = configuration
        self.registry = registry
        self.services = services
        self.timer = timer
        self.logger = logger
        self.providers = providers
        self.preparation = preparation
        table = Mutex(runtimes)
        let now = services.clock.now()
        syncs = Mutex(runtimes.mapValues { _ in JobSync(now: now) })
    }

    /// The jobs that run on this host now, by name.
    var runtimes: [String: JobRuntime] { table.withLock { $0 } }

    var isStopped: Bool { lifecycle.withLock { $0.stopped } }

    /// Whether the job still runs on this host (false after a shutdown command).
    func isActive(_ job: String) -> Bool {
        syncs.withLock { $0[job]?.active ?? false }
    }

    /// Binds what ``requestSync(_:)`` runs.
    func handleSyncs(with handler: @escaping @Sendable (JobRuntime) async -> Void) {
        syncHandler.withLock { $0 = AsyncCallback(handler) }
    }

    /// Looks at the job's state in the registry soon (``ClusterSyncer/sync(_:)``); if a look is under
    /// way, once more after it. Nothing for a job no longer active here.
    func requestSync(_ runtime: JobRuntime) {
        guard isActive(runtime.name), let handler = syncHandler.withLock({ $0 }) else { return }
        syncRuns.request(runtime.name, spawn: { background.spawn("sync \(runtime.name)", $0) }) { [weak runtime] in
            guard let runtime else { return }
            await handler.call(runtime)
        }
    }

    /// Puts the job's next scheduled fire on the timer (or takes it off, for a one-off job).
    func schedule(_ runtime: JobRuntime, after now: Int64) {
        if let first = runtime.job.schedule?.nextFireTime(after: now) {
            timer.schedule(runtime.name, at: first)
        } else {
            timer.cancel(runtime.name)
        }
    }

    /// Logs `message` (a warning, with `metadata`) the first time `key` is seen, with `logger` (the
    /// host's, or a job's).
    func explainOnce(
        _ key: String, logger: Logger? = nil, _ message: Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]
    ) {
        let first = explained.withLock { explained -> Bool in
            if explained.count > 10_000 { explained.removeAll() }
            return explained.insert(key).inserted
        }
        if first { (logger ?? self.logger).warning(message, metadata: metadata()) }
    }

    /// The host's logger with `job` in its metadata, for what concerns a job that has no runtime
    /// here (set aside, being adopted, written back).
    func jobLogger(_ job: String) -> Logger {
        var logger = self.logger
        logger[metadataKey: "job"] = "\(job)"
        return logger
    }
}
