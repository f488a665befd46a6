// `timespec` and `stat`: a release build finds them through the support module's header.
import CShardworkSupport
import Foundation
import Logging
import ShardworkSDK
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Hot-loads of new plugin versions into a running host, from a file, an upload through the control
/// API, or the watched directory: how to check a file, where to copy it, how many images were
/// mapped, and the watched directory's task.
final class PluginHotLoading: Sendable {
    let context: HostContext
    /// What a generation that took effect may change: jobs this host could not run are looked at
    /// again.
    let onLoaded: @Sendable () async -> Void
    let loader: PluginLoader
    let cache: PluginCache
    let maxGenerations: Int
    let watchDirectory: String?
    let watchInterval: Duration

    struct Ledger {
        /// Images mapped by hot-loads, refused ones included: they are never unmapped.
        var imagesMapped = 0
        /// Loaded images that were not registered (their jobs refused them, a name conflicted), by
        /// SHA-256: the same content again is checked again without another dlopen.
        var unregistered: [String: LoadedPlugin] = [:]
        /// Mapped images that the loader's checks refused, by SHA-256: the same content again gets
        /// the same answer without mapping anything.
        var refused: [String: PluginHotLoadError] = [:]
    }

    /// Held for the whole of a hot-load, on that hot-load's own thread: one runs at a time.
    let ledger = Mutex(Ledger())

    init(context: HostContext, loader: PluginLoader, onLoaded: @escaping @Sendable () async -> Void) {
        let settings = context.configuration.plugins
        self.context = context
        self.onLoaded = onLoaded
        self.loader = loader
        cache = PluginCache(directory: settings.cacheDirectory ?? PluginSettings.defaultCacheDirectory)
        maxGenerations = settings.maxGenerations
        watchDirectory = settings.watchDirectory
        watchInterval = .milliseconds(Int64((settings.watchIntervalSeconds * 1000).rounded()))
    }

    /// Removes, off the caller's thread, the cache's copies that no running host maps any more
    /// (see ``PluginCache/removeUnused(minimumAge:)``): a host cleans up after those that ran before.
    func cleanCache(logger: Logger) {
        let cache = self.cache
        DispatchQueue.global(qos: .utility).async {
            let removed = cache.removeUnused()
            guard !removed.isEmpty else { return }
            logger.info(
                "plugins: removed copies that no running host uses from the plugin cache",
                metadata: ["copies": "\(removed.count)", "directory": "\(cache.directory)"])
        }
    }

    /// The loader a host uses when it is given none: the configuration's preflight setting, through
    /// the `shardwork` binary when the host has one.
    static func defaultLoader(_ settings: PluginSettings, logger: Logger, workerExecutable: String?) -> PluginLoader {
        let timeout = Duration.milliseconds(Int64((settings.preflightTimeoutSeconds * 1000).rounded()))
        let preflight = settings.preflight ? workerExecutable.map { PluginPreflight.shardwork(executable: $0, timeout: timeout) } : nil
        return PluginLoader(logger: logger, preflight: preflight)
    }

    var logger: Logger { context.logger }
    var providers: ProviderRegistry { context.providers }
    var runtimes: [String: JobRuntime] { context.runtimes }
    var services: HostServices { context.services }

    /// Loads a new version of a plugin (or a new plugin) into the running host, as a new generation.
    ///
    /// The file is copied to the plugin cache under a name made of its content's SHA-256 and
    /// checked there like any plugin (with the preflight process when the host uses one). Every
    /// job that uses a provider of the plugin is then prepared again against the registry as it
    /// would be; only when all of them prepare is the generation registered and each of those jobs
    /// switched, from its next fire. Items already running finish on the old generation, whose
    /// image stays loaded; the timer is not touched, so no fire is missed or doubled.
    ///
    /// Otherwise nothing changes and the error gives every reason. The same content as the
    /// current generation answers `alreadyLoaded`. The blocking work runs on a thread of its own.
    ///
    /// A new generation may give this host a provider it lacked: the jobs it could not run are
    /// looked at again (capability-aware sharding, docs/operations.md).
    ///
    /// `label` is how answers and the generation list name the file, when that is not its path
    /// (an upload through the control API, kept in a staging directory only for the load).
    func loadPlugin(file: String, label: String? = nil) async -> Result<PluginLoadOutcome, PluginHotLoadError> {
        let result = await withCheckedContinuation { continuation in
            Thread.detachNewThread { [self] in
                continuation.resume(returning: hotLoad(file, label: label ?? file))
            }
        }
        if case .success(let outcome) = result, !outcome.alreadyLoaded {
            await onLoaded()
        }
        cleanCache(logger: logger)
        return result
    }

