import CShardworkSupport
import Dispatch
import Foundation
import Logging
import ShardworkSDK
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a job's items in a separate `shardwork worker` process (`props: shardwork.isolation:
/// process`), so that job code that crashes (a trap, a segmentation fault) fails its items instead
/// of taking the host down.
///
/// One worker process serves the job, running its items concurrently. It starts when the job's
/// first item runs, and again after it dies: a crash fails the items it was running, with the
/// signal, and the next item gets a fresh worker. The host forwards cancellation; a worker that does
/// not finish a cancelled item within `killGraceSeconds` takes no new item (the next one starts a
/// fresh worker) and is killed as soon as the items still running in it are only such overdue
/// ones: a hang ends for good, and takes no healthy item with it.
final class IsolatedJobType: Sendable {
    let executable: String
    let setup: WorkerMessage.Setup
    let logger: Logger
    static let killGraceSeconds = 2.0
    /// The longest line of a worker's output that is read as a message.
    static let longestWorkerLine = 1 << 20

    /// An item waiting for its outcome.
    private final class Pending: Sendable {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<ItemOutcome?>(nil)
        let logger: Logger

        init(logger: Logger) { self.logger = logger }

        func finish(_ result: ItemOutcome) {
            let first = outcome.withLock { outcome -> Bool in
                guard outcome == nil else { return false }
                outcome = result
                return true
            }
            if first { done.signal() }
        }
    }

    /// A running worker process and the items it is running.
    private final class Worker: @unchecked Sendable {
        // `process` and `input` are set once; writes to `input` are serialised by `writeLock`.
        let process: SpawnedProcess
        let input: FileHandle
        let ready = DispatchSemaphore(value: 0)
        let setupFailure = Mutex<String?>(nil)
        let pending = Mutex<[UInt64: Pending]>([:])
        /// Items cancelled that did not stop within the grace: the worker is killed once they are
        /// all its unfinished items.
        let overdue = Mutex<Set<UInt64>>([])
        let killed = Atomic<Bool>(false)
        private let writeLock = Mutex(())

        init(process: SpawnedProcess, input: FileHandle) {
            self.process = process
            self.input = input
        }

        func send(_ message: WorkerMessage.ToWorker) {
            let line = WorkerMessage.line(message)
            writeLock.withLock { _ in try? input.write(contentsOf: line) }
        }
    }

    private struct State {
        /// Set only once the worker is ready.
        var worker: Worker?
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())
    /// One start at a time: items that arrive while a worker starts wait for that one.
    private let starting = Mutex(())

    init(executable: String, setup: WorkerMessage.Setup, logger: Logger) {
        self.executable = executable
        self.setup = setup
        self.logger = logger
    }

    /// Runs one item in the worker and waits for it (on a worker thread of the host).
    func run(_ invocation: ItemInvocation) -> ItemOutcome {
        let worker: Worker
        do {
            worker = try currentWorker()
        } catch {
            return .failed(message: "cannot start the job's worker process: \(error)", code: 0)
        }
        let pending = Pending(logger: invocation.logger)
        let context = invocation.context
        let id: UInt64 = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        worker.pending.withLock { $0[id] = pending }
        if !worker.process.isRunning {
            // It died between the check and now: its reader may have failed its items already.
            pending.finish(.failed(message: "the job's worker process \(worker.process.pid) ended before the item started", code: 0))
        }
        worker.send(.run(WorkerMessage.Run(
            id: id, jobName: context.jobName, taskID: context.taskID, shardingTotalCount: context.shardingTotalCount,
            jobParameter: context.jobParameter, shardingItem: context.shardingItem, shardingParameter: context.shardingParameter,
            fireTimeMilliseconds: context.fireTimeMilliseconds, fencingEpoch: context.fencingEpoch)))

        var cancelledAt: Date?
        var overdue = false
        while pending.done.wait(timeout: .now() + .milliseconds(50)) == .timedOut {
            guard invocation.control.isCancelled, !overdue else { continue }
            if let cancelledAt {
                if Date().timeIntervalSince(cancelledAt) > Self.killGraceSeconds {
                    overdue = true
                    // No new item goes to this worker; it ends once only overdue items remain in it.
                    state.withLock { state in if state.worker === worker { state.worker = nil } }
                    worker.overdue.withLock { _ = $0.insert(id) }
                    let others = worker.pending.withLock { $0.filter { $0.key != id && $0.value.outcome.withLock { $0 } == nil }.count }
                    var metadata: Logger.Metadata = [
                        "pid": "\(worker.process.pid)", "item": "\(context.shardingItem)",
                        "grace.seconds": "\(Self.killGraceSeconds)",
                    ]
                    if others > 0 { metadata["items.others"] = "\(others)" }
                    logger.warning(
                        others == 0
                            ? "the worker process did not stop a cancelled item within its grace; killing it"
                            : "the worker process did not stop a cancelled item within its grace; it takes no new item, and is killed once its other items end",
                        metadata: metadata)
                    killIfOnlyOverdue(worker)
                }
            } else {
                cancelledAt = Date()
                worker.send(.cancel(id: id))
            }
        }
        worker.pending.withLock { _ = $0.removeValue(forKey: id) }
        return pending.outcome.withLock { $0 } ?? .failed(message: "the worker process gave no outcome", code: 0)
    }

