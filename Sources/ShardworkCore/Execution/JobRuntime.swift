import Foundation
import Logging
import ShardworkSDK
import Synchronization

/// Why a fire happens.
public enum FireSource: String, Sendable, Codable, CaseIterable {
    /// The cron schedule.
    case schedule
    /// A trigger: run once now (one-off jobs, operators).
    case trigger
    /// The re-run of a fire that came while the previous one was still running.
    case misfire
    /// Items of a crashed instance that this instance took over.
    case failover
}

/// One job's life on this host: its fires, one at a time, as ElasticJob runs them (reference
/// §3.2): shard if needed (the leader does it), take this instance's items, run the listeners'
/// before-hooks, mark the items running (one transaction), run them on the job's executor strategy,
/// hand failures to the error handler, clear the markers, re-run once if a fire came meanwhile
/// (misfire), and run the after-hooks.
package final class JobRuntime: Sendable {
    // What an armed fire's start reads comes first, so that it shares the object's first cache
    // lines (see ``ArmedFire``).
    /// The fire state and the job as prepared now, under one lock: decisions are made by
    /// ``JobFireState`` with the lock held, and carried out after it is released.
    private let state: Mutex<Locked>
    /// Fires started from an armed preparation.
    let armedFires = Atomic<Int>(0)
    /// Set when the job needs resharding while a streaming dataflow item runs: it stops fetching.
    let reshardingNeeded = Atomic<Bool>(false)
    /// Items given up on at their timeout that have not returned (``StuckItems``).
    let stuckItems: StuckItems

    package let coordinator: JobCoordinator
    let services: HostServices
    let logger: Logger

    /// Workers of earlier preparations whose fire was running when they were replaced.
    private let retiredWorkers = Mutex<[IsolatedJobType]>([])

    package var job: PreparedJob { state.withLock { $0.job } }
    var isolated: IsolatedJobType? { state.withLock { $0.isolated } }

    /// Stops the job's worker processes: the current one and any kept for a fire that ran.
    func shutdownWorkers() {
        isolated?.shutdown()
        for worker in retiredWorkers.withLock({ workers in defer { workers = [] }; return workers }) { worker.shutdown() }
    }

    private struct Locked {
        var fires: JobFireState<ArmedFire>
        /// The registry write of the misfire markers, which must land before they are cleared.
        /// Started with the lock held, so that the run that clears them always finds it.
        var misfireWrite: Task<Void, Never>?
        /// The job as prepared now, and its worker process if its items run isolated. A
        /// configuration change in the registry replaces both; a fire uses the one it started with.
        var job: PreparedJob
        var isolated: IsolatedJobType?
        /// Tasks waiting for the job to be idle (``untilIdle()``), by waiter.
        var idleWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let nextIdleWaiter = Atomic<UInt64>(0)

    /// Called after every fire (and failover run) ends: the host looks for failover work then
    /// (ElasticJob's enquiry execution).
    let onFireEnded = Mutex<Callback<Void>?>(nil)

    /// One logger per item, made once: setting log metadata is not free (swift-log's stream handler
    /// renders it again on every change), and items repeat at every fire.
    private let itemLoggers = Mutex<[Int: Logger]>([:])

    /// A scheduled fire later than this is counted as missed (the host was paused, the clock jumped).
    static var lateFireMilliseconds: Int64 { JobFireState<ArmedFire>.lateFireMilliseconds }

    package init(job: PreparedJob, coordinator: JobCoordinator, services: HostServices) {
        self.coordinator = coordinator
        self.services = services
        var logger = services.logger
        logger[metadataKey: "job"] = "\(job.name)"
        logger[metadataKey: "instance"] = "\(services.instance.id)"
        self.logger = logger
        stuckItems = StuckItems { [logger] item, after in
            logger.notice(
                "an item given up on at its timeout returned; its thread is free", metadata: ["item": "\(item)", "after": "\(after)"])
        }
        state = Mutex(Locked(
            fires: JobFireState(preparation: ObjectIdentifier(job), misfireEnabled: job.configuration.misfire),
            job: job, isolated: Self.isolation(for: job, services: services, logger: logger)))
    }

    private static func isolation(for job: PreparedJob, services: HostServices, logger: Logger) -> IsolatedJobType? {
        guard let setup = job.isolation, let executable = services.workerExecutable else { return nil }
        return IsolatedJobType(executable: executable, setup: setup, logger: logger)
    }

    /// Takes a new preparation of the job (its configuration changed in the registry). Fires that
    /// start from now on use it; a running fire finishes with the one it started with.
    func replace(with prepared: PreparedJob) {
        // A fire armed with the old preparation is stale: the timer's handler runs the fire at its
        // instant afresh, if the new schedule still has it; an arming under way is void.
        let (replaced, dropped) = state.withLock { state -> (IsolatedJobType?, ArmedFire?) in
            let old = state.isolated
            let keepWorker = old != nil && state.job.isolation == prepared.isolation
            state.job = prepared
            state.isolated = keepWorker ? old : Self.isolation(for: prepared, services: services, logger: logger)
            let dropped = state.fires.replacePreparation(ObjectIdentifier(prepared), misfireEnabled: prepared.configuration.misfire)
            return (keepWorker ? nil : old, dropped)
        }
        if let dropped { services.fireBoard.remove(dropped) }
        if let replaced {
            // Items of a running fire may still be in the old worker: it goes when the fire ends.
            if isRunning {
                retiredWorkers.withLock { $0.append(replaced) }
            } else {
                replaced.shutdown()
            }
        }
        itemLoggers.withLock { $0.removeAll() }
    }

    package var name: String { coordinator.paths.job }

    // MARK: Fires

    /// The timer's call (on the timer thread; it must not wait): start a fire, or record a misfire
    /// when the previous fire is still running. Returns the next fire time. A fire that its wave
    /// started (or is starting) is the wave's: only the next fire time is wanted then.
    package func timerFired(deadline: Int64, now: Int64) -> Int64? {
        let (decision, dropped) = state.withLock { state in
            let outcome = state.fires.timerFired(deadline: deadline, now: now)
            if case .misfire(_, let marks?) = outcome.0 { writeMisfireMarks(marks, &state) }
            return outcome
        }
        if let dropped { services.fireBoard.remove(dropped) }
        switch decision {
        case .takenByWave(.known(let next)):
            return next
        case .takenByWave(.fromSchedule):
            return job.schedule?.nextFireTime(after: deadline)
        case .start(let source):
            Task { await self.fire(scheduledAt: deadline, source: source) }
        case .misfire(let kept, _):
            misfired(deadline, kept: kept)
        case .missed(let late):
            missed(deadline, lateMilliseconds: late)
        case .none:
            break
        }
        // Computed after the fire is off, so it delays nothing that starts now.
        return job.schedule?.nextFireTime(after: now - deadline > Self.lateFireMilliseconds ? now : deadline)
    }

    /// Starts the registry write of a kept misfire's markers (call with the state locked: the run
    /// that clears them must find the write). Writes chain: each waits for the one before.
    private func writeMisfireMarks(_ marks: JobFireState<ArmedFire>.MisfireMarks, _ state: inout Locked) {
        let previous = state.misfireWrite
        let total = state.job.configuration.shardingTotalCount
        state.misfireWrite = Task {
            await previous?.value
            do {
                let marked: [Int]
                switch marks {
                case .items(let items):
                    marked = items
                case .assignedNow:
                    marked = CoordinationRules.assignedItems(try await self.coordinator.snapshot(), self.services.instance, total: total)
                }
                try await self.coordinator.setMisfire(marked)
            } catch {
                self.logger.error("cannot record the misfire in the registry", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            }
        }
    }

    /// A fire found the previous one still running: kept for a run after it (misfire on), or not.
    private func misfired(_ deadline: Int64, kept: Bool) {
        services.events.publish(.misfire(job: name, fireTime: deadline, kept: kept))
        if kept {
            logger.info("a fire found the previous fire still running; it will run once after it", metadata: ["fire.time": "\(Self.format(deadline))"])
        }
    }

    /// A fire came more than a second late with misfire off: skipped.
    private func missed(_ deadline: Int64, lateMilliseconds: Int64) {
        services.events.publish(.missedFire(job: name, fireTime: deadline, lateMilliseconds: lateMilliseconds))
        logger.warning(
            "a fire was missed and misfire is off; skipped",
            metadata: ["fire.time": "\(Self.format(deadline))", "late.ms": "\(lateMilliseconds)"])
    }

    /// Runs the job once now. If a fire is running, runs once after it (triggers do not pile up).
    package func trigger() {
        if state.withLock({ $0.fires.trigger() }) == .start {
            Task { await self.fire(scheduledAt: self.services.clock.now(), source: .trigger) }
        }
    }

    /// Runs items taken over from a crashed instance: at once when the job is idle here
    /// (notification execution), otherwise right after the current fire (enquiry execution).
    package func runFailover(_ claims: [Int: UInt64]) {
        if state.withLock({ $0.fires.failoverClaimed(claims) }) == .start {
            Task { await self.fire(scheduledAt: self.services.clock.now(), source: .failover) }
        }
    }

    /// No fire starts after this; a running one finishes (``isRunning`` turns false).
    package func stop() {
        // An armed fire holds this runtime: off its wave, so that a removed job is freed now.
        if let armed = state.withLock({ $0.fires.stop() }) { services.fireBoard.remove(armed) }
    }

    package var isRunning: Bool { state.withLock { $0.fires.running } }

    /// Whether the job stopped on this host (removed, or the host is stopping).
    var isStopped: Bool { state.withLock { $0.fires.stopped } }

    /// While the job is idle here, a stamp that changes when a run starts; `nil` while it runs. Two
    /// equal stamps mean the job stayed idle in between.
    var idleStamp: UInt64? { state.withLock { $0.fires.idleStamp } }

    private func fire(scheduledAt fireTime: Int64, source: FireSource) async {
        let report = await runFire(fireTime: source == .trigger || source == .failover ? services.clock.now() : fireTime, source: source)
        await afterRun(report: report)
    }

    /// After a run: the runs that came meanwhile (failover work, a misfire, a trigger), then the
    /// end of the fire. Each run's summary is logged once the job has moved on from it (to its next
    /// run, or idle): a reader of the log that sees a fire end may count on the job being past it.
    private func afterRun(report: FireReport?) async {
        var report = report
        while true {
            let next = nextRun()
            if let report { reportFireEnd(report) }
            guard let next else { break }
            report = await runFire(fireTime: next.fireTime ?? services.clock.now(), source: next.source)
        }
        fireEnded()
    }

    /// What a run's summary line and its end event say.
    struct FireReport {
        var fireTime: Int64
        var source: FireSource
        var items: [Int]
        var outcomes: [Int: ItemOutcome]
        var fenced: [Int] = []
        var runs: Int
        var started: Int64
        var itemTimes: [Int: ItemTimes] = [:]
        var runDetails: [ItemsRunDetail] = []
    }

    /// What runs next once a run has ended, or `nil` (and the job is idle) when nothing does.
    private func nextRun() -> JobFireState<ArmedFire>.NextRun? {
        let (next, waiters) = state.withLock { state -> (JobFireState<ArmedFire>.NextRun?, [CheckedContinuation<Void, Never>]) in
            guard let next = state.fires.runEnded() else {
                defer { state.idleWaiters = [:] }
                return (nil, Array(state.idleWaiters.values))
            }
            return (next, [])
        }
        for waiter in waiters { waiter.resume() }
        return next
    }

    /// Returns once no run of the job is under way or due here (at once if none is), or when the
    /// calling task is cancelled. Stop the job first to wait for its last run.
    func untilIdle() async {
        let id = nextIdleWaiter.wrappingAdd(1, ordering: .relaxed).oldValue
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let idle = state.withLock { state -> Bool in
                    if !state.fires.running || Task.isCancelled { return true }
                    state.idleWaiters[id] = continuation
                    return false
                }
                if idle { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.idleWaiters.removeValue(forKey: id) }?.resume()
        }
    }

    private func fireEnded() {
        for worker in retiredWorkers.withLock({ workers in defer { workers = [] }; return workers }) { worker.shutdown() }
        onFireEnded.withLock { $0 }?.call()
    }

    /// One run of the fire; its summary, or `nil` when it did not run (skipped, or failed in the
    /// registry, which is logged here).
    private func runFire(fireTime: Int64, source: FireSource) async -> FireReport? {
        // The preparation and its worker are taken together, once: every item of the fire runs on
        // the same version, whatever replaces them meanwhile.
        let (job, isolated) = state.withLock { ($0.job, $0.isolated) }
        let configuration = job.configuration
        let started = services.clock.now()
        guard services.mayStartItems, !services.registrySilent(coordinator.registry) else {
            services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .registryUnavailable))
            logger.warning(
                "a fire is skipped: the registry connection is down, and no new item starts without it",
                metadata: ["fire.time": "\(Self.format(fireTime))"])
            return nil
        }
        if source == .failover {
            return await runFailoverItems(job, isolated, fireTime: fireTime, started: started)
        }
        var items: [Int] = []
        var outcomes: [Int: ItemOutcome] = [:]
        var itemTimes: [Int: ItemTimes] = [:]
        var runDetails: [ItemsRunDetail] = []
        var fenced: [Int] = []
        var runs = 0
        do {
            // Magnitudes, which cannot overflow whatever the registry's clock says; the limit is a
            // Java int of seconds (``JobLimits``), so its milliseconds fit.
            if configuration.maxTimeDiffSeconds >= 0, let difference = try await clockDifference(),
               difference.magnitude > UInt64(configuration.maxTimeDiffSeconds) * 1000
            {
                let message = "Time different between job server and register center exceed '\(difference.magnitude / 1000)' seconds, "
                    + "max time different is '\(configuration.maxTimeDiffSeconds)' seconds."
                if await handleFailure(job, origin: .environment, item: nil, fireTime: fireTime, taskID: "", message: message, code: 0) == .propagate {
                    services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .aborted))
                    return nil
                }
            }

            var snapshot = try await coordinator.snapshot()
            if CoordinationRules.needsSharding(snapshot, forFireAt: fireTime) {
                switch try await awaitSharding(snapshot, job: job, fireTime: fireTime) {
                case .settled(let settled):
                    snapshot = settled
                case .timedOut:
                    services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .shardingDidNotSettle))
                    logger.warning(
                        "a fire is skipped: the new assignment did not settle in time",
                        metadata: ["fire.time": "\(Self.format(fireTime))", "sharding.wait": "\(Self.shardingWait)"])
                    return nil
                case .stopped:
                    services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .jobStopped))
                    return nil
                }
            }
            if configuration.monitorExecution && !configuration.failover {
                let leftovers = CoordinationRules.ownLeftoverMarkers(snapshot, services.instance, total: configuration.shardingTotalCount)
                if !leftovers.isEmpty {
                    // This instance's own markers, of its session (they are ephemeral), while no run
                    // of the job is under way here (one at a time): left by a run whose clearing
                    // failed with the connection (its items ended). Left in place they would keep
                    // those items from running here again as long as the session lives.
                    logger.notice(
                        "running markers of this instance left by an earlier run; removed",
                        metadata: ["items": "\(leftovers.map(String.init).joined(separator: ","))"])
                    try await coordinator.clearRunning(leftovers)
                    snapshot = try await coordinator.snapshot()
                }
            }
            items = CoordinationRules.itemsToRun(
                snapshot, services.instance, total: configuration.shardingTotalCount,
                failover: configuration.failover, monitorExecution: configuration.monitorExecution)
            state.withLock { $0.fires.itemsKnown(items) }
            let epochs = Dictionary(uniqueKeysWithValues: items.map { ($0, snapshot.items[$0]?.ownerEpoch ?? 0) })
            let taskID = self.taskID(items)
            var fire = FireInfo(
                jobName: name, taskID: taskID, shardingTotalCount: configuration.shardingTotalCount,
                jobParameter: configuration.jobParameter, fireTimeMilliseconds: fireTime, items: items,
                itemParameters: job.itemParameters.filter { items.contains($0.key) })

            if await !runListeners(job, fire, before: true) {
                services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .aborted))
                return nil
            }
            reportFireStart(job, fireTime: fireTime, source: source, items: items, epochs: epochs, taskID: taskID)
            if items.isEmpty {
                logger.debug("no items on this host")
            } else {
                while true {
                    let run = try await execute(job, isolated, items, epochs: epochs, fireTime: fireTime, taskID: taskID, failover: false)
                    outcomes = run.outcomes
                    itemTimes = run.itemTimes
                    if services.events.isObserved { runDetails.append(ItemsRunDetail(outcomes: run.outcomes, itemTimes: run.itemTimes)) }
                    fenced = run.fenced
                    runs += 1
                    if run.aborted { break }
                    guard try await misfireRerunNeeded(items) else { break }
                }
            }
            fire.itemStatuses = Dictionary(uniqueKeysWithValues: items.map { item in
                (item, outcomes[item].map { $0.succeeded ? ItemStatus.succeeded : .failed } ?? .notRun)
            })
            _ = await runListeners(job, fire, before: false)
            return FireReport(
                fireTime: fireTime, source: source, items: items, outcomes: outcomes, fenced: fenced, runs: runs, started: started,
                itemTimes: itemTimes, runDetails: runs > 1 ? runDetails : [])
        } catch let error as RunNotRecorded {
            logger.error(
                "a fire's items ended, but the registry could not be updated after them",
                metadata: ["fire.time": "\(Self.format(fireTime))", "error": "\(LogText.escaped("\(error.underlying)"))"])
            if services.events.isObserved { runDetails.append(ItemsRunDetail(outcomes: error.run.outcomes, itemTimes: error.run.itemTimes)) }
            return FireReport(
                fireTime: fireTime, source: source, items: items, outcomes: error.run.outcomes, fenced: error.run.fenced, runs: runs + 1,
                started: started, itemTimes: error.run.itemTimes, runDetails: runs + 1 > 1 ? runDetails : [])
        } catch {
            services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .registryFailed("\(error)")))
            logger.error(
                "a fire failed in the registry",
                metadata: ["fire.time": "\(Self.format(fireTime))", "error": "\(LogText.escaped("\(error)"))"])
            return nil
        }
    }

    /// A failover run: the claimed items of crashed instances, with their claims' epochs. The
    /// markers are the claim's (`failover`, `failovering`) and the usual `running`; all go in one
    /// transaction at the end. If a listener vetoes the run, the items go back to the queue.
    private func runFailoverItems(_ job: PreparedJob, _ isolated: IsolatedJobType?, fireTime: Int64, started: Int64) async -> FireReport? {
        let claims = state.withLock { $0.fires.takeFailoverClaims() }
        let items = claims.keys.sorted()
        guard !items.isEmpty else { return nil }
        let configuration = job.configuration
        state.withLock { $0.fires.itemsKnown(items) }
        let taskID = self.taskID(items)
        var fire = FireInfo(
            jobName: name, taskID: taskID, shardingTotalCount: configuration.shardingTotalCount,
            jobParameter: configuration.jobParameter, fireTimeMilliseconds: fireTime, items: items,
            itemParameters: job.itemParameters.filter { items.contains($0.key) })
        logger.notice("running items taken over from a crashed instance", metadata: ["items": "\(items.map(String.init).joined(separator: ","))"])
        do {
            guard await runListeners(job, fire, before: true) else {
                try await coordinator.requeueFailover(items)
                services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .aborted))
                return nil
            }
            reportFireStart(job, fireTime: fireTime, source: .failover, items: items, epochs: claims, taskID: taskID)
            let run = try await execute(job, isolated, items, epochs: claims, fireTime: fireTime, taskID: taskID, failover: true)
            let outcomes = run.outcomes
            fire.itemStatuses = Dictionary(uniqueKeysWithValues: items.map { item in
                (item, outcomes[item].map { $0.succeeded ? ItemStatus.succeeded : .failed } ?? .notRun)
            })
            _ = await runListeners(job, fire, before: false)
            return FireReport(
                fireTime: fireTime, source: .failover, items: items, outcomes: outcomes, fenced: run.fenced, runs: 1, started: started,
                itemTimes: run.itemTimes)
        } catch let error as RunNotRecorded {
            logger.error(
                "a failover run's items ended, but the registry could not be updated after them",
                metadata: ["items": "\(items.map(String.init).joined(separator: ","))", "error": "\(LogText.escaped("\(error.underlying)"))"])
            // As below: the claim's markers stay, for a later look; not in a tight loop (real
            // time, whatever the host's clock: it paces, it is no deadline).
            try? await Task.sleep(for: .seconds(1))
            return FireReport(
                fireTime: fireTime, source: .failover, items: items, outcomes: error.run.outcomes, fenced: error.run.fenced, runs: 1,
                started: started, itemTimes: error.run.itemTimes)
        } catch {
            services.events.publish(.fireSkipped(job: name, fireTime: fireTime, reason: .registryFailed("\(error)")))
            logger.error(
                "a failover run failed in the registry",
                metadata: ["items": "\(items.map(String.init).joined(separator: ","))", "error": "\(LogText.escaped("\(error)"))"])
            // The claim stays this instance's and is run again at a later look at the job; not in a
            // tight loop while the registry misbehaves (real time: it paces, it is no deadline).
            try? await Task.sleep(for: .seconds(1))
            return nil
        }
    }

    /// Whether failover work is queued or running here.
    var hasFailoverWork: Bool { state.withLock { !$0.fires.failoverPending.isEmpty } }

    /// After a run: run again once when a fire came meanwhile (ElasticJob's misfire loop: misfire on,
    /// no resharding pending). The misfire markers in the registry record it for operators; the
    /// write that made them is awaited before they are cleared, so none is left behind.
    private func misfireRerunNeeded(_ items: [Int]) async throws -> Bool {
        let (pending, write) = state.withLock { state -> (Bool, Task<Void, Never>?) in
            defer { state.misfireWrite = nil }
            return (state.fires.takeMisfire(), state.misfireWrite)
        }
        await write?.value
        guard pending, job.configuration.misfire else {
            if write != nil { try await coordinator.clearMisfire(items) }
            return false
        }
        let snapshot = try await coordinator.snapshot()
        try await coordinator.clearMisfire(items)
        guard !snapshot.reshardingNecessary else { return false }
        logger.info("running the misfired fire now")
        return true
    }

    private func itemLogger(_ item: Int) -> Logger {
        itemLoggers.withLock { loggers in
            if let logger = loggers[item] { return logger }
            var logger = self.logger
            logger[metadataKey: "item"] = "\(item)"
            loggers[item] = logger
            return logger
        }
    }

    /// What one run of a fire's items came to.
    struct ItemsRun {
        var outcomes: [Int: ItemOutcome]
        /// When each item started and ended (recorded only while the host's events are observed).
        var itemTimes: [Int: ItemTimes]
        /// Items stopped by fencing.
        var fenced: [Int]
        /// The error handler asked to abort the rest of the fire.
        var aborted: Bool
    }

    /// One run of the fire's items.
    func execute(
        _ job: PreparedJob, _ isolated: IsolatedJobType?, _ items: [Int], epochs: [Int: UInt64], fireTime: Int64, taskID: String, failover: Bool
    ) async throws -> ItemsRun {
        let configuration = job.configuration
        let (session, _, owned) = ownership()
        let registry = coordinator.registry
        let services = self.services
        if configuration.monitorExecution {
            try await coordinator.markRunning(items, persistent: configuration.failover)
        }
        // An item still running since it was given up on at its timeout (it does not stop when
        // asked) is not started again: it would run twice at once, and hold one more thread.
        let (held, unreported) = stuckItems.holding(items)
        for (item, since) in unreported.sorted(by: { $0.key < $1.key }) {
            // The advice is the point of the line: logged once per stuck item.
            logger.warning(
                """
                an item given up on at its timeout still runs: it does not stop when asked. It holds a thread of this host and \
                is not started again until it returns. Make the job stop when asked (isCancelled), or run it with \
                shardwork.isolation: process, where such an item's worker is killed
                """,
                metadata: [
                    "item": "\(item)", "since": "\(since)",
                    // Threads of this host held so, and the most the pool adds for them.
                    "threads.held": "\(services.pool.stuckThreads)", "threads.held.max": "\(services.pool.size)",
                ])
            services.events.publish(.itemAbandoned(job: name, item: item, threadsHeld: services.pool.stuckThreads))
        }
        // Each item's start and end, for the event stream's readers (execution history).
        let times: Mutex<[Int: ItemTimes]>? = services.events.isObserved ? Mutex([:]) : nil
        let clock = services.clock
        var outcomes = await ItemBatch.run(
            items.filter { !held.contains($0) }, concurrency: job.threadCount, pool: services.pool, timeout: job.itemTimeoutSeconds,
            cancellation: services.cancellation, stuck: stuckItems
        ) { item, isCancelled in
            let started = times == nil ? 0 : clock.now()
            defer { times?.withLock { $0[item] = ItemTimes(startedAt: started, endedAt: clock.now()) } }
            let context = Self.context(job, item: item, taskID: taskID, fireTime: fireTime, epoch: epochs[item] ?? 0)
            let invocation = self.invocation(context, isCancelled: isCancelled, owned: owned)
            if let isolated { return isolated.run(invocation) }
            guard let jobType = job.jobType else {
                return .failed(message: "the job's items run in a worker process, and none could be started", code: 0)
            }
            return Self.runItem(jobType, streaming: job.streamingProcess, ItemCall(invocation)) { [self] in
                reshardingNeeded.load(ordering: .relaxed)
            }
        }
        for item in held {
            outcomes[item] = .failed(
                message: "not started: its run given up on at its timeout is still running, and does not stop when asked", code: 0)
        }
        let ending = ItemsEnding(items: items, outcomes: outcomes, sameSession: registry.sessionID == session, owned: owned())
        reportEnding(ending, requeued: configuration.failover)
        do {
            if case .kept(let done, let fenced) = ending {
                // Still our session. Items the host fenced (asked to stop) before they finished are
                // queued for another run when failover is on: their fire is not lost.
                if failover {
                    try await coordinator.completeFailover(done)
                    try await coordinator.requeueFailover(fenced, running: true)
                } else if configuration.monitorExecution {
                    try await coordinator.clearRunning(configuration.failover ? done : items)
                    if configuration.failover { try await coordinator.requeueRunning(fenced) }
                }
            }
        } catch {
            // The items ran and ended: that is what happened, whatever the registry says now.
            throw RunNotRecorded(
                run: ItemsRun(outcomes: outcomes, itemTimes: times?.withLock { $0 } ?? [:], fenced: ending.fenced, aborted: false),
                underlying: error)
        }
        let propagate = await handleItemFailures(job, items, outcomes, fireTime: fireTime, taskID: taskID)
        return ItemsRun(outcomes: outcomes, itemTimes: times?.withLock { $0 } ?? [:], fenced: ending.fenced, aborted: propagate)
    }

    /// A run's items ended, but the registry refused or lost the writes after them (markers
    /// cleared, fenced items queued again): the run is still reported as it ran (its end event, its
    /// summary), and the markers are left to the next look at the job, as after a crash.
    struct RunNotRecorded: Error {
        var run: ItemsRun
        var underlying: any Error
    }

    /// Logs and publishes how a run's items ended as far as ownership goes (both fire paths).
    private func reportEnding(_ ending: ItemsEnding, requeued: Bool) {
        switch ending {
        case .ranPastSession(let items):
            // The session ended while the items ran: other instances may own them now, with newer
            // epochs. Their markers are not ours to clear; markers still naming this instance are
            // queued for failover by the next look at the job (``CoordinationRules/crashedItems``).
            logger.warning(
                "items ran past this host's registry session; their markers are left to the instances that own them now",
                metadata: ["items": "\(items.map(String.init).joined(separator: ","))"])
        case .kept(_, let fenced) where !fenced.isEmpty:
            services.events.publish(.itemsFenced(job: name, items: fenced, requeued: requeued))
            logger.warning(
                requeued ? "items were stopped by fencing; queued to run again" : "items were stopped by fencing",
                metadata: ["items": "\(fenced.map(String.init).joined(separator: ","))"])
        case .kept:
            break
        }
    }

    /// Hands each failed item to the job's error handler, in item order (both fire paths). Returns
    /// whether the handler asked to abort the rest of the fire.
    private func handleItemFailures(
        _ job: PreparedJob, _ items: [Int], _ outcomes: [Int: ItemOutcome], fireTime: Int64, taskID: String
    ) async -> Bool {
        var propagate = false
        for item in items.sorted() {
            guard let outcome = outcomes[item], let message = outcome.failureMessage else { continue }
            if await handleFailure(job, origin: .item, item: item, fireTime: fireTime, taskID: taskID, message: message, code: outcome.code) == .propagate {
                propagate = true
            }
        }
        return propagate
    }

    /// ElasticJob's task id: `{job}@-@{items}@-@READY@-@{ip}@-@{pid}`.
    private func taskID(_ items: [Int]) -> String {
        "\(name)@-@\(items.map(String.init).joined(separator: ","))@-@READY@-@\(services.instance.id)"
    }

    /// The sharding context an item of `job` runs with.
    private static func context(_ job: PreparedJob, item: Int, taskID: String, fireTime: Int64, epoch: UInt64) -> ShardingContext {
        let configuration = job.configuration
        return ShardingContext(
            jobName: job.name, taskID: taskID, shardingTotalCount: configuration.shardingTotalCount,
            jobParameter: configuration.jobParameter, shardingItem: item, shardingParameter: job.itemParameters[item],
            fireTimeMilliseconds: fireTime, fencingEpoch: epoch)
    }

    /// Items are this instance's while the registry session they started in lasts and the host has
    /// not fenced them: the session and fencing generation now, and the check of both. (One host
    /// owns every item of the embedded registry; a cluster host checks the registry.)
    private func ownership() -> (session: Int64?, fencingGeneration: UInt64, owned: @Sendable () -> Bool) {
        let registry = coordinator.registry
        let session = registry.sessionID
        let generation = services.fencingGeneration.load(ordering: .acquiring)
        let services = self.services
        return (session, generation, {
            registry.sessionID == session && services.fencingGeneration.load(ordering: .acquiring) == generation
                && !services.registrySilent(registry)
        })
    }

    /// What an item's code gets: its context, a control that reports cancellation (the batch's, or
    /// the loss of ownership) and whether its epoch is still current, and its logger.
    private func invocation(
        _ context: ShardingContext, isCancelled: @escaping @Sendable () -> Bool, owned: @escaping @Sendable () -> Bool
    ) -> ItemInvocation {
        let epoch = context.fencingEpoch
        let control = ItemControl(isCancelled: { isCancelled() || !owned() }, isEpochCurrent: { $0 == epoch && owned() })
        return ItemInvocation(context: context, control: control, logger: itemLogger(context.shardingItem))
    }

    /// Runs one item on the current (worker) thread.
    static func runItem(
        _ jobType: JobTypeInstance, streaming: Bool, _ call: ItemCall, reshardingNeeded: () -> Bool
    ) -> ItemOutcome {
        do {
            switch jobType.shape {
            case .simple:
                try jobType.execute(call)
            case .dataflow:
                guard var batch = try jobType.fetch(call) else { return .succeeded }
                while true {
                    try jobType.process(call, batch)
                    // ElasticJob's streaming loop: fetch again until nothing comes, unless the job
                    // must reshard or the item is asked to stop.
                    guard streaming, !call.invocation.control.isCancelled, !reshardingNeeded(),
                          let next = try jobType.fetch(call)
                    else { break }
                    batch = next
                }
            }
            return .succeeded
        } catch {
            return .failed(message: error.message, code: error.code)
        }
    }

    /// Hands a failure to the job's error handler (on a worker thread: handlers may wait on the
    /// network) and logs what the handler itself could not do.
    private func handleFailure(
        _ job: PreparedJob, origin: FailureOrigin, item: Int?, fireTime: Int64, taskID: String, message: String, code: Int32
    ) async -> ErrorDisposition {
        let failure = JobFailure(
            origin: origin, jobName: name, taskID: taskID, instanceID: services.instance.id, hostName: services.hostName,
            item: item, fireTimeMilliseconds: fireTime, message: message, code: code)
        let handler = job.errorHandler
        let result = await services.onWorker { Result { () throws(ProviderCallError) in try handler.handle(failure) } }
        switch result {
        case .success(let disposition):
            return disposition
        case .failure(let error):
            logger.error(
                "the error handler failed while handling a failure",
                metadata: ["failure": "\(LogText.quoted(message))", "error": "\(LogText.escaped("\(error)"))"])
            return .handled
        }
    }

    /// Runs the listeners in order; a failing listener goes to the error handler. Returns false when
    /// the handler asked to abort the fire.
    private func runListeners(_ job: PreparedJob, _ fire: FireInfo, before: Bool) async -> Bool {
        for listener in job.listeners {
            let result = await services.onWorker {
                Result { () throws(ProviderCallError) in
                    if before { try listener.beforeFire(fire) } else { try listener.afterFire(fire) }
                }
            }
            if case .failure(let error) = result {
                let disposition = await handleFailure(
                    job, origin: .listener, item: nil, fireTime: fire.fireTimeMilliseconds, taskID: fire.taskID,
                    message: "\(listener.provider.name) \(before ? "before" : "after") the fire: \(error.message)", code: error.code)
                if disposition == .propagate { return false }
            }
        }
        return true
    }

    /// ElasticJob's max-time-difference check: the registry's time (a node's modification time)
    /// against this host's clock.
    private func clockDifference() async throws -> Int64? {
        let path = coordinator.paths.root + "/systemTime/current"
        try await coordinator.registry.ensurePath(path)
        let stat = try await coordinator.registry.setData(path, data: [], version: nil)
        guard stat.modifiedTime > 0 else { return nil }
        return services.clock.now() - stat.modifiedTime
    }

    /// A run began: its start event, timed now or when its items started (`startedAt`).
    private func reportFireStart(
        _ job: PreparedJob, fireTime: Int64, source: FireSource, items: [Int], epochs: @autoclosure () -> [Int: UInt64], taskID: String,
        startedAt: Int64? = nil
    ) {
        guard services.events.isObserved else { return }
        let provider = job.jobTypeProvider
        let startedAt = startedAt ?? services.clock.now()
        services.events.publish(HostEvent(time: startedAt, kind: .fireStarted(FireStart(
            job: name, fireTime: fireTime, source: source, items: items, epochs: epochs(), startedAt: startedAt,
            jobType: provider?.name ?? job.configuration.jobType, plugin: provider?.plugin.name ?? "",
            pluginVersion: provider?.plugin.version ?? "", taskID: taskID))))
    }

    /// An armed fire's start event, timed when its items started.
    func reportArmedStart(_ fire: ArmedFire) {
        reportFireStart(
            fire.job, fireTime: fire.deadline, source: .schedule, items: fire.items, epochs: fire.epochs, taskID: fire.taskID,
            startedAt: fire.startedAt.load(ordering: .relaxed))
    }

    /// A run ended and the job has moved on from it: its end event and its summary line.
    private func reportFireEnd(_ report: FireReport) {
        let now = services.clock.now()
        services.events.publish(.fireEnded(FireEnd(
            job: name, fireTime: report.fireTime, source: report.source, items: report.items, outcomes: report.outcomes,
            fenced: report.fenced, runs: report.runs, startedAt: report.started, endedAt: now, itemTimes: report.itemTimes,
            runDetails: report.runDetails)))
        // At debug: thousands of fires a second must not mean thousands of lines a second. The
        // metadata is built only when debug is logged: a fire is cheap, formatting it is not.
        logger.debug("fired", metadata: Self.fireSummary(report, duration: now - report.started))
    }

    /// The per-fire summary's data: the fire, this host's items (empty when it had none), how many
    /// succeeded, those that failed and the runs (only when there are), and how long it took.
    static func fireSummary(_ report: FireReport, duration milliseconds: Int64) -> Logger.Metadata {
        let failed = report.outcomes.filter { !$0.value.succeeded }.keys.sorted()
        var metadata: Logger.Metadata = [
            "fire.time": "\(format(report.fireTime))", "fire.source": "\(report.source.rawValue)",
            "items": "\(report.items.map(String.init).joined(separator: ","))",
            "succeeded": "\(report.items.count - failed.count)", "duration.ms": "\(milliseconds)",
        ]
        if !failed.isEmpty { metadata["failed"] = "\(failed.map(String.init).joined(separator: ","))" }
        // More than one run: the misfire re-runs.
        if report.runs > 1 { metadata["runs"] = "\(report.runs)" }
        return metadata
    }

    /// An instant as ISO 8601 in UTC with milliseconds (`2026-11-22T06:36:02.000Z`).
    static func format(_ milliseconds: Int64) -> String {
        var seconds = time_t(milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let millis = Int32(((milliseconds % 1000) + 1000) % 1000)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(millis, 3))Z"
    }
}

