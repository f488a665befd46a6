import Foundation
import ShardworkSDK

/// A job checked against the plugins and ready to run: its schedule parsed and its providers made.
public final class PreparedJob: Sendable {
    public let configuration: JobConfiguration
    /// `nil` for a one-off job.
    public let schedule: CronExpression?
    public let jobType: JobTypeInstance
    public let shardingStrategy: ShardingStrategyInstance
    /// How many items of one fire run at once (from the executor strategy).
    public let threadCount: Int
    public let errorHandler: ErrorHandlerInstance
    /// In the order they run: ascending `order`, ties in configuration order.
    public let listeners: [JobListenerInstance]
    public let itemParameters: [Int: String]
    public let itemTimeoutSeconds: Double?
    /// Dataflow jobs: fetch and process until a fetch returns nothing.
    public let streamingProcess: Bool
    /// Set when the items run in a worker process: that process's setup.
    let isolation: WorkerMessage.Setup?
    /// Every provider the job was prepared with (job type, sharding and executor strategies, error
    /// handler, listeners), each of one plugin generation: what a hot-load of a plugin must
    /// prepare again.
    public let providers: [RegisteredProvider]

    init(
        configuration: JobConfiguration, schedule: CronExpression?, jobType: JobTypeInstance,
        shardingStrategy: ShardingStrategyInstance, threadCount: Int, errorHandler: ErrorHandlerInstance,
        listeners: [JobListenerInstance], itemParameters: [Int: String], itemTimeoutSeconds: Double?,
        streamingProcess: Bool, isolation: WorkerMessage.Setup?, providers: [RegisteredProvider]
    ) {
        self.configuration = configuration
        self.schedule = schedule
        self.jobType = jobType
        self.shardingStrategy = shardingStrategy
        self.threadCount = threadCount
        self.errorHandler = errorHandler
        self.listeners = listeners
        self.itemParameters = itemParameters
        self.itemTimeoutSeconds = itemTimeoutSeconds
        self.streamingProcess = streamingProcess
        self.isolation = isolation
        self.providers = providers
    }

    public var name: String { configuration.jobName }
}

/// Checks jobs against the loaded plugins and prepares them. Everything a job needs is checked
/// here, before any job is registered or fired: the cron expression and time zone, every provider
/// name, and every provider's properties (each provider makes its instance for the job now).
public enum JobCatalog {
    public static func prepare(
        _ configuration: HostConfiguration, providers: ProviderRegistry,
        processorCount: Int = ProcessInfo.processInfo.activeProcessorCount, workerExecutable: String? = nil
    ) throws(HostConfigurationError) -> [PreparedJob] {
        var prepared: [PreparedJob] = []
        for (index, job) in configuration.jobs.enumerated() {
            prepared.append(try prepare(
                job, providers: providers, processorCount: processorCount, workerExecutable: workerExecutable,
                locate: { field in configuration.locations["jobs[\(index)].\(field)"] ?? configuration.locations["jobs[\(index)].jobName"] },
                file: configuration.file))
        }
        return prepared
    }

