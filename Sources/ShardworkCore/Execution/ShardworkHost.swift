import Foundation
import Logging
import ServiceLifecycle
import ShardworkSDK
import Synchronization

/// A Shardwork host: its jobs, registered in the registry, fired by one timer.
///
/// `start()` registers every job (and throws if the registry refuses one) and starts firing.
/// As a swift-service-lifecycle `Service`, `run()` waits for graceful shutdown (SIGTERM, SIGINT in a
/// `ServiceGroup`) and then drains: no new fire starts, running items get up to
/// `host.shutdownTimeoutSeconds` to finish, then they are asked to stop, and the host leaves the
/// registry.
public final class ShardworkHost: Service, Sendable {
    public let configuration: HostConfiguration
    public let runtimes: [String: JobRuntime]
    public let registry: any RegistryCenter
    public let services: HostServices
    let timer: TimerService
    let logger: Logger
    private let lifecycle = Mutex((started: false, stopped: false))

    /// Prepares every job of `configuration` against `providers` (throws before anything starts
    /// when one is invalid).
    public init(
        configuration: HostConfiguration, providers: ProviderRegistry, registry: any RegistryCenter,
        clock: any SchedulerClock = SystemClock(), instance: JobInstance = .local(), logger: Logger,
        processorCount: Int = ProcessInfo.processInfo.activeProcessorCount, workerExecutable: String? = nil
    ) throws(HostConfigurationError) {
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
        let jobs = try JobCatalog.prepare(
            configuration, providers: providers, processorCount: processorCount, workerExecutable: workerExecutable)
        let pool = WorkerPool(size: configuration.host.workerThreads ?? WorkerPool.defaultSize)
        services = HostServices(pool: pool, instance: instance, clock: clock, logger: logger, workerExecutable: workerExecutable)
        timer = TimerService(clock: clock)
        var runtimes: [String: JobRuntime] = [:]
        for job in jobs {
            runtimes[job.name] = JobRuntime(
                job: job, coordinator: JobCoordinator(registry: registry, job: job.name, instance: instance), services: services)
        }
        self.runtimes = runtimes
    }

    /// Registers every job and starts firing. A job the registry refuses (another job type under the
    /// same name) stops the start before anything fires.
    public func start() async throws {
        let first = lifecycle.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        for runtime in runtimes.values.sorted(by: { $0.name < $1.name }) {
            _ = try await runtime.coordinator.register(runtime.job.configuration)
        }
        let runtimes = self.runtimes
        // One task for the whole host: when the session changes, the watches behind every job's
        // cached snapshot may be gone.
        let sessionStates = registry.sessionStates()
        let logger = self.logger
        Task {
            var first = true
            for await state in sessionStates {
                defer { first = false }
                if first, case .connected = state { continue }
                logger.notice("registry session: \(state)")
                for runtime in runtimes.values { runtime.coordinator.invalidateCache(watchesLost: true) }
            }
        }
        timer.start { key, deadline, now in
            runtimes[key]?.timerFired(deadline: deadline, now: now)
        }
        let now = services.clock.now()
        for runtime in runtimes.values {
            if let first = runtime.job.schedule?.nextFireTime(after: now) {
                timer.schedule(runtime.name, at: first)
            }
            await armTriggerWatch(runtime)
        }
        let scheduled = runtimes.values.filter { $0.job.schedule != nil }.count
        logger.info(
            "host \(services.instance.id) started: \(runtimes.count) jobs (\(scheduled) scheduled, \(runtimes.count - scheduled) one-off), \(services.pool.size) worker threads")
    }

    /// ElasticJob's `triggerAllInstances`: every instance of the job runs it once now (its own items).
    public func trigger(_ jobName: String) async throws {
        guard let runtime = runtimes[jobName] else {
            throw JobRegistrationError(job: jobName, message: "no such job on this host; its jobs are \(runtimes.keys.sorted().joined(separator: ", "))")
        }
        let paths = runtime.coordinator.paths
        try await registry.deleteRecursively(paths.trigger)
        try await registry.ensurePath(paths.trigger)
        for instance in try await registry.childrenIfPresent(paths.instances) {
            try await registry.createIfAbsent(paths.trigger(instance))
        }
    }

    /// Watches this instance's trigger node. A watch is a callback held by the registry: an idle job
    /// has no task waiting for it.
    private func armTriggerWatch(_ runtime: JobRuntime) async {
        let path = runtime.coordinator.paths.trigger(services.instance.id)
        do {
            let stat = try await registry.exists(path, watch: { [weak self] _ in
                guard let self else { return }
                Task { await self.armTriggerWatch(runtime) }
            })
            guard stat != nil, !lifecycle.withLock({ $0.stopped }) else { return }
            // A request for this instance: take it, run once.
            if try await registry.deleteIfPresent(path) {
                logger.info("job '\(runtime.name)': triggered")
                runtime.trigger()
            }
        } catch {
            logger.error("job '\(runtime.name)': cannot watch \(path): \(error)")
        }
    }

    /// Waits for graceful shutdown, then drains (see ``shutdown()``).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops firing, waits up to the configured deadline for running fires, asks the items still
    /// running to stop, and leaves the registry.
    public func shutdown() async {
        let first = lifecycle.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        timer.stop()
        for runtime in runtimes.values { runtime.stop() }
        let deadline = Date().addingTimeInterval(configuration.host.shutdownTimeoutSeconds)
        var busy = runtimes.values.filter(\.isRunning)
        if !busy.isEmpty {
            logger.info("stopping: waiting up to \(configuration.host.shutdownTimeoutSeconds) s for \(busy.count) running jobs")
        }
        while !busy.isEmpty, Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
            busy = busy.filter(\.isRunning)
        }
        if !busy.isEmpty {
            let names = busy.map(\.name).sorted().joined(separator: ", ")
            logger.warning("stopping: the shutdown deadline passed with jobs still running (\(names)); asking their items to stop")
            services.cancellation.cancelAll()
        }
        for runtime in runtimes.values {
            runtime.isolated?.shutdown()
            await runtime.coordinator.unregister()
        }
        await registry.close()
        services.pool.shutdown()
        logger.info("host \(services.instance.id) stopped")
    }
}
