import Foundation
import ShardworkSDK
import Yams

/// Reads a host configuration from YAML, strictly: an unknown field is an error that names the
/// nearest known one, a value of the wrong kind is an error, and every error carries the file, line
/// and column, the job and the field. Nothing is half-read: either the whole file is valid or an
/// error is thrown.
///
/// This checks the file on its own. ``JobCatalog`` then checks what needs the plugins (type names,
/// provider properties) and the cron expressions.
public enum HostConfigurationReader {
    public static func read(file: String) throws(HostConfigurationError) -> HostConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw HostConfigurationError(
                file: file, location: nil, job: nil, field: "", message: "cannot read the file: \(error.localizedDescription)")
        }
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        return try parse(text, file: file, baseDirectory: directory)
    }

    /// Parses configuration text. Relative plugin paths are resolved against `baseDirectory`.
    public static func parse(_ text: String, file: String? = nil, baseDirectory: String? = nil) throws(HostConfigurationError) -> HostConfiguration {
        let reader = Reader(file: file)
        let root = try reader.compose(text, whenEmpty: "the file is empty; it needs at least a `jobs:` list")
        var configuration = HostConfiguration()
        configuration.file = file
        let top = try reader.mapping(root, field: "", known: ["registry", "plugins", "host", "api", "metrics", "tracing", "jobs"])
        if let registry = top["registry"] {
            configuration.registry = try reader.registry(registry)
        }
        if let plugins = top["plugins"] {
            configuration.plugins = try reader.plugins(plugins, baseDirectory: baseDirectory)
        }
        if let host = top["host"] {
            configuration.host = try reader.host(host, baseDirectory: baseDirectory)
        }
        if let api = top["api"] {
            configuration.api = try reader.api(api, baseDirectory: baseDirectory)
        }
        if let metrics = top["metrics"] {
            configuration.metrics = try reader.metrics(metrics)
            if let metrics = configuration.metrics, metrics.enabled {
                if metrics.requireToken, configuration.api?.token == nil {
                    throw reader.error(top["metrics"], field: "metrics.requireToken", "needs the control API's token: set api.token or api.tokenFile, or drop metrics.requireToken")
                }
                if let api = configuration.api, api.enabled, api.port != 0, api.port == metrics.port, api.host == metrics.host {
                    throw reader.error(top["metrics"], field: "metrics.address", "is the control API's address (\(api.host):\(api.port)); the metrics need a listener of their own, such as 127.0.0.1:9471")
                }
            }
        }
        if let tracing = top["tracing"] {
            configuration.tracing = try reader.tracing(tracing, baseDirectory: baseDirectory)
        }
        if let jobs = top["jobs"] {
            configuration.jobs = try reader.jobs(jobs, locations: &configuration.locations)
            try reader.storeTimeZones(&configuration)
        }
        return configuration
    }

    /// One job, as a job of the `jobs:` list is written (YAML, or JSON, which is YAML too), with the
    /// same checks and messages: what the control API and `shardwork job add` accept.
    /// `defaultJobType`: the type of a job that exists (its root node's), for a text that names
    /// none, as `shardwork job config` prints a stored configuration (the type lives in the root node).
    public static func parseJob(
        _ text: String, source: String? = nil, defaultJobType: String? = nil
    ) throws(HostConfigurationError) -> JobConfiguration {
        let reader = Reader(file: source)
        var root = try reader.compose(text, whenEmpty: "the job is empty; it needs at least jobName, jobType and shardingTotalCount")
        if let defaultJobType, case .mapping(var mapping) = root, mapping[Node("jobType")] == nil {
            mapping[Node("jobType")] = Node(defaultJobType)
            root = .mapping(mapping)
        }
        var locations: [String: FilePosition] = [:]
        return try reader.job(root, index: 0, locations: &locations, fieldPrefix: "")
    }

    /// The fields a job may have: ElasticJob's, the 3.0.4 spelling of the executor key, and `jobType`.
    public static let jobFields = JobField.all.map(\.key)
}

/// Walks Yams nodes and turns every problem into a located ``HostConfigurationError``.
struct Reader {
    let file: String?

    func location(_ node: Node?) -> FilePosition? {
        node?.mark.map { FilePosition(line: $0.line, column: $0.column) }
    }

    func error(_ node: Node?, job: String? = nil, field: String, _ message: String) -> HostConfigurationError {
        HostConfigurationError(file: file, location: location(node), job: job, field: field, message: message)
    }

    /// The YAML document of `text`; every problem, an empty document included, as a located error.
    func compose(_ text: String, whenEmpty message: String) throws(HostConfigurationError) -> Node {
        do {
            guard let composed = try Yams.compose(yaml: text) else {
                throw error(nil, field: "", message)
            }
            return composed
        } catch let error as HostConfigurationError {
            throw error
        } catch let error as YamlError {
            throw yamlError(error)
        } catch {
            throw self.error(nil, field: "", "invalid YAML: \(error)")
        }
    }

