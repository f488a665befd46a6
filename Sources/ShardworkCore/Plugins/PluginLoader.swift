import CShardworkPlugin
public import Logging
import ShardworkSDK

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A plugin whose checks all passed: its metadata and its providers' C tables.
public struct LoadedPlugin: Sendable {
    public internal(set) var info: PluginInfo
    let providers: [PluginABI.ProviderRecord]
}

/// Who a plugin is and where it came from.
public struct PluginInfo: Sendable, Codable, Equatable, Hashable {
    public var name: String
    public var version: String
    /// `c`, or the Swift toolchain that built it.
    public var toolchain: String
    public var sdkVersion: String?
    /// The file as found (in a plugin directory or as given).
    public var file: String
    /// The canonical path that was loaded.
    public var path: String
    /// SHA-256 of the bytes the loader checked, in hexadecimal.
    public var sha256: String? = nil
    /// 1 for the first version of a plugin loaded into this process; each hot-load of a new version
    /// makes the next (see ``ProviderRegistry``).
    public var generation: Int = 1
}

/// Where the loader looks for plugins.
///
/// The rule: the built-in directory (the one holding the `shardwork` binary) first, then each
/// configured directory in order. In each directory, the regular files named `*.so` (symbolic
/// links followed, subdirectories not searched) are taken in name order, and each one's ELF
/// dynamic symbol table is read from the file, without loading it. A file that defines
/// `shardwork_plugin_entry` is a plugin and is loaded; one that does not is a library (for example
/// a plugin's own dependency, or `libShardworkSDK.so`) and is left alone. Explicitly listed files
/// are always treated as plugins, so a file without the entry is refused with that reason.
public struct PluginSearchPath: Sendable, Equatable {
    public var directories: [String]
    public var files: [String]
    public var includeBuiltIn: Bool

    public init(directories: [String] = [], files: [String] = [], includeBuiltIn: Bool = true) {
        self.directories = directories
        self.files = files
        self.includeBuiltIn = includeBuiltIn
    }

    /// The directory of the running executable, where the built-in plugins are installed beside it.
    public static var builtInDirectory: String? {
        PluginFile.realPath("/proc/self/exe").map(PluginFile.directory(of:))
    }
}

/// What ``PluginLoader/loadAll(_:into:)`` did.
public struct PluginLoadReport: Sendable {
    public var loaded: [PluginInfo] = []
    public var refused: [PluginRefusal] = []
    /// Configured directories that could not be searched (missing, unreadable).
    public var unusableDirectories: [String] = []
}

/// Finds, checks and loads plugins. A refused plugin is reported and skipped; it never stops the
/// others from loading.
public struct PluginLoader: Sendable {
    public var logger: Logger
    /// When set, every plugin is first loaded in a separate process, so that one that crashes while
    /// loading is refused instead of taking the host down.
    public var preflight: PluginPreflight?

    public init(logger: Logger, preflight: PluginPreflight? = nil) {
        self.logger = logger
        self.preflight = preflight
    }

    // MARK: Discovery

    /// A file to try: found in a plugin directory, or listed explicitly.
    public struct Candidate: Sendable, Equatable {
        public var file: String
        /// Files found in a directory that turn out not to define the entry are libraries, not
        /// plugins, and are left alone; a listed file without the entry is refused.
        public var foundInDirectory: Bool
    }

    /// The candidate files of `searchPath`, in load order, and the configured directories that
    /// could not be read.
    public func discover(_ searchPath: PluginSearchPath) -> (candidates: [Candidate], unusableDirectories: [String]) {
        var directories: [String] = []
        if searchPath.includeBuiltIn, let builtIn = PluginSearchPath.builtInDirectory { directories.append(builtIn) }
        directories += searchPath.directories
        var candidates: [Candidate] = []
        var unusable: [String] = []
        var seen = Set<String>()
        for directory in directories {
            guard let entries = Self.listDirectory(directory) else {
                if searchPath.directories.contains(directory) {
                    unusable.append("\(directory): \(PluginFile.errorText())")
                }
                continue
            }
            for entry in entries.sorted() where entry.hasSuffix(".so") {
                let file = directory.hasSuffix("/") ? directory + entry : directory + "/" + entry
                guard let real = PluginFile.realPath(file), seen.insert(real).inserted else { continue }
                candidates.append(Candidate(file: file, foundInDirectory: true))
            }
        }
        for file in searchPath.files {
            if let real = PluginFile.realPath(file), !seen.insert(real).inserted { continue }
            candidates.append(Candidate(file: file, foundInDirectory: false))
        }
        return (candidates, unusable)
    }

