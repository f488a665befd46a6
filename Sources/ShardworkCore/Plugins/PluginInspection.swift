import ShardworkSDK

/// The verdict of every check the loader makes on one plugin file, in the order it makes them.
/// A check that could not run because an earlier one failed is `skipped`.
public struct PluginInspection: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable, Equatable {
        case passed, failed, skipped
    }

    public struct Check: Sendable, Codable, Equatable {
        /// A stable identifier (`elf`, `abi-version`, ...).
        public var id: String
        /// What the check asks, in words.
        public var title: String
        public var status: Status
        /// Why it failed (or what it found), one sentence each.
        public var details: [String]
    }

    /// The descriptor as the entry returned it; absent when the entry did not run or returned nothing.
    public struct Descriptor: Sendable, Codable, Equatable {
        public var magic: String
        public var abiMajor: Int
        public var abiMinor: Int
        public var descriptorSize: Int
        public var providerSize: Int
        public var name: String?
        public var version: String?
        public var toolchain: String?
        public var sdkVersion: String?
        public var providers: [ProviderEntry]
    }

    public struct ProviderEntry: Sendable, Codable, Equatable {
        public var kind: String
        public var name: String
        public var aliases: [String]
    }

    /// The file as given.
    public var file: String
    public var checks: [Check]
    public var descriptor: Descriptor?

    public init(file: String) {
        self.file = file
        self.checks = Self.catalogue.map { Check(id: $0.id, title: $0.title, status: .skipped, details: []) }
    }

    /// True when every check passed: the plugin may be registered.
    public var accepted: Bool { checks.allSatisfy { $0.status == .passed } }

    /// The failed checks' details, for one line of a log or an error.
    public var reasons: [String] {
        checks.filter { $0.status == .failed }.flatMap(\.details)
    }

    /// True when the file is a sound shared object that simply is not a plugin (no entry symbol).
    var isLibraryWithoutEntry: Bool {
        checks.first { $0.id == "entry-symbol" }?.status == .failed
    }

    /// The checks in order: identifier and question.
    static let catalogue: [(id: String, title: String)] = [
        ("file", "is a readable regular file"),
        ("permissions", "neither the file nor its directory is writable by other users"),
        ("elf", "is a complete 64-bit ELF shared object for this machine"),
        ("entry-symbol", "defines the entry symbol \(PluginABI.entrySymbol)"),
        ("load", "loads with all its dependencies"),
        ("descriptor", "the entry returns a descriptor"),
        ("magic", "the descriptor starts with Shardwork's magic number"),
        ("abi-version", "was built for an ABI version this host speaks"),
        ("struct-sizes", "its struct sizes match the host's"),
        ("toolchain", "was built by a toolchain this host can load"),
        ("providers", "its name, version and providers are well-formed"),
    ]

    mutating func pass(_ id: String, _ details: [String] = []) {
        set(id, .passed, details)
    }

    mutating func fail(_ id: String, _ details: [String]) {
        set(id, .failed, details)
    }

    private mutating func set(_ id: String, _ status: Status, _ details: [String]) {
        guard let index = checks.firstIndex(where: { $0.id == id }) else { return }
        checks[index].status = status
        checks[index].details = details
    }
}

/// A plugin the host did not register, and why.
public struct PluginRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var reasons: [String]
    /// The full inspection, when the refusal came from a check (not from a name conflict).
    public var inspection: PluginInspection?

    public init(file: String, reasons: [String], inspection: PluginInspection? = nil) {
        self.file = file
        self.reasons = reasons
        self.inspection = inspection
    }

    public var description: String {
        "refused plugin \(file): " + reasons.joined(separator: "; ")
    }
}
