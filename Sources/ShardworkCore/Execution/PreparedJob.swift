import Foundation
import ShardworkSDK

/// A job checked against the plugins and ready to run: its schedule parsed and its providers made.
package final class PreparedJob: Sendable {
    package let configuration: JobConfiguration
    /// `nil` for a one-off job.
    package let schedule: CronExpression?
    /// The job type's instance in the host; `nil` when the items run in a worker process, which makes
    /// its own (a job type that crashes while it is made then costs the worker, not the host).
    package let jobType: JobTypeInstance?
    package let shardingStrategy: ShardingStrategyInstance
    /// How many items of one fire run at once (from the executor strategy).
    package let threadCount: Int
    package let errorHandler: ErrorHandlerInstance
    /// In the order they run: ascending `order`, ties in configuration order.
    package let listeners: [JobListenerInstance]
    package let itemParameters: [Int: String]
    package let itemTimeoutSeconds: Double?
    /// Dataflow jobs: fetch and process until a fetch returns nothing.
    package let streamingProcess: Bool
    /// Set when the items run in a worker process: that process's setup.
    let isolation: WorkerMessage.Setup?
    /// Every provider the job was prepared with (job type, sharding and executor strategies, error
    /// handler, listeners), each of one plugin generation: what a hot-load of a plugin must
    /// prepare again.
    package let providers: [RegisteredProvider]

    /// The job's name and fingerprint for the crash journal.
    package let crashContext: CrashContext

    init(
        configuration: JobConfiguration, schedule: CronExpression?, jobType: JobTypeInstance?,
        shardingStrategy: ShardingStrategyInstance, threadCount: Int, errorHandler: ErrorHandlerInstance,
        listeners: [JobListenerInstance], itemParameters: [Int: String], itemTimeoutSeconds: Double?,
        streamingProcess: Bool, isolation: WorkerMessage.Setup?, providers: [RegisteredProvider], crashContext: CrashContext
    ) {
        self.crashContext = crashContext
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

    package var name: String { configuration.jobName }

    /// The job's fingerprint: its configuration and the plugin files of its providers.
    package var fingerprint: String { crashContext.fingerprint }

    /// The job type's provider, as events name it.
    var jobTypeProvider: RegisteredProvider? { providers.first { $0.kind == .jobType } }
}

/// A job checked against the loaded plugins by everything that needs no provider instance: its
/// schedule, item parameters and the providers its names resolve to. What a trial of the job in a
/// separate process needs, and the fingerprint that the trial verdicts and the crash journal are
/// kept by.
package struct JobPlan: Sendable {
    package let configuration: JobConfiguration
    let schedule: CronExpression?
    let itemParameters: [Int: String]
    let typeProvider: RegisteredProvider
    let strategyProvider: RegisteredProvider
    let executorProvider: RegisteredProvider
    let handlerProvider: RegisteredProvider
    let listenerProviders: [RegisteredProvider]
    let itemTimeoutSeconds: Double?
    let streaming: Bool
    let isolation: WorkerMessage.Setup?
    /// SHA-256 over the job type, the configuration as stored and the SHA-256 of each provider's
    /// plugin file: it changes when the configuration or a plugin the job uses does.
    package let fingerprint: String

    package var name: String { configuration.jobName }

    /// Every provider, in the order ``PreparedJob/providers`` lists them.
    var providers: [RegisteredProvider] {
        [typeProvider, strategyProvider, executorProvider, handlerProvider] + listenerProviders
    }

    /// The plugin files the job's providers come from, each once.
    package var pluginFiles: [String] {
        var seen = Set<String>()
        return providers.map(\.plugin.path).filter { seen.insert($0).inserted }
    }
}

/// Checks jobs against the loaded plugins and prepares them. Everything a job needs is checked
/// here, before any job is registered or fired: the cron expression and time zone, every provider
/// name, and every provider's properties (each provider makes its instance for the job now).
///
/// In two steps: ``plan(_:providers:workerExecutable:locate:file:)`` checks what needs no plugin
/// code to run, and ``instantiate(_:processorCount:locate:file:)`` makes the providers' instances,
/// which runs plugin code; a host tries that second step in a separate process first
/// (``JobTrials``).
package enum JobCatalog {
    package static func prepare(
        _ configuration: HostConfiguration, providers: ProviderRegistry,
        processorCount: Int = ProcessInfo.processInfo.activeProcessorCount, workerExecutable: String? = nil
    ) throws(HostConfigurationError) -> [PreparedJob] {
        var prepared: [PreparedJob] = []
        for (index, job) in configuration.jobs.enumerated() {
            let locate = locator(configuration, index: index)
            let plan = try plan(job, providers: providers, workerExecutable: workerExecutable, locate: locate, file: configuration.file)
            prepared.append(try instantiate(plan, processorCount: processorCount, locate: locate, file: configuration.file))
        }
        return prepared
    }

    package static func prepare(
        _ job: JobConfiguration, providers: ProviderRegistry, processorCount: Int, workerExecutable: String? = nil,
        locate: (String) -> FilePosition? = { _ in nil }, file: String? = nil
    ) throws(HostConfigurationError) -> PreparedJob {
        let plan = try plan(job, providers: providers, workerExecutable: workerExecutable, locate: locate, file: file)
        return try instantiate(plan, processorCount: processorCount, locate: locate, file: file)
    }

    /// Where the fields of the `index`-th job of a host's file were written.
    static func locator(_ configuration: HostConfiguration, index: Int) -> @Sendable (String) -> FilePosition? {
        { field in configuration.locations["jobs[\(index)].\(field)"] ?? configuration.locations["jobs[\(index)].jobName"] }
    }

    static func failure(
        _ job: JobConfiguration, _ field: String, _ message: String, locate: (String) -> FilePosition?, file: String?
    ) -> HostConfigurationError {
        let base = field.split(separator: ".").first.map(String.init) ?? field
        return HostConfigurationError(file: file, location: locate(base), job: job.jobName, field: field, message: message)
    }

    /// Checks `job` by everything that runs no plugin code: its limits, schedule, item parameters,
    /// properties the host reads and the providers its names resolve to.
    package static func plan(
        _ job: JobConfiguration, providers: ProviderRegistry, workerExecutable: String? = nil,
        locate: (String) -> FilePosition? = { _ in nil }, file: String? = nil
    ) throws(HostConfigurationError) -> JobPlan {
        func failure(_ field: String, _ message: String) -> HostConfigurationError {
            JobCatalog.failure(job, field, message, locate: locate, file: file)
        }
        func resolve(_ kind: ProviderKind, _ name: String?, field: String) throws(HostConfigurationError) -> RegisteredProvider {
            do {
                return try providers.resolve(kind, name)
            } catch {
                throw failure(field, error.description)
            }
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
        let typeProvider = try resolve(.jobType, job.jobType, field: "jobType")
        let strategyProvider = try resolve(.shardingStrategy, job.jobShardingStrategyType, field: "jobShardingStrategyType")
        let executorProvider = try resolve(.executorStrategy, job.jobExecutorThreadPoolSizeProviderType, field: "jobExecutorThreadPoolSizeProviderType")
        let handlerProvider = try resolve(.errorHandler, job.jobErrorHandlerType, field: "jobErrorHandlerType")
        var listenerProviders: [RegisteredProvider] = []
        for name in job.jobListenerTypes {
            listenerProviders.append(try resolve(.jobListener, name, field: "jobListenerTypes"))
        }
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
        let providers = [typeProvider, strategyProvider, executorProvider, handlerProvider] + listenerProviders
        var identity = "\(job.jobType)\n\(ElasticJobYAML.encode(job))"
        for provider in providers {
            identity += "\n\(provider.kind) \(provider.name) \(provider.plugin.sha256 ?? provider.plugin.path)"
        }
        let fingerprint = String(PluginDigest.sha256(Array(identity.utf8)).prefix(32))
        return JobPlan(
            configuration: job, schedule: schedule, itemParameters: itemParameters, typeProvider: typeProvider,
            strategyProvider: strategyProvider, executorProvider: executorProvider, handlerProvider: handlerProvider,
            listenerProviders: listenerProviders, itemTimeoutSeconds: timeout, streaming: streaming, isolation: isolation,
            fingerprint: fingerprint)
    }

    /// Makes the providers' instances for a planned job: plugin code runs here, each call under the
    /// job's crash context. With `allProviders`, the job type of an isolated job is made too (a
    /// trial tries every provider; a host leaves that one to the job's worker process).
    package static func instantiate(
        _ plan: JobPlan, processorCount: Int, allProviders: Bool = false,
        locate: (String) -> FilePosition? = { _ in nil }, file: String? = nil
    ) throws(HostConfigurationError) -> PreparedJob {
        let job = plan.configuration
        func failure(_ field: String, _ message: String) -> HostConfigurationError {
            JobCatalog.failure(job, field, message, locate: locate, file: file)
        }
        // A plugin's words, escaped and bounded: the error is one line, wherever it is shown.
        func refused(_ error: ProviderCallError, field: String) -> HostConfigurationError {
            if let property = error.field {
                return failure("props.\(LogText.escaped(property, limit: 200))", "\(LogText.escaped(error.message)) (checked by \(error.provider))")
            }
            return failure(field, LogText.escaped(error.description))
        }
        let setup = { (provider: String) in
            ProviderSetup(jobName: job.jobName, providerName: provider, properties: job.props)
        }
        let context = CrashContext(job: job.jobName, fingerprint: plan.fingerprint)

        var jobType: JobTypeInstance?
        let strategy: ShardingStrategyInstance
        let threadCount: Int
        let handler: ErrorHandlerInstance
        var listeners: [(order: Int, index: Int, listener: JobListenerInstance)] = []
        if plan.isolation == nil || allProviders {
            do {
                jobType = try JobTypeInstance(plan.typeProvider, setup: setup(job.jobType), crashContext: context)
            } catch {
                throw refused(error, field: "jobType")
            }
        }
        do {
            strategy = try ShardingStrategyInstance(
                plan.strategyProvider, setup: setup(job.jobShardingStrategyType ?? plan.strategyProvider.name), crashContext: context)
        } catch {
            throw refused(error, field: "jobShardingStrategyType")
        }
        do {
            let executor = try ExecutorStrategyInstance(
                plan.executorProvider, setup: setup(job.jobExecutorThreadPoolSizeProviderType ?? plan.executorProvider.name),
                crashContext: context)
            threadCount = try executor.threadCount(processorCount: processorCount)
        } catch {
            throw refused(error, field: "jobExecutorThreadPoolSizeProviderType")
        }
        do {
            handler = try ErrorHandlerInstance(
                plan.handlerProvider, setup: setup(job.jobErrorHandlerType ?? plan.handlerProvider.name), crashContext: context)
        } catch {
            throw refused(error, field: "jobErrorHandlerType")
        }
        for (index, provider) in plan.listenerProviders.enumerated() {
            do {
                let listener = try JobListenerInstance(provider, setup: setup(job.jobListenerTypes[index]), crashContext: context)
                listeners.append((listener.order, index, listener))
            } catch {
                throw refused(error, field: "jobListenerTypes")
            }
        }
        listeners.sort { ($0.order, $0.index) < ($1.order, $1.index) }
        return PreparedJob(
            configuration: job, schedule: plan.schedule, jobType: jobType, shardingStrategy: strategy,
            threadCount: threadCount, errorHandler: handler, listeners: listeners.map(\.listener),
            itemParameters: plan.itemParameters, itemTimeoutSeconds: plan.itemTimeoutSeconds, streamingProcess: plan.streaming,
            isolation: plan.isolation, providers: plan.providers, crashContext: context)
    }
}