    /// Every generation of every plugin, in load order, with the jobs that use it now.
    func pluginGenerations() -> [PluginGenerationStatus] {
        var users: [String: Set<String>] = [:]
        for runtime in runtimes.values {
            for provider in runtime.job.providers {
                users[Self.generationKey(provider.plugin), default: []].insert(runtime.name)
            }
        }
        return providers.generations.map { generation in
            let info = generation.info
            return PluginGenerationStatus(
                name: info.name, version: info.version, generation: info.generation, file: info.file, path: info.path,
                sha256: info.sha256, toolchain: info.toolchain, loadedAt: generation.loadedAt,
                state: generation.isCurrent ? .current : .superseded, supersededAt: generation.supersededAt,
                providers: generation.providers.map {
                    .init(kind: $0.kind.description.replacingOccurrences(of: " ", with: "-"), name: $0.name, aliases: $0.aliases)
                },
                jobs: (users[Self.generationKey(info)] ?? []).sorted())
        }
    }

    private static func generationKey(_ info: PluginInfo) -> String {
        "\(info.name.lowercased())#\(info.generation)"
    }

    /// The whole hot-load, on the calling (non-cooperative) thread, logged.
    private func hotLoad(_ file: String, label: String) -> Result<PluginLoadOutcome, PluginHotLoadError> {
        let result: Result<PluginLoadOutcome, PluginHotLoadError>
        if context.isStopped {
            result = .failure(PluginHotLoadError(
                code: .hostStopped, file: label, reasons: [.init(message: "the host has stopped")]))
        } else {
            result = ledger.withLock { ledger in hotLoad(file, label: label, &ledger) }
        }
        switch result {
        case .success(let outcome) where outcome.alreadyLoaded:
            logger.info("plugins: this content is loaded already; nothing changed", metadata: outcome.logMetadata)
        case .success(let outcome):
            services.events.publish(.pluginLoaded(
                name: outcome.plugin, version: outcome.version, generation: outcome.generation, file: outcome.file))
            logger.notice("plugins: loaded a new generation", metadata: outcome.logMetadata)
        case .failure(let error):
            services.events.publish(.pluginRefused(file: label, reason: "\(error)"))
            logger.error("plugins: a file was not loaded; nothing changed", metadata: error.logMetadata)
        }
        return result
    }