// MARK: Armed fires

extension JobRuntime {
    /// The instant of the fire armed now, if one is.
    package var armedDeadline: Int64? { state.withLock { $0.fires.armed?.deadline } }

    /// How many fires started from an armed preparation (the rest took the general path).
    package var armedFireCount: Int { armedFires.load(ordering: .relaxed) }

    /// Whether the job's fires can be armed: nothing to do at the instant but start the items. A
    /// fire with listeners, running markers (monitorExecution, and so failover), the clock check,
    /// an item timeout or a worker process takes the general path, as does any fire whose registry
    /// state changed after it was armed.
    static func canArm(_ job: PreparedJob) -> Bool {
        job.listeners.isEmpty && !job.configuration.monitorExecution && job.configuration.maxTimeDiffSeconds < 0
            && job.isolation == nil && job.jobType != nil && job.itemTimeoutSeconds == nil
    }

    /// Prepares the fire at `deadline` (on the timer's thread, ahead of the instant): the items this
    /// instance runs, their C contexts and the fire after it, from the cached snapshot, and puts it
    /// in the wave of its instant. Nothing is armed when the job cannot be, the snapshot is not
    /// cached, or a resharding is due; that fire then takes the general path.
    package func arm(deadline: Int64) {
        arm(deadline: deadline, armGeneration: state.withLock { $0.fires.armGeneration })
    }