    static func listDirectory(_ path: String) -> [String]? {
        guard let stream = opendir(path) else { return nil }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Discovers, checks, loads and registers every plugin of `searchPath`.
    public func loadAll(_ searchPath: PluginSearchPath, into registry: ProviderRegistry) -> PluginLoadReport {
        var report = PluginLoadReport()
        let (candidates, unusable) = discover(searchPath)
        report.unusableDirectories = unusable
        for problem in unusable {
            logger.error("cannot search a plugin directory", metadata: ["problem": "\(LogText.escaped(problem))"])
        }
        for candidate in candidates {
            let file = candidate.file
            let (inspection, loaded) = inspect(file)
            if candidate.foundInDirectory, inspection.isLibraryWithoutEntry {
                logger.debug(
                    "not a plugin (no entry symbol), left alone",
                    metadata: ["file": "\(LogText.escaped(file))", "symbol": "\(PluginABI.entrySymbol)"])
                continue
            }
            guard let plugin = loaded else {
                let refusal = PluginRefusal(file: file, reasons: inspection.reasons, inspection: inspection)
                report.refused.append(refusal)
                logRefusal(refusal)
                continue
            }
            do {
                try registry.register(plugin)
                report.loaded.append(plugin.info)
                logger.debug("loaded a plugin", metadata: [
                    "file": "\(LogText.escaped(file))", "plugin": "\(LogText.escaped(plugin.info.name))",
                    "version": "\(LogText.escaped(plugin.info.version))",
                    "providers": "\(plugin.providers.count)",
                ])
            } catch {
                report.refused.append(error)
                logRefusal(error)
            }
        }
        return report
    }

    /// A refused plugin's line: the file and the reasons, which may quote the file, as data.
    private func logRefusal(_ refusal: PluginRefusal) {
        logger.error("refused a plugin", metadata: [
            "file": "\(LogText.escaped(refusal.file))", "reasons": "\(LogText.escaped(refusal.reasons.joined(separator: "; ")))",
        ])
    }

    // MARK: Loading one file

    /// Checks and loads one file without registering it.
    public func load(_ file: String) -> Result<LoadedPlugin, PluginRefusal> {
        let (inspection, plugin) = inspect(file)
        if let plugin { return .success(plugin) }
        return .failure(PluginRefusal(file: file, reasons: inspection.reasons, inspection: inspection))
    }

    /// Runs every check on `file`, loading it when the checks that come before loading pass. With a
    /// preflight, the loading checks run in a separate process first.
    public func inspect(_ file: String) -> (PluginInspection, LoadedPlugin?) {
        let (inspection, plugin, _) = inspectReportingMapping(file)
        return (inspection, plugin)
    }

    /// ``inspect(_:)``, and whether this process mapped the file (it stays mapped even when a later
    /// check refuses it: images are never unloaded).
    func inspectReportingMapping(_ file: String) -> (PluginInspection, LoadedPlugin?, mapped: Bool) {
        var inspection = PluginInspection(file: file)
        guard let (real, sha256) = checkFile(file, &inspection) else { return (inspection, nil, false) }
        if let preflight {
            let trial = preflight.inspect(real, checked: inspection)
            guard trial.accepted else { return (trial, nil, false) }
        }
        let (checked, plugin) = loadChecked(file: file, real: real, sha256: sha256, inspection)
        return (checked, plugin, checked.checks.contains { $0.id == "load" && $0.status == .passed })
    }

    /// The checks made on the file itself: existence, permissions, ELF shape, entry symbol.
    /// Returns the canonical path and the SHA-256 of the bytes checked when they pass.
    func checkFile(_ file: String, _ inspection: inout PluginInspection) -> (real: String, sha256: String)? {
        guard let real = PluginFile.realPath(file) else {
            inspection.fail("file", ["\(file) does not exist or cannot be reached: \(PluginFile.errorText())"])
            return nil
        }
        let bytes: [UInt8]
        switch PluginFile.read(real) {
        case .success(let read): bytes = read
        case .failure(let problem):
            inspection.fail("file", [problem.description])
            return nil
        }
        inspection.pass("file", real == file ? [] : ["resolves to \(real)"])

        var directories = [PluginFile.directory(of: real)]
        if PluginFile.directory(of: file) != directories[0], let given = PluginFile.realPath(PluginFile.directory(of: file)) {
            directories.append(given)
        }
        let security = PluginFile.securityProblems(file: real, directories: directories)
        guard security.isEmpty else {
            inspection.fail("permissions", security)
            return nil
        }
        inspection.pass("permissions")

        let image: ELFImage
        do {
            image = try ELFImage(bytes: bytes)
        } catch {
            inspection.fail("elf", [error.description])
            return nil
        }
        inspection.pass("elf", ["ELF 64-bit shared object for \(ELFImage.machineName(ELFImage.hostMachine))"])

        guard image.defines(PluginABI.entrySymbol) else {
            inspection.fail("entry-symbol", [
                "not a Shardwork plugin: it does not define \(PluginABI.entrySymbol) "
                    + "(a Swift plugin exports it with @c(\(PluginABI.entrySymbol)), a C plugin with SHARDWORK_EXPORT)",
            ])
            return nil
        }
        inspection.pass("entry-symbol")
        return (real, PluginDigest.sha256(bytes))
    }

    private func loadChecked(file: String, real: String, sha256: String, _ checked: PluginInspection) -> (PluginInspection, LoadedPlugin?) {
        var inspection = checked
        // RTLD_NODELETE: Swift images must never be unmapped (the runtime keeps their metadata).
        dlerror()
        guard let handle = dlopen(real, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            inspection.fail("load", ["dlopen failed: \(reason)"])
            return (inspection, nil)
        }
        guard let symbol = dlsym(handle, PluginABI.entrySymbol) else {
            inspection.fail("load", ["\(PluginABI.entrySymbol) could not be resolved after loading"])
            return (inspection, nil)
        }
        inspection.pass("load")

        let entry = unsafeBitCast(symbol, to: shardwork_plugin_entry_fn.self)
        let host = PluginHostAPI.make(logger: logger, file: file)
        guard let raw = entry(host) else {
            inspection.fail("descriptor", ["the entry returned NULL: the plugin could not initialise (see its log)"])
            return (inspection, nil)
        }
        inspection.pass("descriptor")

        guard let providers = PluginABI.check(descriptor: UnsafeRawPointer(raw), into: &inspection),
              let descriptor = inspection.descriptor
        else {
            return (inspection, nil)
        }
        let info = PluginInfo(
            name: descriptor.name ?? "", version: descriptor.version ?? "", toolchain: descriptor.toolchain ?? "",
            sdkVersion: descriptor.sdkVersion, file: file, path: real, sha256: sha256)
        return (inspection, LoadedPlugin(info: info, providers: providers))
    }
}

/// The services the host gives each plugin's entry. Each plugin gets its own table, so its log
/// lines carry its file; tables live as long as the process, as the header promises.
enum PluginHostAPI {
    private final class LogSink: Sendable {
        let logger: Logger
        init(logger: Logger) { self.logger = logger }
    }