    /// Kills `worker` when every item still unfinished in it is overdue (its end fails them).
    private func killIfOnlyOverdue(_ worker: Worker) {
        let overdue = worker.overdue.withLock { $0 }
        guard !overdue.isEmpty else { return }
        let unfinished = worker.pending.withLock { pending in
            Set(pending.filter { $0.value.outcome.withLock { $0 } == nil }.keys)
        }
        guard unfinished.isSubset(of: overdue), !worker.killed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        worker.process.signal(SIGKILL)
    }

    /// Ends the worker process (the host is stopping).
    func shutdown() {
        let worker = state.withLock { state -> Worker? in
            defer { state.worker = nil }
            return state.worker
        }
        guard let worker else { return }
        try? worker.input.close()
        worker.process.signal(SIGTERM)
    }

    private func currentWorker() throws -> Worker {
        if let worker = state.withLock({ $0.worker }) { return worker }
        return try starting.withLock { _ throws -> Worker in
            if let worker = state.withLock({ $0.worker }) { return worker }
            let worker = try startWorker()
            worker.ready.wait()
            if let failure = worker.setupFailure.withLock({ $0 }) {
                throw JobError(failure)
            }
            state.withLock { $0.worker = worker }
            return worker
        }
    }

    /// A write to the pipe of a worker that has just died must fail, not kill the host with SIGPIPE.
    private static let ignoreBrokenPipes: Void = {
        signal(SIGPIPE, SIG_IGN)
    }()

    private func startWorker() throws -> Worker {
        Self.ignoreBrokenPipes
        // Both pipes close on exec: the worker keeps only its standard input and output, and no
        // other child inherits an end (the worker would never see its input close).
        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        guard shardwork_pipe(&input) == 0 else { throw ChildProcessError(description: "cannot make a pipe: \(String(cString: strerror(errno)))") }
        guard shardwork_pipe(&output) == 0 else {
            let problem = String(cString: strerror(errno))
            close(input[0])
            close(input[1])
            throw ChildProcessError(description: "cannot make a pipe: \(problem)")
        }
        let process: SpawnedProcess
        do {
            defer {
                close(input[0])
                close(output[1])
            }
            process = try SpawnedProcess(
                executable, ["worker"], baseEnvironment: ChildProcess.pluginChildEnvironment, input: input[0], output: output[1],
                errors: STDERR_FILENO)
        } catch {
            close(input[1])
            close(output[0])
            throw error
        }
        let worker = Worker(process: process, input: FileHandle(fileDescriptor: input[1], closeOnDealloc: true))
        worker.send(.setup(setup))
        logger.debug("started a worker process", metadata: ["pid": "\(process.pid)", "job.type": "\(setup.provider)"])
        let reader = FileHandle(fileDescriptor: output[0], closeOnDealloc: true)
        Thread.detachNewThread { [self] in read(reader, from: worker) }
        return worker
    }

    /// The worker's output, until it ends: outcomes and log lines, then the end of the process.
    private func read(_ handle: FileHandle, from worker: Worker) {
        var buffer = Data()
        let decoder = JSONDecoder()
        var announced = false
        while true {
            let chunk = handle.readChunkRetryingInterrupts()
            if chunk.isEmpty { break }
            buffer.append(chunk)
            if buffer.count > Self.longestWorkerLine, buffer.firstIndex(of: 0x0A) == nil {
                // Not a message (a plugin writing to the worker's standard output itself): dropped,
                // so that it cannot grow without bound.
                buffer.removeAll()
            }
            while let newline = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<newline]
                buffer.removeSubrange(buffer.startIndex...newline)
                guard let message = try? decoder.decode(WorkerMessage.FromWorker.self, from: line) else { continue }
                switch message {
                case .ready:
                    announced = true
                    worker.ready.signal()
                case .setupFailed(let reason):
                    worker.setupFailure.withLock { $0 = reason }
                    announced = true
                    worker.ready.signal()
                case .log(let id, let level, let text):
                    let target = id.flatMap { id in worker.pending.withLock { $0[id] } }?.logger ?? logger
                    target.log(level: Logger.Level(pluginLevel: level), "\(LogText.escaped(text))")
                case .succeeded(let id):
                    worker.pending.withLock { $0[id] }?.finish(.succeeded)
                    killIfOnlyOverdue(worker)
                case .failed(let id, let text, let code):
                    worker.pending.withLock { $0[id] }?.finish(.failed(message: text, code: code))
                    killIfOnlyOverdue(worker)
                }
            }
        }
        let exit = worker.process.waitForExitBlocking()
        let pid = worker.process.pid
        let ending: String = exit.signalled
            ? "crashed: \(strsignal(exit.status).map { String(cString: $0) } ?? "signal") (signal \(exit.status))"
            : "exited with status \(exit.status)"
        if !announced {
            worker.setupFailure.withLock { $0 = "the worker process \(pid) \(ending) before it was ready" }
            worker.ready.signal()
        }
        state.withLock { state in if state.worker === worker { state.worker = nil } }
        let orphans = worker.pending.withLock { Array($0.values) }
        if !orphans.isEmpty {
            logger.error(
                "the job's worker process ended; its running items failed",
                metadata: ["pid": "\(pid)", "ending": "\(ending)", "items.failed": "\(orphans.count)"])
        }
        for pending in orphans {
            pending.finish(.failed(message: "the job's worker process \(pid) \(ending)", code: 0))
        }
    }
}