    /// `armGeneration`: the arming generation when the arming began; if the job's preparation has
    /// been replaced since, nothing is armed.
    private func arm(deadline: Int64, armGeneration: UInt64) {
        // An earlier fire that its wave has and has not started yet (every worker thread is busy)
        // stays armed: it starts late rather than never, and the fire at `deadline` takes the
        // general way (it finds that fire pending, and counts as a misfire).
        guard !hasPendingReleasedFire else { return }
        let job = self.job
        guard Self.canArm(job), let jobType = job.jobType else {
            dropArmed()
            return
        }
        guard let (snapshot, generation) = coordinator.cachedSnapshot() else {
            // Not cached (the registry changed since the last read): read it off the timer's
            // thread, and arm with it if it comes before the instant.
            dropArmed()
            Task {
                guard (try? await coordinator.snapshot()) != nil, services.clock.now() < deadline - 1 else { return }
                arm(deadline: deadline, armGeneration: armGeneration)
            }
            return
        }
        var armed: ArmedFire?
        if !snapshot.reshardingNecessary, !snapshot.shardingProcessing {
            let configuration = job.configuration
            let items = CoordinationRules.itemsToRun(
                snapshot, services.instance, total: configuration.shardingTotalCount, failover: configuration.failover,
                monitorExecution: false)
            if !items.isEmpty {
                let taskID = self.taskID(items)
                let (session, fencingGeneration, owned) = ownership()
                let fire = ArmedFire(
                    runtime: self, deadline: deadline, job: job, jobType: jobType, cache: coordinator.cache, cacheGeneration: generation,
                    items: items, taskID: taskID, next: job.schedule?.nextFireTime(after: deadline), session: session,
                    fencingGeneration: fencingGeneration)
                let cancellation = services.cancellation
                // Unowned: the fire owns its calls, and an item's control is only used while the
                // item runs.
                let isCancelled: @Sendable () -> Bool = { [unowned fire] in
                    cancellation.isCancelled(since: fire.stamp.load(ordering: .acquiring))
                }
                fire.setCalls(items.map { item in
                    let context = Self.context(
                        job, item: item, taskID: taskID, fireTime: deadline, epoch: snapshot.items[item]?.ownerEpoch ?? 0)
                    return ItemCall(invocation(context, isCancelled: isCancelled, owned: owned))
                })
                armed = fire
            }
        }
        let decision = state.withLock { $0.fires.arm(armed, generation: armGeneration) }
        guard case .armed(let replaced) = decision else { return }
        // A fire armed earlier and not handed to a wave is stale now: off its wave.
        if let replaced, replaced !== armed { services.fireBoard.remove(replaced) }
        // In the wave only once it is the armed fire: a wave that takes it finds it so.
        guard let armed else { return }
        if !services.fireBoard.add(armed) {
            // Its instant's wave has gone already: the timer's handler runs it the general way.
            state.withLock { $0.fires.dropArmed(armed) }
        } else if !state.withLock({ $0.fires.isArmed(armed) }) {
            // Stopped or dropped while it was being added: off the wave again.
            services.fireBoard.remove(armed)
        }
    }