    private func hotLoad(
        _ file: String, label: String, _ ledger: inout Ledger
    ) -> Result<PluginLoadOutcome, PluginHotLoadError> {
        func refusal(_ code: PluginHotLoadError.Code, _ reasons: [PluginHotLoadError.Reason], plugin: PluginInfo? = nil,
                     inspection: PluginInspection? = nil) -> Result<PluginLoadOutcome, PluginHotLoadError> {
            .failure(PluginHotLoadError(
                code: code, file: label, plugin: plugin?.name, version: plugin?.version, reasons: reasons, inspection: inspection))
        }

        // The bytes that are hashed are the bytes that are copied: what is checked is what loads.
        guard let real = PluginFile.realPath(file) else {
            return refusal(.pluginRefused, [.init(message: "\(label) does not exist or cannot be reached: \(PluginFile.errorText())")])
        }
        let bytes: [UInt8]
        switch PluginFile.read(real) {
        case .success(let read): bytes = read
        case .failure(let problem): return refusal(.pluginRefused, [.init(message: problem.description)])
        }
        // The copy in the cache is the host's own; the file it came from must not be anyone else's.
        let security = PluginFile.securityProblems(file: real, directories: [PluginFile.directory(of: real)])
        guard security.isEmpty else { return refusal(.pluginRefused, security.map { .init(message: $0) }) }
        let sha256 = PluginDigest.sha256(bytes)

        var plugin: LoadedPlugin
        if let known = providers.generations.last(where: { $0.info.sha256 == sha256 }) {
            if known.isCurrent {
                return .success(PluginLoadOutcome(
                    plugin: known.info.name, version: known.info.version, generation: known.info.generation, file: label,
                    cachePath: known.info.path, sha256: sha256, alreadyLoaded: true, superseded: nil, jobsSwitched: []))
            }
            // A superseded generation's content again (a roll-back): its image serves once more.
            plugin = known.plugin
        } else if let unregistered = ledger.unregistered[sha256] {
            plugin = unregistered
        } else if let refused = ledger.refused[sha256] {
            var again = refused
            again.file = label
            return .failure(again)
        } else {
            guard ledger.imagesMapped < maxGenerations else {
                return refusal(.generationLimit, [.init(message:
                    "this host has loaded \(ledger.imagesMapped) plugin images by hot-loads, its limit (plugins.maxGenerations); "
                        + "loaded images are never unloaded, so restart the host to reclaim their memory, then load the plugin again")])
            }
            let cached: String
            do {
                cached = try cache.store(bytes, of: file, sha256: sha256)
            } catch {
                return refusal(.cacheFailed, [.init(message: error.description)])
            }
            let (inspection, loaded, mapped) = loader.inspectReportingMapping(cached)
            if mapped { ledger.imagesMapped += 1 }
            guard let loaded else {
                var checked = inspection
                checked.file = label
                let descriptor = inspection.descriptor
                let error = PluginHotLoadError(
                    code: .pluginRefused, file: label, plugin: descriptor?.name, version: descriptor?.version,
                    reasons: inspection.reasons.map { .init(message: $0) }, inspection: checked)
                if mapped { ledger.refused[sha256] = error }
                return .failure(error)
            }
            plugin = loaded
        }
        plugin.info.file = label

        let proposal: PluginGenerationProposal
        do {
            proposal = try providers.propose(plugin)
        } catch {
            ledger.unregistered[sha256] = plugin
            return refusal(.nameConflict, error.reasons.map { .init(message: $0) }, plugin: plugin.info)
        }

        // Every job that uses the plugin, prepared against the registry as it would be.
        let key = plugin.info.name.lowercased()
        let affected = runtimes.values
            .filter { runtime in runtime.job.providers.contains { $0.plugin.name.lowercased() == key } }
            .sorted { $0.name < $1.name }
        var prepared: [(runtime: JobRuntime, job: PreparedJob)] = []
        var reasons: [PluginHotLoadError.Reason] = []
        // Tried in a separate process against the new version first (one process for them all), so
        // that a version whose providers crash refuses the hot-load instead of ending the host.
        let outcomes = context.preparation.prepare(affected.map { JobPreparation.Request(job: $0.job.configuration) }, in: proposal.registry)
        for (runtime, outcome) in zip(affected, outcomes) {
            switch outcome {
            case .prepared(let job?):
                prepared.append((runtime, job))
            case .prepared(nil):
                reasons.append(.init(job: runtime.name, message: "it was not prepared"))
            case .refused(let error):
                var message = error.message
                if message.hasPrefix("unknown ") {
                    message = "\(plugin.info.name) \(plugin.info.version) no longer offers what the job uses: " + message
                }
                reasons.append(.init(job: error.job ?? runtime.name, field: error.field, message: message))
            case .setAside(let reason):
                reasons.append(.init(job: runtime.name, message: reason))
            }
        }
        guard reasons.isEmpty else {
            ledger.unregistered[sha256] = plugin
            return refusal(.jobsRefused, reasons, plugin: plugin.info)
        }

        do {
            try providers.adopt(proposal)
        } catch {
            ledger.unregistered[sha256] = plugin
            return refusal(.nameConflict, error.reasons.map { .init(message: $0) }, plugin: plugin.info)
        }
        ledger.unregistered[sha256] = nil
        for (runtime, job) in prepared {
            runtime.replace(with: job)
        }
        let info = proposal.info
        return .success(PluginLoadOutcome(
            plugin: info.name, version: info.version, generation: info.generation, file: label, cachePath: info.path,
            sha256: sha256, alreadyLoaded: false, superseded: proposal.superseding?.generation,
            jobsSwitched: prepared.map(\.runtime.name)))
    }