    func yamlError(_ error: YamlError) -> HostConfigurationError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let detail = context.map { "\(problem) (\($0.text) at \($0.mark))" } ?? problem
            return HostConfigurationError(
                file: file, location: FilePosition(line: mark.line, column: mark.column), job: nil, field: "",
                message: "invalid YAML: \(detail)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return HostConfigurationError(
                file: file, location: FilePosition(line: context.mark.line, column: context.mark.column), job: nil,
                field: duplicates.joined(separator: ", "), message: "given twice in one mapping")
        default:
            return HostConfigurationError(file: file, location: nil, job: nil, field: "", message: "invalid YAML: \(error)")
        }
    }

    /// A mapping's entries by key, after checking that every key is known and appears once.
    struct Mapping {
        var values: [String: Node] = [:]
        var keyNodes: [String: Node] = [:]
        var order: [String] = []

        subscript(key: String) -> Node? { values[key] }
    }

    func mapping(_ node: Node, job: String? = nil, field: String, known: [String]) throws(HostConfigurationError) -> Mapping {
        guard case .mapping(let mapping) = node else {
            throw error(node, job: job, field: field.isEmpty ? "(top level)" : field,
                        "expected a mapping of `key: value` lines, got \(describe(node))")
        }
        var result = Mapping()
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                throw error(keyNode, job: job, field: field, "keys must be plain names, got \(describe(keyNode))")
            }
            let key = scalar.string
            let path = field.isEmpty ? key : "\(field).\(key)"
            guard known.contains(key) else {
                var message = "unknown field"
                if let suggestion = NameSuggestion.nearest(key, among: known) {
                    message += "; did you mean `\(suggestion)`?"
                } else {
                    message += "; the fields here are " + known.map { "`\($0)`" }.joined(separator: ", ")
                }
                throw error(keyNode, job: job, field: path, message)
            }
            guard result.values[key] == nil else {
                throw error(keyNode, job: job, field: path, "given twice")
            }
            result.values[key] = value
            result.keyNodes[key] = keyNode
            result.order.append(key)
        }
        return result
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): scalar.string.isEmpty ? "an empty value" : LogText.quoted(scalar.string)
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    func isNull(_ node: Node) -> Bool {
        if case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any {
            return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
        }
        return false
    }

    /// A text value: any scalar, as written (`123` is the text "123"); `nil` for an empty value.
    func string(_ node: Node, job: String? = nil, field: String) throws(HostConfigurationError) -> String? {
        guard case .scalar(let scalar) = node else {
            throw error(node, job: job, field: field, "expected a text value, got \(describe(node))")
        }
        return isNull(node) ? nil : scalar.string
    }

    func integer(_ node: Node, job: String? = nil, field: String) throws(HostConfigurationError) -> Int {
        guard case .scalar = node, let value = node.int else {
            throw error(node, job: job, field: field, "expected a whole number, got \(describe(node))")
        }
        return value
    }

    func number(_ node: Node, job: String? = nil, field: String) throws(HostConfigurationError) -> Double {
        guard case .scalar = node, let value = node.float ?? node.int.map(Double.init) else {
            throw error(node, job: job, field: field, "expected a number, got \(describe(node))")
        }
        return value
    }

    func boolean(_ node: Node, job: String? = nil, field: String) throws(HostConfigurationError) -> Bool {
        guard case .scalar = node, let value = node.bool else {
            throw error(node, job: job, field: field, "expected true or false, got \(describe(node))")
        }
        return value
    }

    func stringList(_ node: Node, job: String? = nil, field: String) throws(HostConfigurationError) -> [String] {
        if isNull(node) { return [] }
        guard case .sequence(let sequence) = node else {
            throw error(node, job: job, field: field, "expected a list (`[a, b]` or lines starting with `- `), got \(describe(node))")
        }
        var values: [String] = []
        for element in sequence {
            guard let text = try string(element, job: job, field: field), !text.isEmpty else {
                throw error(element, job: job, field: field, "list entries must not be empty")
            }
            values.append(text)
        }
        return values
    }

    // MARK: Sections

    func registry(_ node: Node) throws(HostConfigurationError) -> RegistryConfiguration {
        if isNull(node) { return .embedded }
        let section = try mapping(node, field: "registry", known: ["embedded", "zookeeper"])
        if let embedded = section["embedded"], !isNull(embedded) {
            _ = try mapping(embedded, field: "registry.embedded", known: [])
        }
        guard let zookeeper = section["zookeeper"] else { return .embedded }
        if section["embedded"] != nil {
            throw error(section.keyNodes["zookeeper"], field: "registry", "give `embedded` or `zookeeper`, not both")
        }
        return .zookeeper(try self.zookeeper(zookeeper))
    }

    static let zookeeperFields = [
        "serverLists", "namespace", "sessionTimeoutMilliseconds", "connectionTimeoutMilliseconds",
        "baseSleepTimeMilliseconds", "maxSleepTimeMilliseconds", "maxRetries", "digest", "waitForServer",
        "cancelItemsAtSessionFraction", "elasticJobCompatibility",
    ]

    /// ElasticJob's `ZookeeperConfiguration` (reference §1.2): a 0 timeout means Curator's default.
    func zookeeper(_ node: Node) throws(HostConfigurationError) -> ZooKeeperConfiguration {
        let prefix = "registry.zookeeper"
        let section = try mapping(node, field: prefix, known: Self.zookeeperFields)
        guard let serversNode = section["serverLists"], let servers = try string(serversNode, field: "\(prefix).serverLists"), !servers.isEmpty else {
            throw error(section["serverLists"] ?? node, field: "\(prefix).serverLists", "required: the ZooKeeper servers, as `host:port,host:port`")
        }
        for server in servers.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = server.trimmed.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let port = Int(parts[1]), (1...65535).contains(port) else {
                throw error(serversNode, field: "\(prefix).serverLists", "'\(server)' is not `host:port` with a port from 1 to 65535")
            }
        }
        guard let namespaceNode = section["namespace"], let namespace = try string(namespaceNode, field: "\(prefix).namespace"), !namespace.isEmpty else {
            throw error(section["namespace"] ?? node, field: "\(prefix).namespace", "required: the top node under which every job lives, for example `shardwork`")
        }
        if let problem = RegistryNames.namespaceProblem(namespace) {
            throw error(namespaceNode, field: "\(prefix).namespace", problem)
        }
        var configuration = ZooKeeperConfiguration(serverLists: servers.split(separator: ",").map { String($0.trimmed) }.joined(separator: ","), namespace: namespace)
        /// A whole number in `range`; with `zeroMeans`, 0 stands for that default (ElasticJob's 0 for
        /// Curator's default timeouts).
        func bounded(_ key: String, _ range: ClosedRange<Int>, zeroMeans defaultValue: Int? = nil, _ reason: String) throws(HostConfigurationError) -> Int? {
            guard let value = section[key] else { return nil }
            let number = try integer(value, field: "\(prefix).\(key)")
            if number == 0, let defaultValue { return defaultValue }
            guard range.contains(number) else {
                let zero = defaultValue.map { " (or 0 for \($0))" } ?? ""
                throw error(value, field: "\(prefix).\(key)", "must be from \(range.lowerBound) to \(range.upperBound)\(zero), got \(number): \(reason)")
            }
            return number
        }
        let timeoutReason = "ZooKeeper's client counts it in 32 bits and its servers cap it far below"
        if let value = try bounded("sessionTimeoutMilliseconds", ZooKeeperLimits.sessionTimeoutMilliseconds, zeroMeans: 60_000, timeoutReason) {
            configuration.sessionTimeoutMilliseconds = value
        }
        if let value = try bounded("connectionTimeoutMilliseconds", ZooKeeperLimits.connectionTimeoutMilliseconds, zeroMeans: 15_000,
                                   "a day at most (waitForServer: true waits without end)") {
            configuration.connectionTimeoutMilliseconds = value
        }
        let sleepReason = "an hour at most between reconnection attempts"
        if let value = try bounded("baseSleepTimeMilliseconds", ZooKeeperLimits.sleepTimeMilliseconds, sleepReason) {
            configuration.baseSleepTimeMilliseconds = value
        }
        if let value = try bounded("maxSleepTimeMilliseconds", ZooKeeperLimits.sleepTimeMilliseconds, sleepReason) {
            configuration.maxSleepTimeMilliseconds = value
        }
        if let value = try bounded("maxRetries", ZooKeeperLimits.maxRetries, "Curator, whose setting this is, allows at most 29") {
            configuration.maxRetries = value
        }
        if let value = section["digest"] {
            // Given but empty would connect without authentication: refused rather than done silently.
            guard let digest = try string(value, field: "\(prefix).digest"), !digest.isEmpty else {
                throw error(value, field: "\(prefix).digest",
                            "is empty; give `user:password`, or remove the field to connect without authentication")
            }
            guard let colon = digest.firstIndex(of: ":"), colon != digest.startIndex, digest.index(after: colon) != digest.endIndex else {
                throw error(value, field: "\(prefix).digest", "must be `user:password`, both parts non-empty")
            }
            guard !digest.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw error(value, field: "\(prefix).digest", "must not contain control characters (a line break, a tab)")
            }
            configuration.digest = digest
        }
        if let value = section["waitForServer"] { configuration.waitForServer = try boolean(value, field: "\(prefix).waitForServer") }
        if let value = section["cancelItemsAtSessionFraction"] {
            let fraction = try number(value, field: "\(prefix).cancelItemsAtSessionFraction")
            guard fraction > 0, fraction < 1 else {
                throw error(value, field: "\(prefix).cancelItemsAtSessionFraction",
                            "must be between 0 and 1 (exclusive), so that a host stops its items before its session can expire; got \(fraction)")
            }
            configuration.cancelItemsAtSessionFraction = fraction
        }
        if let value = section["elasticJobCompatibility"] {
            let text = try string(value, field: "\(prefix).elasticJobCompatibility") ?? ""
            guard let target = ElasticJobCompatibility(rawValue: text) else {
                throw error(value, field: "\(prefix).elasticJobCompatibility",
                            "must be 3.0.4 (ElasticJob 3.0.4 nodes read the namespace; the default), 3.0.5 (ElasticJob 3.0.5 or later) "
                                + "or none (no ElasticJob node reads it), got \(LogText.quoted(text))")
            }
            configuration.elasticJobCompatibility = target
        }
        return configuration
    }

    func plugins(_ node: Node, baseDirectory: String?) throws(HostConfigurationError) -> PluginSettings {
        var settings = PluginSettings()
        if isNull(node) { return settings }
        let section = try mapping(node, field: "plugins", known: [
            "directories", "files", "builtIn", "preflight", "preflightTimeoutSeconds", "cacheDirectory", "watchDirectory",
            "watchIntervalSeconds", "maxGenerations",
        ])
        func resolve(_ path: String) -> String {
            guard !path.hasPrefix("/"), let baseDirectory else { return path }
            return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: baseDirectory, isDirectory: true)).standardizedFileURL.path
        }
        if let value = section["directories"] {
            settings.directories = try stringList(value, field: "plugins.directories").map(resolve)
        }
        if let value = section["files"] {
            settings.files = try stringList(value, field: "plugins.files").map(resolve)
        }
        if let value = section["builtIn"] { settings.builtIn = try boolean(value, field: "plugins.builtIn") }
        if let value = section["preflight"] { settings.preflight = try boolean(value, field: "plugins.preflight") }
        if let value = section["preflightTimeoutSeconds"] {
            let seconds = try number(value, field: "plugins.preflightTimeoutSeconds")
            guard seconds >= 1, seconds <= 3600 else {
                throw error(value, field: "plugins.preflightTimeoutSeconds", "must be between 1 and 3600 seconds, got \(seconds)")
            }
            settings.preflightTimeoutSeconds = seconds
        }
        if let value = section["cacheDirectory"], let path = try string(value, field: "plugins.cacheDirectory") {
            guard !path.isEmpty else { throw error(value, field: "plugins.cacheDirectory", "must be a directory path, got ''") }
            settings.cacheDirectory = resolve(path)
        }
        if let value = section["watchDirectory"], let path = try string(value, field: "plugins.watchDirectory") {
            guard !path.isEmpty else { throw error(value, field: "plugins.watchDirectory", "must be a directory path, got ''") }
            settings.watchDirectory = resolve(path)
        }
        if let value = section["watchIntervalSeconds"] {
            let seconds = try number(value, field: "plugins.watchIntervalSeconds")
            guard seconds >= 0.1, seconds <= 3600 else {
                throw error(value, field: "plugins.watchIntervalSeconds", "must be between 0.1 and 3600 seconds, got \(seconds)")
            }
            settings.watchIntervalSeconds = seconds
        }
        if let value = section["maxGenerations"] {
            let count = try integer(value, field: "plugins.maxGenerations")
            guard (1...1024).contains(count) else {
                throw error(value, field: "plugins.maxGenerations",
                            "must be between 1 and 1024 plugin images loaded by hot-loads, got \(count)")
            }
            settings.maxGenerations = count
        }
        return settings
    }

    func host(_ node: Node, baseDirectory: String?) throws(HostConfigurationError) -> HostSettings {
        var settings = HostSettings()
        if isNull(node) { return settings }
        let section = try mapping(node, field: "host", known: ["shutdownTimeoutSeconds", "workerThreads", "ip", "stateDirectory", "jobClasses"])
        if let value = section["jobClasses"], !isNull(value) {
            guard case .mapping(let classes) = value else {
                throw error(value, field: "host.jobClasses", "expected a mapping of ElasticJob job classes to job types, such as `com.example.OrderJob: script`, got \(describe(value))")
            }
            for (keyNode, type) in classes {
                guard case .scalar(let key) = keyNode, !key.string.trimmed.isEmpty else {
                    throw error(keyNode, field: "host.jobClasses", "keys are ElasticJob job class names, such as `com.example.OrderJob`")
                }
                guard let typeName = try string(type, field: "host.jobClasses.\(key.string)"), !typeName.trimmed.isEmpty else {
                    throw error(type, field: "host.jobClasses.\(key.string)", "map the class to a job type of this host, such as `com.example.OrderJob: script`")
                }
                settings.jobClasses[key.string] = typeName
            }
        }
        if let value = section["stateDirectory"], let path = try string(value, field: "host.stateDirectory") {
            guard !path.isEmpty else { throw error(value, field: "host.stateDirectory", "must be a directory path, got ''") }
            settings.stateDirectory = path.hasPrefix("/") || baseDirectory == nil
                ? path
                : URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: baseDirectory!, isDirectory: true)).standardizedFileURL.path
        }
        if let value = section["shutdownTimeoutSeconds"] {
            let seconds = try number(value, field: "host.shutdownTimeoutSeconds")
            guard HostLimits.shutdownTimeoutSeconds.contains(seconds) else {
                throw error(value, field: "host.shutdownTimeoutSeconds", "must be from 0 to 86400 seconds (a day), got \(seconds)")
            }
            settings.shutdownTimeoutSeconds = seconds
        }
        if let value = section["workerThreads"] {
            let threads = try integer(value, field: "host.workerThreads")
            guard (1...4096).contains(threads) else {
                throw error(value, field: "host.workerThreads", "must be between 1 and 4096, got \(threads)")
            }
            settings.workerThreads = threads
        }
        if let value = section["ip"], let ip = try string(value, field: "host.ip") {
            let octets = ip.split(separator: ".", omittingEmptySubsequences: false)
            guard octets.count == 4, octets.allSatisfy({ UInt8($0) != nil && !$0.isEmpty }) else {
                throw error(value, field: "host.ip", "must be an IPv4 address such as 10.0.0.5 (ElasticJob's server nodes are IPv4), got '\(ip)'")
            }
            settings.ip = ip
        }
        return settings
    }

    func api(_ node: Node, baseDirectory: String?) throws(HostConfigurationError) -> APISettings {
        var settings = APISettings()
        if isNull(node) { return settings }
        let section = try mapping(node, field: "api", known: ["enabled", "address", "token", "tokenFile"])
        if let value = section["enabled"] {
            settings.enabled = try boolean(value, field: "api.enabled")
        }
        if let value = section["address"], let parsed = try address(value, field: "api.address", example: "127.0.0.1:8470") {
            (settings.host, settings.port) = parsed
        }
        if let value = section["token"], let token = try string(value, field: "api.token") {
            if let problem = Self.tokenProblem(token) { throw error(value, field: "api.token", problem) }
            settings.token = token
        }
        if let value = section["tokenFile"], let path = try string(value, field: "api.tokenFile") {
            guard settings.token == nil else {
                throw error(value, field: "api.tokenFile", "give api.token or api.tokenFile, not both")
            }
            let resolved = path.hasPrefix("/") || baseDirectory == nil ? path : baseDirectory! + "/" + path
            guard let text = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw error(value, field: "api.tokenFile", "cannot read \(resolved)")
            }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if let problem = Self.tokenProblem(token) { throw error(value, field: "api.tokenFile", "the token in \(resolved) \(problem)") }
            settings.token = token
        }
        if settings.enabled {
            guard let token = settings.token, !token.isEmpty else {
                throw error(node, field: "api.token", "required: every request to the control API must carry this bearer token; set api.token or api.tokenFile (or api.enabled: false)")
            }
            guard token.count >= HostLimits.tokenLength.lowerBound else {
                throw error(section["token"] ?? section["tokenFile"], field: "api.token", "too short: use at least 16 characters (for example `openssl rand -hex 24`)")
            }
        }
        return settings
    }

    /// A listener's `HOST:PORT` (``APISettings/parseAddress(_:)``), refused with `field` and an
    /// `example` when it does not read.
    func address(_ node: Node, field: String, example: String) throws(HostConfigurationError) -> (host: String, port: Int)? {
        guard let text = try string(node, field: field) else { return nil }
        guard let parsed = APISettings.parseAddress(text) else {
            throw error(node, field: field, "must be HOST:PORT such as \(example) (port 0 picks a free one), got '\(text)'")
        }
        return parsed
    }

    /// `metrics:`: the metrics and health endpoint (docs/metrics.md).
    func metrics(_ node: Node) throws(HostConfigurationError) -> MetricsSettings {
        var settings = MetricsSettings()
        if isNull(node) { return settings }
        let section = try mapping(node, field: "metrics", known: ["enabled", "address", "requireToken"])
        if let value = section["enabled"] {
            settings.enabled = try boolean(value, field: "metrics.enabled")
        }
        if let value = section["address"], let parsed = try address(value, field: "metrics.address", example: "127.0.0.1:9471") {
            (settings.host, settings.port) = parsed
        }
        if let value = section["requireToken"] {
            settings.requireToken = try boolean(value, field: "metrics.requireToken")
        }
        return settings
    }

    /// `tracing:`: the history's database. `type` is `sqlite` (the default), `postgresql`, or
    /// ElasticJob's name `RDB` (a relational database: the one whose section is given).
    func tracing(_ node: Node, baseDirectory: String?) throws(HostConfigurationError) -> TracingSettings {
        var settings = TracingSettings()
        if isNull(node) { return settings }
        let section = try mapping(node, field: "tracing", known: ["type", "sqlite", "postgresql", "queueCapacity", "retentionDays"])
        var type = "sqlite"
        if let value = section["type"], let text = try string(value, field: "tracing.type") {
            switch text.lowercased() {
            case "sqlite": type = "sqlite"
            case "postgresql", "postgres": type = "postgresql"
            case "rdb": type = section["postgresql"] != nil ? "postgresql" : "sqlite"
            default:
                throw error(value, field: "tracing.type", "must be sqlite, postgresql or RDB (ElasticJob's name, with a sqlite: or postgresql: section), got '\(text)'")
            }
        } else if section["postgresql"] != nil {
            type = "postgresql"
        }
        if type == "sqlite" {
            var path: String?
            if let node = section["sqlite"], !isNull(node) {
                let sqlite = try mapping(node, field: "tracing.sqlite", known: ["path"])
                if let value = sqlite["path"], let text = try string(value, field: "tracing.sqlite.path") {
                    guard !text.isEmpty else { throw error(value, field: "tracing.sqlite.path", "is empty; give a file, or leave it out for the state directory") }
                    path = text.hasPrefix("/") || baseDirectory == nil ? text : baseDirectory! + "/" + text
                }
            }
            settings.database = .sqlite(path: path)
        } else {
            guard let node = section["postgresql"] else {
                throw error(node, field: "tracing.postgresql", "required with tracing.type postgresql: give host, port, database, user and the password")
            }
            settings.database = .postgresql(try postgresql(node, baseDirectory: baseDirectory))
        }
        if let value = section["queueCapacity"] {
            let capacity = try integer(value, field: "tracing.queueCapacity")
            guard (1...10_000_000).contains(capacity) else {
                throw error(value, field: "tracing.queueCapacity", "must be between 1 and 10,000,000 rows, got \(capacity)")
            }
            settings.queueCapacity = capacity
        }
        if let value = section["retentionDays"] {
            if isNull(value) {
                settings.retentionDays = nil
            } else {
                let days = try integer(value, field: "tracing.retentionDays")
                guard (1...36_500).contains(days) else {
                    throw error(value, field: "tracing.retentionDays", "must be between 1 and 36,500 days (or null to keep every row), got \(days)")
                }
                settings.retentionDays = days
            }
        }
        return settings
    }

    func postgresql(_ node: Node, baseDirectory: String?) throws(HostConfigurationError) -> PostgreSQLSettings {
        var settings = PostgreSQLSettings()
        let prefix = "tracing.postgresql"
        let section = try mapping(node, field: prefix, known: ["host", "port", "database", "user", "password", "passwordFile", "passwordEnvironment"])
        if let value = section["host"], let text = try string(value, field: "\(prefix).host") {
            guard !text.isEmpty else { throw error(value, field: "\(prefix).host", "is empty") }
            settings.host = text
        }
        if let value = section["port"] {
            let port = try integer(value, field: "\(prefix).port")
            guard (1...65535).contains(port) else { throw error(value, field: "\(prefix).port", "must be between 1 and 65535, got \(port)") }
            settings.port = port
        }
        if let value = section["database"], let text = try string(value, field: "\(prefix).database") {
            guard !text.isEmpty else { throw error(value, field: "\(prefix).database", "is empty") }
            settings.database = text
        }
        if let value = section["user"], let text = try string(value, field: "\(prefix).user") {
            guard !text.isEmpty else { throw error(value, field: "\(prefix).user", "is empty") }
            settings.user = text
        }
        let sources = ["password", "passwordFile", "passwordEnvironment"].filter { section[$0] != nil }
        if sources.count > 1 {
            throw error(section[sources[1]], field: "\(prefix).\(sources[1])", "give one of password, passwordFile and passwordEnvironment")
        }
        if let value = section["password"] {
            settings.password = try string(value, field: "\(prefix).password")
        }
        if let value = section["passwordFile"], let path = try string(value, field: "\(prefix).passwordFile") {
            let resolved = path.hasPrefix("/") || baseDirectory == nil ? path : baseDirectory! + "/" + path
            guard let text = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw error(value, field: "\(prefix).passwordFile", "cannot read \(resolved)")
            }
            settings.password = text.trimmingCharacters(in: .newlines)
        }
        if let value = section["passwordEnvironment"], let name = try string(value, field: "\(prefix).passwordEnvironment") {
            guard let password = ProcessInfo.processInfo.environment[name] else {
                throw error(value, field: "\(prefix).passwordEnvironment", "the environment has no variable \(name)")
            }
            settings.password = password
        }
        return settings
    }

    /// A bearer token travels in an HTTP header: visible ASCII only, or no client can send it.
    static func tokenProblem(_ token: String) -> String? {
        if let bad = token.unicodeScalars.first(where: { $0.value < 0x21 || $0.value > 0x7E }) {
            let what = bad.value == 0x0A || bad.value == 0x0D ? "a line break" : bad == " " ? "a space" : "U+\(String(bad.value, radix: 16, uppercase: true))"
            return "holds \(what): a token travels in an HTTP header, so it may hold visible ASCII characters only (for example `openssl rand -hex 24`)"
        }
        if token.count > HostLimits.tokenLength.upperBound {
            return "is \(token.count) characters long, more than the \(HostLimits.tokenLength.upperBound) an HTTP header carries"
        }
        return nil
    }

    /// Each job's time zone as the namespace's ElasticJob nodes read it
    /// (``ElasticJobCompatibility/storedTimeZone(_:now:)``): a tz-database name whose offset no
    /// longer changes becomes its GMT offset; one with daylight saving time is refused, at its line.
    func storeTimeZones(_ configuration: inout HostConfiguration) throws(HostConfigurationError) {
        let target = configuration.registry.elasticJobCompatibility
        for index in configuration.jobs.indices {
            do {
                configuration.jobs[index].timeZone = try target.storedTimeZone(configuration.jobs[index].timeZone)
            } catch {
                throw HostConfigurationError(
                    file: file, location: configuration.locations["jobs[\(index)].timeZone"], job: configuration.jobs[index].jobName,
                    field: "timeZone", message: error.description)
            }
        }
    }

    func jobs(_ node: Node, locations: inout [String: FilePosition]) throws(HostConfigurationError) -> [JobConfiguration] {
        if isNull(node) { return [] }
        guard case .sequence(let sequence) = node else {
            throw error(node, field: "jobs", "expected a list of jobs (lines starting with `- jobName: ...`), got \(describe(node))")
        }
        var jobs: [JobConfiguration] = []
        var firstByName: [String: Node] = [:]
        for (index, jobNode) in sequence.enumerated() {
            let job = try self.job(jobNode, index: index, locations: &locations)
            if let first = firstByName[job.jobName] {
                let line = location(first).map { " (first at line \($0.line))" } ?? ""
                throw error(jobNode, job: job.jobName, field: "jobName", "two jobs have this name\(line); job names are unique")
            }
            firstByName[job.jobName] = jobNode
            jobs.append(job)
        }
        return jobs
    }

    func job(
        _ node: Node, index: Int, locations: inout [String: FilePosition], fieldPrefix given: String? = nil
    ) throws(HostConfigurationError) -> JobConfiguration {
        let fieldPrefix = given ?? "jobs[\(index)]"
        // The name first, so that every later error can name the job.
        let section = try mapping(node, field: fieldPrefix, known: HostConfigurationReader.jobFields)
        guard let nameNode = section["jobName"], let jobName = try string(nameNode, field: "jobName"), !jobName.isEmpty else {
            throw error(section["jobName"] ?? node, field: fieldPrefix.isEmpty ? "jobName" : "\(fieldPrefix).jobName", "required: every job needs a name")
        }
        if let problem = RegistryNames.jobNameProblem(jobName) {
            // The name cannot label the error as it is: it may hold line breaks or control characters.
            throw error(nameNode, job: nil, field: fieldPrefix.isEmpty ? "jobName" : "\(fieldPrefix).jobName",
                        "\(LogText.quoted(jobName, limit: 80)) \(problem)")
        }
        for key in section.order {
            locations["\(fieldPrefix).\(key)"] = location(section[key])
        }
        func text(_ key: String) throws(HostConfigurationError) -> String? {
            guard let value = section[key] else { return nil }
            return try string(value, job: jobName, field: key)
        }

        guard let jobType = try text("jobType") else {
            throw error(section.keyNodes["jobType"] ?? node, job: jobName, field: "jobType",
                        "required: the name of a job type a plugin provides (`shardwork plugins list` shows them)")
        }
        guard let totalNode = section["shardingTotalCount"] else {
            throw error(node, job: jobName, field: "shardingTotalCount", "required: the number of sharding items, at least 1")
        }
        let total = try integer(totalNode, job: jobName, field: "shardingTotalCount")

        // The optional fields in the table's order, so that of two faulty fields the same one is
        // named every time. An absent field keeps the configuration's default, and so does text
        // given without a value.
        var job = JobConfiguration(jobName: jobName, jobType: jobType, cron: nil, shardingTotalCount: total)
        for field in JobField.all where !field.isRequired {
            guard let value = section[field.key] else { continue }
            let key = field.key
            switch field.value {
            case .text(let path):
                if let text = try string(value, job: jobName, field: key) { job[keyPath: path] = text }
            case .optionalText(let path):
                job[keyPath: path] = try string(value, job: jobName, field: key)
            case .flag(let path):
                job[keyPath: path] = try boolean(value, job: jobName, field: key)
            case .whole(let path):
                job[keyPath: path] = try integer(value, job: jobName, field: key)
            case .list(let path):
                job[keyPath: path] = try stringList(value, job: jobName, field: key)
            case .properties(let path):
                job[keyPath: path] = try properties(value, job: jobName)
            case .notStored:
                break
            }
            // The rules of single fields, checked as the field is read.
            switch key {
            case "shardingItemParameters":
                do {
                    _ = try ShardingItemParameters.parse(job.shardingItemParameters)
                } catch {
                    throw self.error(value, job: jobName, field: key, error.description)
                }
            case "jobExecutorServiceHandlerType":
                let legacyExecutor = try string(value, job: jobName, field: key)
                if let executor = job.jobExecutorThreadPoolSizeProviderType, let legacyExecutor, executor != legacyExecutor {
                    throw error(value, job: jobName, field: key,
                                "contradicts jobExecutorThreadPoolSizeProviderType ('\(legacyExecutor)' against '\(executor)'); "
                                    + "they are two spellings of one setting (ElasticJob 3.0.4 and 3.0.5), give one")
                }
                job.jobExecutorThreadPoolSizeProviderType = job.jobExecutorThreadPoolSizeProviderType ?? legacyExecutor
            case "jobExtraConfigurations":
                if !isNull(value) {
                    throw error(value, job: jobName, field: key, "ElasticJob's tracing configurations are not supported; remove the field")
                }
            default:
                break
            }
        }

        if job.failover && !job.monitorExecution {
            throw error(section["failover"], job: jobName, field: "failover",
                        "failover needs monitorExecution: true (without running markers a crashed host's items cannot be found)")
        }
        if let violation = JobLimits.violation(of: job) {
            // Located at the field, or at the job for a limit of the whole configuration.
            let field = violation.field.split(separator: ".").first.map(String.init) ?? violation.field
            throw error(section[field] ?? node, job: jobName, field: violation.field, violation.message)
        }
        return job
    }

    func properties(_ node: Node, job: String) throws(HostConfigurationError) -> JobProperties {
        if isNull(node) { return JobProperties() }
        guard case .mapping(let mapping) = node else {
            throw error(node, job: job, field: "props", "expected a mapping of `key: value` lines, got \(describe(node))")
        }
        var entries: [(key: String, value: String)] = []
        var seen = Set<String>()
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let key) = keyNode else {
                throw error(keyNode, job: job, field: "props", "keys must be plain names, got \(describe(keyNode))")
            }
            guard seen.insert(key.string).inserted else {
                throw error(keyNode, job: job, field: "props.\(key.string)", "given twice")
            }
            guard case .scalar(let value) = valueNode else {
                throw error(valueNode, job: job, field: "props.\(key.string)", "expected a text value, got \(describe(valueNode))")
            }
            entries.append((key.string, isNull(valueNode) ? "" : value.string))
        }
        let properties = JobProperties(entries)
        if let isolation = properties[HostProperty.isolation], !["process", "in-process"].contains(isolation) {
            throw error(node, job: job, field: "props.\(HostProperty.isolation)",
                        "must be `process` (items run in a worker process) or `in-process` (the default), got '\(isolation)'")
        }
        if let unknown = entries.first(where: { $0.key.hasPrefix("shardwork.") && !HostProperty.known.contains($0.key) }) {
            var message = "unknown host property (the `shardwork.` prefix is reserved for the host)"
            if let suggestion = NameSuggestion.nearest(unknown.key, among: HostProperty.known) {
                message += "; did you mean `\(suggestion)`?"
            }
            throw error(node, job: job, field: "props.\(unknown.key)", message)
        }
        return properties
    }
}