    /// Whether the armed fire is one that its wave has and has not started yet.
    private var hasPendingReleasedFire: Bool { state.withLock { $0.fires.hasPendingReleasedFire } }

    /// Drops the armed fire, unless its wave has it already (then the wave starts it): it is stale
    /// (the job's preparation changed, or its fires are no longer armed).
    func dropArmed() {
        if let dropped = state.withLock({ $0.fires.dropArmed() }) { services.fireBoard.remove(dropped) }
    }

    /// Starts an armed fire that its wave gives this thread: claims it (it must still be the armed
    /// fire; if the previous fire is still running, this one is a misfire), checks that it is not
    /// stale, and runs its items here (more of the pool's threads join for a job whose executor
    /// allows several at once). Returns true when the items ran and ended on this thread: the
    /// caller ends the fire with ``finishArmed(_:)`` once its other starts are out.
    func release(_ fire: ArmedFire, gate: WaveGate, log: RunnerLog) -> Bool {
        // Whether anything the fire was armed with changed by now: the registry session, fencing,
        // the snapshot it was made from; and whether items may start at all. If so, or if it is
        // late (every worker thread was busy for more than a second), or its preparation changed,
        // the general path runs it afresh, as the timer would have (a late one as a misfire, or
        // not at all with misfire off).
        let fresh = services.mayStartItems && gate.session == fire.session && !gate.silent
            && services.fencingGeneration.load(ordering: .acquiring) == fire.fencingGeneration
            && fire.cache.generation == fire.cacheGeneration
        let decision = state.withLock { state in
            let decision = state.fires.release(fire, now: gate.now, fresh: fresh)
            if case .misfire(_, let marks?) = decision { writeMisfireMarks(marks, &state) }
            return decision
        }
        switch decision {
        case .none:
            return false
        case .misfire(let kept, _):
            misfired(fire.deadline, kept: kept)
            return false
        case .missed(let late):
            missed(fire.deadline, lateMilliseconds: late)
            return false
        case .stale(let late):
            Task { await self.fire(scheduledAt: fire.deadline, source: late ? .misfire : .schedule) }
            return false
        case .start:
            break
        }
        fire.stamp.store(services.cancellation.stamp, ordering: .releasing)
        armedFires.wrappingAdd(1, ordering: .relaxed)
        fire.startedAt.store(gate.now, ordering: .relaxed)
        if services.events.isObserved {
            // Said after the wave's starts, by whoever takes the runner's log (see ``RunnerLog``);
            // at once when other threads run items too: any of them may end the fire.
            if fire.helpers > 0 { reportArmedStart(fire) } else { log.started(fire) }
        }
        if fire.helpers > 0 {
            services.pool.submit(contentsOf: Array(repeating: { [self] in
                if fire.runItems() { finishArmed(fire) }
            }, count: fire.helpers))
        }
        return fire.runItems()
    }