    /// Writes an uploaded plugin file where ``loadPlugin(file:label:)`` can take it: a private
    /// directory beside the plugin cache. The caller removes it after the load (the cache keeps its
    /// own copy).
    func stageUpload(bytes: [UInt8], name: String) throws -> String {
        let uploads = cache.directory + "/uploads"
        try FileManager.default.createDirectory(atPath: uploads, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let directory = uploads + "/" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o755]) else {
            throw HostConfigurationError(file: nil, location: nil, job: nil, field: "plugin", message: "cannot write the upload to \(path)")
        }
        return path
    }

    // MARK: The watched directory

    /// A file's size and modification time: a file being written changes them between polls.
    private struct Stamp: Equatable {
        var size: Int64
        var seconds: Int
        var nanoseconds: Int
    }

    /// Polls `plugins.watchDirectory`, as a task of the host's background, until the host stops: a
    /// `*.so` that is new or changed, and whose size and modification time held across two polls,
    /// is hot-loaded once.
    func startWatching() {
        guard let directory = watchDirectory else { return }
        let interval = watchInterval
        logger.info("plugins: watching a directory for new plugin versions", metadata: ["directory": "\(directory)", "interval": "\(interval)"])
        context.background.spawn("plugin directory watcher") { [self] in
            var previous: [String: Stamp] = [:]
            var handled: [String: Stamp] = [:]
            var reportedMissing = false
            while !Task.isCancelled, !context.isStopped {
                guard let current = Self.scan(directory) else {
                    if !reportedMissing {
                        logger.warning(
                            "plugins: cannot read the watched directory",
                            metadata: ["directory": "\(directory)", "error": "\(PluginFile.errorText())"])
                        reportedMissing = true
                    }
                    try? await Task.sleep(for: interval)
                    continue
                }
                reportedMissing = false
                for (file, stamp) in current.sorted(by: { $0.key < $1.key })
                where previous[file] == stamp && handled[file] != stamp {
                    handled[file] = stamp
                    logger.info("plugins: a file in the watched directory is new or changed; loading it", metadata: ["file": "\(file)"])
                    // The outcome or the refusal is logged by the hot-load itself.
                    _ = await loadPlugin(file: file)
                }
                handled = handled.filter { current[$0.key] != nil }
                previous = current
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// The regular `*.so` files of `directory` (hidden ones skipped) and their stamps.
    private static func scan(_ directory: String) -> [String: Stamp]? {
        guard let names = PluginLoader.listDirectory(directory) else { return nil }
        var stamps: [String: Stamp] = [:]
        for name in names where name.hasSuffix(".so") && !name.hasPrefix(".") {
            let file = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            var info = stat()
            guard stat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            stamps[file] = Stamp(size: Int64(info.st_size), seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec)
        }
        return stamps
    }
}

extension PluginLoadOutcome {
    /// The outcome as log metadata. The file may be an upload's name and the plugin's name and
    /// version are the file's own: outside text, escaped.
    var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "plugin": "\(LogText.escaped(plugin))", "version": "\(LogText.escaped(version))", "generation": "\(generation)",
            "file": "\(LogText.escaped(file))", "cache.path": "\(cachePath)",
        ]
        if alreadyLoaded { return metadata }
        if let superseded { metadata["superseded"] = "\(superseded)" }
        // The jobs that use the new generation from their next fire (none: empty).
        metadata["jobs"] = "\(jobsSwitched.joined(separator: ","))"
        return metadata
    }
}

extension PluginHotLoadError {
    /// The refusal as log metadata: its code, the file, the plugin when it got that far, and every
    /// reason (each naming its job and field when it is a job's), escaped.
    var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "code": "\(code.rawValue)", "file": "\(LogText.escaped(file))",
            "reasons": "\(LogText.escaped(reasons.map(\.description).joined(separator: "; ")))",
        ]
        if let plugin { metadata["plugin"] = "\(LogText.escaped(plugin))" }
        if let version { metadata["version"] = "\(LogText.escaped(version))" }
        return metadata
    }
}
