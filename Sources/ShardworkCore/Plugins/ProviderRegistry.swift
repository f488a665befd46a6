import ShardworkSDK
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

/// The SPI registry: `(kind, name)` to provider.
///
/// Names and aliases are matched without regard to case, so ElasticJob's type names
/// (`AVG_ALLOCATION`, `CPU`, `LOG`, ...) find the same providers as Shardwork's. A plugin is
/// registered whole or not at all: if any of its names is taken, or a plugin of the same name is
/// already loaded, it is refused and both files are named.
public final class ProviderRegistry: Sendable {
    /// The provider used when a job's configuration names none, as in ElasticJob.
    public static let defaultNames: [ProviderKind: String] = [
        .shardingStrategy: "average",
        .executorStrategy: "cpu",
        .errorHandler: "log",
    ]

    private struct State {
        var providers: [RegisteredProvider] = []
        var byName: [ProviderKind: [String: RegisteredProvider]] = [:]
        var plugins: [String: PluginInfo] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Registers every provider of `plugin`, or none.
    public func register(_ plugin: LoadedPlugin) throws(PluginRefusal) {
        try state.withLock { (state: inout State) throws(PluginRefusal) in
            var conflicts: [String] = []
            if let other = state.plugins[plugin.info.name.lowercased()] {
                conflicts.append(
                    "a plugin named '\(other.name)' (version \(other.version)) is already loaded from \(other.file)")
            }
            var claimed: [ProviderKind: Set<String>] = [:]
            for provider in plugin.providers {
                for name in [provider.name] + provider.aliases {
                    let key = name.lowercased()
                    if let owner = state.byName[provider.kind]?[key] {
                        conflicts.append(
                            "the \(provider.kind) name '\(name)' is already provided by '\(owner.name)' of plugin "
                                + "'\(owner.plugin.name)' (\(owner.plugin.file)); two plugins may not offer one name")
                    }
                    claimed[provider.kind, default: []].insert(key)
                }
            }
            guard conflicts.isEmpty else {
                throw PluginRefusal(file: plugin.info.file, reasons: conflicts)
            }
            state.plugins[plugin.info.name.lowercased()] = plugin.info
            for record in plugin.providers {
                let provider = RegisteredProvider(
                    kind: record.kind, name: record.name, aliases: record.aliases, plugin: plugin.info, table: record.table)
                state.providers.append(provider)
                for name in [record.name] + record.aliases {
                    state.byName[record.kind, default: [:]][name.lowercased()] = provider
                }
            }
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
            let candidates = state.providers.filter { $0.kind == kind }.sorted { $0.name < $1.name }
            var suggestion: String?
            if let requested {
                suggestion = NameSuggestion.nearest(requested, among: candidates.flatMap { [$0.name] + $0.aliases })
            }
            throw ProviderLookupError(
                kind: kind, requested: requested, registered: candidates.map(\.label), suggestion: suggestion)
        }
    }

    /// Registered providers, by kind and then name.
    public func providers(of kind: ProviderKind? = nil) -> [RegisteredProvider] {
        state.withLock { state in
            state.providers
                .filter { kind == nil || $0.kind == kind }
                .sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
        }
    }

    /// Registered plugins, by name.
    public var plugins: [PluginInfo] {
        state.withLock { state in state.plugins.values.sorted { $0.name < $1.name } }
    }
}