    static func make(logger: Logger, file: String) -> UnsafePointer<shardwork_host_api> {
        var pluginLogger = logger
        pluginLogger[metadataKey: "plugin"] = "\(PluginFile.fileName(of: file))"
        let sink = Unmanaged.passRetained(LogSink(logger: pluginLogger)).toOpaque()
        let api = UnsafeMutablePointer<shardwork_host_api>.allocate(capacity: 1)
        api.initialize(to: shardwork_host_api(
            struct_size: UInt32(MemoryLayout<shardwork_host_api>.size),
            abi_major: PluginABI.major,
            abi_minor: PluginABI.minor,
            host_context: sink,
            log: { context, level, message in
                guard let context else { return }
                let sink = Unmanaged<LogSink>.fromOpaque(context).takeUnretainedValue()
                let logLevel = Logger.Level(pluginLevel: level)
                guard sink.logger.logLevel <= logLevel else { return }
                sink.logger.log(level: logLevel, "\(LogText.escaped(cString: message))")
            }
        ))
        return UnsafePointer(api)
    }
}

extension Logger.Level {
    /// A plugin's log level (`SHARDWORK_LOG_*`), clamped: at most `error`. `critical` says the
    /// host itself is in danger, which only the host can say; a level the header does not define
    /// (99, say) counts as an error.
    init(pluginLevel: Int32) {
        switch pluginLevel {
        case ...0: self = .trace
        case 1: self = .debug
        case 2: self = .info
        case 3: self = .notice
        case 4: self = .warning
        default: self = .error
        }
    }
}
