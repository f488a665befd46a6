public import Foundation

// MARK: What a hot-load answers

/// A hot-load that took effect, or found the same content already loaded.
public struct PluginLoadOutcome: Sendable, Codable, Equatable, CustomStringConvertible {
    public var plugin: String
    public var version: String
    /// The plugin's generation that serves it now.
    public var generation: Int
    /// The file as given.
    public var file: String
    /// The content-named copy that was loaded (for identical content: the path already loaded).
    public var cachePath: String
    public var sha256: String
    /// True when this content is the plugin's current generation already: nothing changed.
    public var alreadyLoaded: Bool
    /// The generation this one took over from, if the plugin was loaded before.
    public var superseded: Int?
    /// The jobs that use this generation from their next fire, by name.
    public var jobsSwitched: [String]

    public var description: String {
        if alreadyLoaded {
            return "plugin \(plugin) \(version) from \(file) is already loaded as generation \(generation) (\(cachePath)); nothing changed"
        }
        var text = "plugin \(plugin) \(version) loaded as generation \(generation) from \(file) (\(cachePath))"
        if let superseded { text += ", superseding generation \(superseded)" }
        return text + (jobsSwitched.isEmpty
            ? "; no job uses it"
            : "; jobs switched from their next fire: " + jobsSwitched.joined(separator: ", "))
    }
}

/// A hot-load that changed nothing: the running version (if any) stays in place. It carries every
/// reason, each naming the job and field when it is a job's.
public struct PluginHotLoadError: Error, Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, Equatable {
        /// The file failed the loader's checks (or could not be read).
        case pluginRefused = "plugin-refused"
        /// Another plugin offers one of its names.
        case nameConflict = "name-conflict"
        /// A job that uses the plugin would not run on the new version.
        case jobsRefused = "jobs-refused"
        /// `plugins.maxGenerations` images were loaded by hot-loads already.
        case generationLimit = "generation-limit"
        /// The file could not be copied into the plugin cache.
        case cacheFailed = "cache-failed"
        case hostStopped = "host-stopped"
    }

    public struct Reason: Sendable, Codable, Equatable, CustomStringConvertible {
        /// The job the reason is about, if it is a job's.
        public var job: String?
        /// The job's field (`jobType`, `props.acme.repeats`, ...).
        public var field: String?
        public var message: String

        public init(job: String? = nil, field: String? = nil, message: String) {
            self.job = job
            self.field = field
            self.message = message
        }

        public var description: String {
            var text = ""
            if let job { text += "job '\(job)': " }
            if let field, !field.isEmpty { text += "\(field): " }
            return text + message
        }
    }

    public var code: Code
    /// The file as given.
    public var file: String
    /// The plugin's name and version, when the file got far enough to tell them.
    public var plugin: String?
    public var version: String?
    public var reasons: [Reason]
    /// Every check of the loader, when they refused it.
    public var inspection: PluginInspection?

    public var description: String {
        var text = "plugin \(file)"
        if let plugin { text += " (\(plugin) \(version ?? ""))" }
        return text + " was not loaded; nothing changed: " + reasons.map(\.description).joined(separator: "; ")
    }
}

/// One generation of one plugin, as `pluginGenerations()` reports it.
public struct PluginGenerationStatus: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable, Equatable {
        /// Its providers answer to the plugin's names.
        case current
        /// A newer generation took over its names; running items may still use it.
        case superseded
    }

    public struct Provider: Sendable, Codable, Equatable {
        /// `job-type`, `sharding-strategy`, `executor-strategy`, `error-handler`, `job-listener`.
        public var kind: String
        public var name: String
        public var aliases: [String]
    }

    public var name: String
    public var version: String
    public var generation: Int
    /// The file as given (in a plugin directory, listed, or to a hot-load).
    public var file: String
    /// The path that was loaded (a plugin-cache copy for hot-loads).
    public var path: String
    public var sha256: String?
    public var toolchain: String
    public var loadedAt: Date
    public var state: State
    public var supersededAt: Date?
    public var providers: [Provider]
    /// The jobs whose current preparation uses a provider of this generation, by name.
    public var jobs: [String]
}
