import Foundation

/// A host's configuration: its registry, its plugins, its own settings and its jobs. Read from YAML
/// by ``HostConfigurationReader``; documented in docs/configuration.md.
public struct HostConfiguration: Sendable, Equatable {
    public var registry: RegistryConfiguration = .embedded
    public var plugins = PluginSettings()
    public var host = HostSettings()
    /// The control API; off when the configuration has no `api:` section.
    public var api: APISettings?
    /// The metrics and health endpoint; off when the configuration has no `metrics:` section.
    public var metrics: MetricsSettings?
    /// Execution history (docs/history.md); off when the configuration has no `tracing:` section.
    public var tracing: TracingSettings?
    public var jobs: [JobConfiguration] = []
    /// Where each field was written (`jobs[0].cron` → line and column), for error messages.
    public var locations: [String: FilePosition] = [:]
    /// The file it was read from, if any.
    public var file: String?

    public init() {}
}

/// Which registry center the host uses.
public enum RegistryConfiguration: Sendable, Equatable {
    /// In-process, for a single host: nothing to install or start.
    case embedded
    /// A ZooKeeper ensemble shared by the hosts of a cluster.
    case zookeeper(ZooKeeperConfiguration)

    /// Whose nodes must read what the host writes: the ZooKeeper setting; nobody else's with the
    /// embedded registry, which no ElasticJob node can reach.
    public var elasticJobCompatibility: ElasticJobCompatibility {
        if case .zookeeper(let zookeeper) = self { zookeeper.elasticJobCompatibility } else { .none }
    }
}

public struct PluginSettings: Sendable, Equatable {
    /// Directories searched after the built-in one, in order. Relative paths are resolved against
    /// the configuration file's directory.
    public var directories: [String] = []
    /// Plugin files loaded explicitly.
    public var files: [String] = []
    /// Whether to load the plugins beside the `shardwork` binary.
    public var builtIn = true
    /// Whether to try each plugin in a separate process before loading it into the host.
    public var preflight = true
    /// How long such a trial load may take before its process is killed and the plugin refused.
    public var preflightTimeoutSeconds: Double = 30
    /// Where hot-loaded plugins are copied, each under a name made of its content's SHA-256, before
    /// they are loaded; `nil`: ``PluginSettings/defaultCacheDirectory``. Relative paths are resolved
    /// against the configuration file's directory. See docs/hot-loading.md.
    public var cacheDirectory: String?
    /// A directory whose new or changed `*.so` files are hot-loaded; `nil`: none is watched.
    public var watchDirectory: String?
    /// How often the watched directory is looked at.
    public var watchIntervalSeconds: Double = 2
    /// How many plugin images hot-loads may map into one host process (they are never unloaded);
    /// beyond it a hot-load is refused until the host restarts.
    public var maxGenerations = 16

    public init() {}

    /// `$TMPDIR/shardwork-plugin-cache-{uid}` (`/tmp` without TMPDIR): one per user, so that the
    /// loader's ownership checks pass.
    public static var defaultCacheDirectory: String {
        var directory = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        if directory.isEmpty { directory = "/tmp" }
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        return (directory == "/" ? "" : directory) + "/shardwork-plugin-cache-\(geteuid())"
    }
}

public struct HostSettings: Sendable, Equatable {
    /// On SIGINT or SIGTERM, how long to wait for running items before exiting anyway.
    public var shutdownTimeoutSeconds: Double = 30
    /// How many threads run job items, for all jobs together; `nil`: twice the processors, at least 4.
    /// Each job's executor strategy limits how many of them one fire uses.
    public var workerThreads: Int?
    /// The IPv4 address that names this host in the registry (its instance id is `{ip}@-@{pid}`,
    /// its server node `servers/{ip}`); `nil`: the first address of an interface that is up and not
    /// loopback, as ElasticJob picks it.
    public var ip: String?
    /// Where the host keeps what must outlive it: its crash journal (the jobs it died for, which it
    /// refuses at its next start while they are unchanged). `nil`:
    /// ``HostSettings/defaultStateDirectory``. Relative paths are resolved against the
    /// configuration file's directory.
    public var stateDirectory: String?
    /// ElasticJob job classes that this host runs as a job type of its own (`host.jobClasses`):
    /// a job whose root node names the class (as ElasticJob stores it) runs here as that type,
    /// beside the Java nodes; the root keeps the class name. By class name.
    public var jobClasses: [String: String] = [:]

