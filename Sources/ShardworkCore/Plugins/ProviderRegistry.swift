public import Foundation
public import ShardworkSDK
import Synchronization

/// One provider of one loaded plugin.
public struct RegisteredProvider: Sendable {
    public let kind: ProviderKind
    public let name: String
    public let aliases: [String]
    public let plugin: PluginInfo
    let table: ProviderTable

    /// `name (ALIAS, ...)`, as messages list it.
    public var label: String {
        aliases.isEmpty ? name : "\(name) (\(aliases.joined(separator: ", ")))"
    }
}

/// A job's configuration names a provider that is not registered.
public struct ProviderLookupError: Error, Sendable, Equatable, CustomStringConvertible {
    public var kind: ProviderKind
    public var requested: String?
    /// The registered providers of that kind, as `name (ALIASES)`.
    public var registered: [String]
    public var suggestion: String?

    public var description: String {
        guard let requested else {
            return "no \(kind) is named and \(kind.plural) have no default; name one of: " + listed
        }
        var text = "unknown \(kind) '\(requested)'"
        if let suggestion { text += "; did you mean '\(suggestion)'?" }
        return text + (registered.isEmpty ? "; " + listed : "; registered \(kind.plural): " + listed)
    }

    private var listed: String {
        registered.isEmpty
            ? "no \(kind) is registered (load a plugin that provides one; `shardwork plugins list` shows what is loaded)"
            : registered.joined(separator: ", ")
    }
}

extension ProviderKind {
    /// `sharding strategies`, `job types`, ...
    public var plural: String {
        switch self {
        case .shardingStrategy: "sharding strategies"
        case .executorStrategy: "executor strategies"
        default: "\(self)s"
        }
    }
}

/// One generation of one plugin: the providers one loaded image offered under the plugin's names.
///
/// A hot-load of a new version makes a new generation, which takes over the plugin's names. The
/// superseded generation stays: its image is never unloaded, and jobs' running items keep using
/// its providers until they finish.
public struct PluginGeneration: Sendable {
    /// Its ``PluginInfo/generation`` numbers it among the plugin's generations.
    public let info: PluginInfo
    public let loadedAt: Date
    /// When a newer generation took over its names; `nil` while it is current.
    public internal(set) var supersededAt: Date?
    public let providers: [RegisteredProvider]
    /// What the loader made of its image, so that it can serve again without another dlopen.
    let plugin: LoadedPlugin

    public var isCurrent: Bool { supersededAt == nil }
}

/// A new generation checked against the registry but not yet registered (see
/// ``ProviderRegistry/propose(_:)``).
public struct PluginGenerationProposal: Sendable {
    /// The generation as it would be registered.
    public let info: PluginInfo
    /// The plugin's generation it would supersede, if any.
    public let superseding: PluginInfo?
    /// A detached registry that resolves names as the live one would once the proposal is
    /// adopted: prepare jobs against it to learn whether they would run.
    public let registry: ProviderRegistry
    fileprivate let state: ProviderRegistry.State
    fileprivate let baseRevision: Int
}

/// The SPI registry: `(kind, name)` to provider.
///
/// Names and aliases are matched without regard to case, so ElasticJob's type names
/// (`AVG_ALLOCATION`, `CPU`, `LOG`, ...) find the same providers as Shardwork's. A plugin is
/// registered whole or not at all: if any of its names is offered by another plugin, it is refused
/// and both files are named.
///
/// ``register(_:)`` refuses a plugin whose name is already loaded (two files of one plugin at
/// startup are a mistake). A hot-load instead goes through ``propose(_:)`` and ``adopt(_:)``: the
/// new version becomes the plugin's next generation, its providers take over the plugin's names,
/// and the superseded generation's providers stay alive and listed in ``generations``.
public final class ProviderRegistry: Sendable {
    /// The provider used when a job's configuration names none, as in ElasticJob.
    public static let defaultNames: [ProviderKind: String] = [
        .shardingStrategy: "average",
        .executorStrategy: "cpu",
        .errorHandler: "log",
    ]