/// The worker side: `shardwork worker` reads a setup and item requests on standard input, runs the
/// items with the job type from the plugin, and writes outcomes and log lines to standard output.
public enum WorkerProcess {
    public static func serve() -> Int32 {
        let output = OutputLine()
        var quiet = Logger(label: "shardwork.worker")
        quiet.logLevel = .critical
        guard let first = readLine(), let message = try? JSONDecoder().decode(WorkerMessage.ToWorker.self, from: Data(first.utf8)),
              case .setup(let setup) = message
        else {
            output.write(.setupFailed("the first message was not a setup"))
            return 2
        }
        let job: JobTypeInstance
        do {
            let providers = ProviderRegistry()
            let plugin = try PluginLoader(logger: quiet).load(setup.plugin).get()
            try providers.register(plugin)
            let provider = try providers.resolve(.jobType, setup.provider)
            job = try JobTypeInstance(provider, setup: ProviderSetup(
                jobName: setup.jobName, providerName: setup.provider,
                properties: JobProperties(setup.properties.compactMap { $0.count == 2 ? (key: $0[0], value: $0[1]) : nil })))
        } catch {
            output.write(.setupFailed("\(error)"))
            return 1
        }
        output.write(.ready)

        let pool = WorkerPool(size: WorkerPool.defaultSize)
        let cancelled = CancelledItems()
        while let line = readLine() {
            guard let message = try? JSONDecoder().decode(WorkerMessage.ToWorker.self, from: Data(line.utf8)) else { continue }
            switch message {
            case .setup:
                continue
            case .cancel(let id):
                cancelled.insert(id)
            case .run(let run):
                pool.submit {
                    var logger = Logger(label: "shardwork.worker") { _ in ForwardingLogHandler(id: run.id, output: output) }
                    logger.logLevel = .trace
                    let context = ShardingContext(
                        jobName: run.jobName, taskID: run.taskID, shardingTotalCount: run.shardingTotalCount,
                        jobParameter: run.jobParameter, shardingItem: run.shardingItem, shardingParameter: run.shardingParameter,
                        fireTimeMilliseconds: run.fireTimeMilliseconds, fencingEpoch: run.fencingEpoch)
                    let control = ItemControl(isCancelled: { cancelled.contains(run.id) }, isEpochCurrent: { $0 == run.fencingEpoch })
                    let outcome = JobRuntime.runItem(
                        job, streaming: setup.streaming, ItemCall(ItemInvocation(context: context, control: control, logger: logger))
                    ) { false }
                    switch outcome {
                    case .succeeded: output.write(.succeeded(id: run.id))
                    default: output.write(.failed(id: run.id, message: outcome.failureMessage ?? "failed", code: outcome.code))
                    }
                    cancelled.remove(run.id)
                }
            }
        }
        // The host closed the pipe: it is stopping or gave up on this worker.
        return 0
    }

    /// Writes whole lines to standard output, one writer at a time.
    final class OutputLine: Sendable {
        private let lock = Mutex(())

        func write(_ message: WorkerMessage.FromWorker) {
            writeRaw(WorkerMessage.line(message))
        }

        /// Writes `line` as it is, at once (no buffering: it is out before a crash that follows).
        func writeRaw(_ line: Data) {
            lock.withLock { _ in FileHandle.standardOutput.write(line) }
        }
    }

    final class CancelledItems: Sendable {
        private let ids = Mutex<Set<UInt64>>([])
        func insert(_ id: UInt64) { _ = ids.withLock { $0.insert(id) } }
        func remove(_ id: UInt64) { _ = ids.withLock { $0.remove(id) } }
        func contains(_ id: UInt64) -> Bool { ids.withLock { $0.contains(id) } }
    }

    /// Sends an item's log lines to the host.
    struct ForwardingLogHandler: LogHandler {
        let id: UInt64
        let output: OutputLine
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let level: Int32 = switch event.level {
            case .trace: 0
            case .debug: 1
            case .info: 2
            case .notice: 3
            case .warning: 4
            case .error: 5
            case .critical: 6
            }
            output.write(.log(id: id, level: level, message: "\(event.message)"))
        }
    }
}
