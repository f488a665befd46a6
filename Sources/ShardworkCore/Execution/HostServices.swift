import Foundation
public import Logging
package import Synchronization

/// What every job of a host shares: the worker threads, the clock, who the host is, the log.
public final class HostServices: Sendable {
    package let pool: WorkerPool
    package let cancellation = ItemBatchCancellation()
    /// The fires armed ahead of their instants, by instant (see ``JobRuntime/arm(deadline:)``).
    let fireBoard = FireBoard()
    public let instance: JobInstance
    /// The `shardwork` binary, which runs isolated jobs' items as `shardwork worker`.
    public let workerExecutable: String?
    /// False while the registry connection is down: no new fire starts then.
    package let registryConnected = Atomic<Bool>(true)
    /// Raised each time the host fences its running items (it asked them to stop because it could
    /// not hear from the registry): an epoch is current only within the fencing generation in which
    /// its item started.
    package let fencingGeneration = Atomic<UInt64>(0)
    /// True from the moment the host fenced until it hears from the registry again: no item starts.
    package let fenced = Atomic<Bool>(false)

    /// Whether the registry has been silent for longer than the fencing limit. Checked inline, from
    /// the last answer on the monotonic time of the host's clock, so that a host that was paused
    /// knows at once when it runs again, before any watchdog or session event has caught up.
    package func registrySilent(_ registry: any RegistryCenter) -> Bool {
        guard let fraction = fencingFraction, let timeout = registry.sessionTimeout, let last = registry.lastContact else { return false }
        return clock.monotonicNow() - last > timeout * fraction
    }

    /// Whether a new item may start: the registry is reachable and the host is not fenced.
    package var mayStartItems: Bool {
        registryConnected.load(ordering: .acquiring) && !fenced.load(ordering: .acquiring)
    }
    public let hostName: String
    public let clock: any SchedulerClock
    public let logger: Logger
    /// What happens on the host, as values (see ``HostEvents``).
    public let events: HostEvents

    /// The fraction of the session timeout of silence from the registry after which the host's
    /// items are no longer its own (`registry.zookeeper.cancelItemsAtSessionFraction`); `nil`
    /// for registries without sessions that time out.
    package let fencingFraction: Double?

    /// The processes the host runs to try plugin code where a crash costs nothing; stopped when the
    /// host stops.
    package let children: ChildProcessSet

    package init(pool: WorkerPool, instance: JobInstance, hostName: String = ProcessInfo.processInfo.hostName,
                clock: any SchedulerClock, logger: Logger, workerExecutable: String? = nil, fencingFraction: Double? = nil,
                children: ChildProcessSet = ChildProcessSet()) {
        self.children = children
        self.fencingFraction = fencingFraction
        self.pool = pool
        self.instance = instance
        self.workerExecutable = workerExecutable
        self.hostName = hostName
        self.clock = clock
        self.logger = logger
        events = HostEvents(clock: clock)
    }

    /// Runs blocking work (a plugin call) on a worker thread and waits for it without holding a
    /// thread of Swift's cooperative pool.
    func onWorker<Value: Sendable>(_ body: @escaping @Sendable () -> Value) async -> Value {
        await withCheckedContinuation { continuation in
            let accepted = pool.submit { continuation.resume(returning: body()) }
            // The host is stopping and its pool takes no work: a thread of its own, rather than a
            // fire that waits for ever.
            if !accepted { Thread.detachNewThread { continuation.resume(returning: body()) } }
        }
    }
}