    public init() {}

    /// The job type this host runs a job as, given the type its root node holds.
    public func jobType(forStored stored: String) -> String { jobClasses[stored] ?? stored }

    /// `$TMPDIR/shardwork-state-{uid}` (`/tmp` without TMPDIR). A directory that survives reboots
    /// (`/var/lib/shardwork`) keeps the journal across them too.
    public static var defaultStateDirectory: String {
        var directory = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        if directory.isEmpty { directory = "/tmp" }
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        return (directory == "/" ? "" : directory) + "/shardwork-state-\(geteuid())"
    }

    /// The crash journal of the host whose server address is `ip`: one per address, so that hosts
    /// on one machine (each with its own address) keep their own.
    public func crashJournalPath(ip: String) -> String {
        (stateDirectory ?? Self.defaultStateDirectory) + "/crashes-\(ip).log"
    }
}

/// Execution history (docs/history.md): ElasticJob's event trace tables, written from the host's
/// events off the fire path.
public struct TracingSettings: Sendable, Equatable {
    public enum Database: Sendable, Equatable {
        /// A SQLite file: `path`, or `history-{ip}.sqlite` in the host's state directory.
        case sqlite(path: String?)
        /// A PostgreSQL server shared by the hosts of a cluster.
        case postgresql(PostgreSQLSettings)
    }

    public var database: Database = .sqlite(path: nil)
    /// The most rows that wait for a slow or unreachable database before new ones are dropped.
    public var queueCapacity = 100_000
    /// Rows older than this many days are removed every hour; `nil` keeps them.
    public var retentionDays: Int? = 30

    public init() {}

    /// The SQLite file for a host whose address is `ip`.
    public func sqlitePath(ip: String, host: HostSettings) -> String? {
        guard case .sqlite(let path) = database else { return nil }
        return path ?? (host.stateDirectory ?? HostSettings.defaultStateDirectory) + "/history-\(ip).sqlite"
    }
}

/// How to reach a PostgreSQL server. The password comes from the file, the environment variable
/// or the value given (in that order of preference); it is never logged.
public struct PostgreSQLSettings: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 5432
    public var database = "shardwork"
    public var user = "shardwork"
    public var password: String?

    public init() {}
}

/// The control API (docs/operations.md): JSON over HTTP, every request with the bearer token.
public struct APISettings: Sendable, Equatable {
    public var enabled = true
    /// Loopback unless configured otherwise.
    public var host = "127.0.0.1"
    /// 0: a free port, which the host logs.
    public var port = 8470
    public var token: String?

    public init() {}

    /// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback).
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "127.0.0.1" }
        return (host, port)
    }
}

/// The metrics endpoint of `shardwork run` (docs/metrics.md): Prometheus's text format on
/// `GET /metrics`, and the health probes `GET /healthz` and `GET /readyz`, on a listener of its own.
public struct MetricsSettings: Sendable, Equatable {
    public var enabled = true
    /// Loopback unless configured otherwise.
    public var host = "127.0.0.1"
    /// 0: a free port, which the host logs.
    public var port = 9471
    /// Whether a scrape must carry the control API's bearer token (`api.token`); the health probes
    /// never need it.
    public var requireToken = false

    public init() {}
}

/// A line and column in a configuration file, both from 1.
public struct FilePosition: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A configuration is invalid. The message names the file, the place, the job and the field.
public struct HostConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String?
    public var location: FilePosition?
    /// The job the problem is in, when it is in one.
    public var job: String?
    /// The field, as written in the file (`cron`, `shardingTotalCount`, `registry.zookeeper`).
    public var field: String
    public var message: String

    public init(file: String?, location: FilePosition?, job: String?, field: String, message: String) {
        self.file = file
        self.location = location
        self.job = job
        self.field = field
        self.message = message
    }

    /// One line, whatever the input held: every part is escaped (``LogText``), so that a value
    /// quoted in the message can neither break the line nor reach a terminal as an escape code.
    public var description: String {
        var text = LogText.escaped(file ?? "configuration", limit: 1_000)
        if let location { text += ":\(location)" }
        text += ": "
        if let job { text += "job '\(LogText.escaped(job, limit: 200))': " }
        if !field.isEmpty { text += "\(LogText.escaped(field, limit: 200)): " }
        return text + LogText.escaped(message, limit: 16_384)
    }
}