    /// The end of an armed fire, on a worker thread: what `execute` and `runFire` do after the
    /// items, for a fire without markers or listeners. Failures go to the error handler on a task;
    /// a success ends the fire here.
    func finishArmed(_ fire: ArmedFire) {
        let items = fire.items
        let registry = coordinator.registry
        let sameSession = registry.sessionID == fire.session
        let owned = sameSession
            && services.fencingGeneration.load(ordering: .acquiring) == fire.fencingGeneration && !services.registrySilent(registry)
        let allSucceeded = fire.allSucceeded
        // Without markers: nothing to clear or queue, only what to say (the same as `execute`).
        let ending: ItemsEnding
        if allSucceeded && sameSession {
            ending = .kept(done: items, fenced: [])
        } else {
            ending = ItemsEnding(items: items, outcomes: fire.outcomesByItem, sameSession: sameSession, owned: owned)
            reportEnding(ending, requeued: false)
        }
        guard allSucceeded else {
            let outcomes = fire.outcomesByItem
            Task {
                _ = await handleItemFailures(fire.job, items, outcomes, fireTime: fire.deadline, taskID: fire.taskID)
                await afterRun(
                    report: FireReport(
                        fireTime: fire.deadline, source: .schedule, items: items, outcomes: outcomes, fenced: ending.fenced, runs: 1,
                        started: fire.startedAt.load(ordering: .relaxed)))
            }
            return
        }
        // Reported once the job has moved on from this fire (as ``afterRun(report:)`` does).
        let next = nextRun()
        if logger.logLevel <= .debug || services.events.isObserved {
            reportFireEnd(FireReport(
                fireTime: fire.deadline, source: .schedule, items: items, outcomes: fire.outcomesByItem, runs: 1, started: fire.startedAt.load(ordering: .relaxed)))
        }
        if let next {
            Task {
                let report = await runFire(fireTime: next.fireTime ?? services.clock.now(), source: next.source)
                await afterRun(report: report)
            }
        } else {
            fireEnded()
        }
    }
}