    fileprivate struct State: Sendable {
        /// Every generation of every plugin, in load order.
        var generations: [PluginGeneration] = []
        /// The current generations' providers by name and alias (lowercased).
        var byName: [ProviderKind: [String: RegisteredProvider]] = [:]
        /// Counts changes, so that a proposal made before another change is not adopted over it.
        var revision = 0

        var currentProviders: [RegisteredProvider] {
            generations.filter(\.isCurrent).flatMap(\.providers)
        }

        /// The state with `plugin` registered; its generation is the next of its name (a name that
        /// is loaded is refused unless `asNewGeneration`).
        func adding(_ plugin: LoadedPlugin, asNewGeneration: Bool, at now: Date) throws(PluginRefusal) -> (State, PluginInfo) {
            let key = plugin.info.name.lowercased()
            let current = generations.lastIndex { $0.isCurrent && $0.info.name.lowercased() == key }
            var conflicts: [String] = []
            if let current, !asNewGeneration {
                let other = generations[current].info
                conflicts.append(
                    "a plugin named '\(other.name)' (version \(other.version)) is already loaded from \(other.file)")
            }
            for provider in plugin.providers {
                for name in [provider.name] + provider.aliases {
                    // The plugin's own current generation gives its names up to the new one.
                    if let owner = byName[provider.kind]?[name.lowercased()], owner.plugin.name.lowercased() != key {
                        conflicts.append(
                            "the \(provider.kind) name '\(name)' is already provided by '\(owner.name)' of plugin "
                                + "'\(owner.plugin.name)' (\(owner.plugin.file)); two plugins may not offer one name")
                    }
                }
            }
            guard conflicts.isEmpty else {
                throw PluginRefusal(file: plugin.info.file, reasons: conflicts)
            }
            var info = plugin.info
            info.generation = (generations.filter { $0.info.name.lowercased() == key }.map(\.info.generation).max() ?? 0) + 1
            var next = self
            if let current {
                next.generations[current].supersededAt = now
                for kind in next.byName.keys {
                    next.byName[kind] = next.byName[kind]?.filter { $0.value.plugin.name.lowercased() != key }
                }
            }
            let providers = plugin.providers.map { record in
                RegisteredProvider(kind: record.kind, name: record.name, aliases: record.aliases, plugin: info, table: record.table)
            }
            for provider in providers {
                for name in [provider.name] + provider.aliases {
                    next.byName[provider.kind, default: [:]][name.lowercased()] = provider
                }
            }
            var registered = plugin
            registered.info = info
            next.generations.append(PluginGeneration(info: info, loadedAt: now, supersededAt: nil, providers: providers, plugin: registered))
            next.revision += 1
            return (next, info)
        }
    }

    private let state: Mutex<State>

    public init() {
        state = Mutex(State())
    }

    private init(state: State) {
        self.state = Mutex(state)
    }

    /// Registers every provider of `plugin`, or none. A plugin of the same name must not be loaded.
    public func register(_ plugin: LoadedPlugin) throws(PluginRefusal) {
        try state.withLock { (state: inout State) throws(PluginRefusal) in
            state = try state.adding(plugin, asNewGeneration: false, at: Date()).0
        }
    }

    /// Checks `plugin` as the next generation of its name (or the first, for a new name) without
    /// registering it. Throws when another plugin offers one of its names.
    public func propose(_ plugin: LoadedPlugin) throws(PluginRefusal) -> PluginGenerationProposal {
        let (base, now) = (state.withLock { $0 }, Date())
        let (next, info) = try base.adding(plugin, asNewGeneration: true, at: now)
        let superseding = base.generations.last { $0.isCurrent && $0.info.name.lowercased() == info.name.lowercased() }?.info
        return PluginGenerationProposal(
            info: info, superseding: superseding, registry: ProviderRegistry(state: next), state: next, baseRevision: base.revision)
    }

    /// Registers a proposal whole. Refused when the registry changed since the proposal was made
    /// (what was checked against it may no longer hold).
    public func adopt(_ proposal: PluginGenerationProposal) throws(PluginRefusal) {
        try state.withLock { (state: inout State) throws(PluginRefusal) in
            guard state.revision == proposal.baseRevision else {
                throw PluginRefusal(file: proposal.info.file, reasons: [
                    "other plugins were registered while this one was checked; load it again",
                ])
            }
            state = proposal.state
        }
    }

    /// The provider that `name` selects; `nil` or an empty name selects the kind's default.
    public func resolve(_ kind: ProviderKind, _ name: String?) throws(ProviderLookupError) -> RegisteredProvider {
        let trimmed = name?.trimmingCharacters(in: .whitespaces)
        let requested = (trimmed?.isEmpty ?? true) ? Self.defaultNames[kind] : trimmed
        return try state.withLock { (state: inout State) throws(ProviderLookupError) -> RegisteredProvider in
            if let requested, let provider = state.byName[kind]?[requested.lowercased()] {
                return provider
            }
            let candidates = state.currentProviders.filter { $0.kind == kind }.sorted { $0.name < $1.name }
            var suggestion: String?
            if let requested {
                suggestion = NameSuggestion.nearest(requested, among: candidates.flatMap { [$0.name] + $0.aliases })
            }
            throw ProviderLookupError(
                kind: kind, requested: requested, registered: candidates.map(\.label), suggestion: suggestion)
        }
    }

    /// The current generations' providers, by kind and then name.
    public func providers(of kind: ProviderKind? = nil) -> [RegisteredProvider] {
        state.withLock { state in
            state.currentProviders
                .filter { kind == nil || $0.kind == kind }
                .sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
        }
    }

    /// The current generation of each registered plugin, by name.
    public var plugins: [PluginInfo] {
        state.withLock { state in state.generations.filter(\.isCurrent).map(\.info).sorted { $0.name < $1.name } }
    }

    /// Every generation of every plugin, current and superseded, in load order.
    public var generations: [PluginGeneration] {
        state.withLock { $0.generations }
    }
}