    public static func prepare(
        _ job: JobConfiguration, providers: ProviderRegistry, processorCount: Int, workerExecutable: String? = nil,
        locate: (String) -> FilePosition? = { _ in nil }, file: String? = nil
    ) throws(HostConfigurationError) -> PreparedJob {
        func failure(_ field: String, _ message: String) -> HostConfigurationError {
            let base = field.split(separator: ".").first.map(String.init) ?? field
            return HostConfigurationError(file: file, location: locate(base), job: job.jobName, field: field, message: message)
        }
        func resolve(_ kind: ProviderKind, _ name: String?, field: String) throws(HostConfigurationError) -> RegisteredProvider {
            do {
                return try providers.resolve(kind, name)
            } catch {
                throw failure(field, error.description)
            }
        }
        // A plugin's words, escaped and bounded: the error is one line, wherever it is shown.
        func refused(_ error: ProviderCallError, field: String) -> HostConfigurationError {
            if let property = error.field {
                return failure("props.\(LogText.escaped(property, limit: 200))", "\(LogText.escaped(error.message)) (checked by \(error.provider))")
            }
            return failure(field, LogText.escaped(error.description))
        }

        // A configuration read from a file or the registry was checked already; one made in code
        // is checked here, so that no value the host computes with can overflow.
        if let violation = JobLimits.violation(of: job) {
            throw failure(violation.field, violation.message)
        }
        var zone = TimeZone.current
        if let name = job.timeZone, !name.isEmpty {
            do {
                zone = try CronExpression.timeZone(named: name)
            } catch {
                throw failure("timeZone", error.description)
            }
        }
        var schedule: CronExpression?
        if let cron = job.cron, !cron.isEmpty {
            do {
                schedule = try CronExpression(cron, timeZone: zone)
            } catch {
                throw failure("cron", error.description)
            }
        }

        let itemParameters: [Int: String]
        do {
            itemParameters = try ShardingItemParameters.parse(job.shardingItemParameters)
        } catch {
            throw failure("shardingItemParameters", error.description)
        }

        let setup = { (provider: String) in
            ProviderSetup(jobName: job.jobName, providerName: provider, properties: job.props)
        }
        let typeProvider = try resolve(.jobType, job.jobType, field: "jobType")
        let strategyProvider = try resolve(.shardingStrategy, job.jobShardingStrategyType, field: "jobShardingStrategyType")
        let executorProvider = try resolve(.executorStrategy, job.jobExecutorThreadPoolSizeProviderType, field: "jobExecutorThreadPoolSizeProviderType")
        let handlerProvider = try resolve(.errorHandler, job.jobErrorHandlerType, field: "jobErrorHandlerType")
        var listenerProviders: [RegisteredProvider] = []
        for name in job.jobListenerTypes {
            listenerProviders.append(try resolve(.jobListener, name, field: "jobListenerTypes"))
        }

        let jobType: JobTypeInstance
        let strategy: ShardingStrategyInstance
        let threadCount: Int
        let handler: ErrorHandlerInstance
        var listeners: [(order: Int, index: Int, listener: JobListenerInstance)] = []
        do {
            jobType = try JobTypeInstance(typeProvider, setup: setup(job.jobType))
        } catch {
            throw refused(error, field: "jobType")
        }
        do {
            strategy = try ShardingStrategyInstance(strategyProvider, setup: setup(job.jobShardingStrategyType ?? strategyProvider.name))
        } catch {
            throw refused(error, field: "jobShardingStrategyType")
        }
        do {
            let executor = try ExecutorStrategyInstance(
                executorProvider, setup: setup(job.jobExecutorThreadPoolSizeProviderType ?? executorProvider.name))
            threadCount = try executor.threadCount(processorCount: processorCount)
        } catch {
            throw refused(error, field: "jobExecutorThreadPoolSizeProviderType")
        }
        do {
            handler = try ErrorHandlerInstance(handlerProvider, setup: setup(job.jobErrorHandlerType ?? handlerProvider.name))
        } catch {
            throw refused(error, field: "jobErrorHandlerType")
        }
        for (index, provider) in listenerProviders.enumerated() {
            do {
                let listener = try JobListenerInstance(provider, setup: setup(job.jobListenerTypes[index]))
                listeners.append((listener.order, index, listener))
            } catch {
                throw refused(error, field: "jobListenerTypes")
            }
        }
        listeners.sort { ($0.order, $0.index) < ($1.order, $1.index) }

        let timeout = job.props[HostProperty.itemTimeoutSeconds].flatMap(Double.init)
        let streaming: Bool
        do {
            streaming = try job.props.boolean(HostProperty.streamingProcess, default: false)
        } catch {
            throw failure("props.\(HostProperty.streamingProcess)", error.message)
        }
        var isolation: WorkerMessage.Setup?
        if job.props[HostProperty.isolation] == "process" {
            guard workerExecutable != nil else {
                throw failure("props.\(HostProperty.isolation)", "process isolation needs the shardwork binary to start workers, and this host has none")
            }
            isolation = WorkerMessage.Setup(
                plugin: typeProvider.plugin.path, provider: typeProvider.name, jobName: job.jobName,
                properties: job.props.entries.map { [$0.key, $0.value] }, streaming: streaming)
        }
        return PreparedJob(
            configuration: job, schedule: schedule, jobType: jobType, shardingStrategy: strategy,
            threadCount: threadCount, errorHandler: handler, listeners: listeners.map(\.listener),
            itemParameters: itemParameters, itemTimeoutSeconds: timeout, streamingProcess: streaming, isolation: isolation,
            providers: [typeProvider, strategyProvider, executorProvider, handlerProvider] + listenerProviders)
    }
}
