public import Foundation
public import Logging

/// ElasticJob's operation APIs (its lifecycle module: `JobConfigurationAPI`, `JobOperateAPI`,
/// `ShardingOperateAPI`, `JobStatisticsAPI`, `ServerStatisticsAPI`, `ShardingStatisticsAPI`) over
/// a registry center: what an operator, the CLI or an HTTP API asks of the whole cluster.
///
/// It acts on the registry only. Hosts react through their watches, as ElasticJob's instances
/// react to its APIs, so an operation's effect on running jobs follows shortly after it returns.
///
/// Unlike ElasticJob's APIs, writes that belong together are one transaction: a write planned from
/// what was read is applied only if what it depends on is unchanged, and planned again otherwise,
/// so nothing is ever half-applied; a configuration update carries the version it was based on,
/// so that concurrent updates never silently overwrite each other; registry errors are reported,
/// never swallowed.
public final class ClusterOperations: Sendable {
    let registry: any RegistryCenter
    private let logger: Logger
    private let now: @Sendable () -> Date
    /// The event stream of the host serving the operations, if one does.
    private let events: HostEvents?
    /// Whose nodes must read the configurations written here (time zones, the executor key).
    private let compatibility: ElasticJobCompatibility
    /// ElasticJob job classes the host maps to its own job types (`host.jobClasses`).
    private let jobClasses: [String: String]

    /// How many times a write planned from a read is planned again when a concurrent change to the
    /// nodes it depends on made it fail.
    static let attempts = 5

    /// The most nodes a job removal deletes in one transaction; a larger job is removed
    /// configuration first, then node by node (ZooKeeper's requests are limited to 1 MB).
    static let largestRemovalTransaction = 2_000

    /// - Parameters:
    ///   - registry: the cluster's registry (for ZooKeeper, in the cluster's namespace).
    ///   - now: the clock that dates jobs added with ``addJob(_:addedBy:)``.
    ///   - events: where operations that changed the cluster are published (a host's stream).
    ///   - compatibility: the ElasticJob version whose nodes must read the configurations written
    ///     (`registry.zookeeper.elasticJobCompatibility`).
    public init(
        registry: any RegistryCenter, logger: Logger = Logger(label: "shardwork.operations"),
        now: @escaping @Sendable () -> Date = Date.init, events: HostEvents? = nil, compatibility: ElasticJobCompatibility = .none,
        jobClasses: [String: String] = [:]
    ) {
        self.jobClasses = jobClasses
        self.registry = registry
        self.logger = logger
        self.now = now
        self.events = events
        self.compatibility = compatibility
    }

    /// An operation changed the cluster: its event, on the host's stream.
    private func performed(_ operation: String, job: String, _ detail: @autoclosure () -> String) {
        events?.publish(.operationPerformed(operation: operation, job: job, detail: detail()))
    }

    // MARK: Statistics

    /// Every job (a child of `/` with a `config` node), sorted by name: ElasticJob's
    /// `getAllJobsBriefInfo`.
    public func jobs() async throws(OperationError) -> [JobBrief] {
        try await perform("listing the jobs", job: nil) {
            var briefs: [JobBrief] = []
            for name in try await jobNames() {
                if let view = try await readJob(JobNodePath(job: name)) { briefs.append(view.brief) }
            }
            return briefs
        }
    }

    /// One job in full: its brief, leader, items, instances, servers and incapable instances.
    public func job(_ name: String) async throws(OperationError) -> JobStatus {
        let paths = try jobPaths(name)
        return try await perform("reading the job", job: name) {
            guard let view = try await readJob(paths) else { throw Self.noSuchJob(name) }
            let snapshot = view.snapshot
            let total = view.configuration?.shardingTotalCount ?? 0
            return JobStatus(
                brief: view.brief, leader: snapshot.leader, reshardingNecessary: snapshot.reshardingNecessary,
                items: (0..<total).map { ShardingInfo(item: $0, in: snapshot) },
                instances: snapshot.instances.values.sorted { $0.id < $1.id }.map {
                    InstanceInfo(instanceId: $0.id, serverIp: $0.serverIP, pid: $0.pid)
                },
                servers: snapshot.servers.sorted { CoordinationRules.javaPrecedes($0.key, $1.key) }.map {
                    ServerInfo(serverIp: $0.key, status: $0.value)
                },
                incapable: view.incapable, addedBy: view.dynamicRecord)
        }
    }

    /// Every server of every job, sorted by IP: ElasticJob's `getAllServersBriefInfo`. An instance
    /// counts for its server when the server has a node in any job (ElasticJob only counts it when
    /// a job read before its own had the node, so its answer depends on the order of the jobs).
    public func servers() async throws(OperationError) -> [ServerBrief] {
        try await perform("listing the servers", job: nil) {
            var jobsByServer: [String: Set<String>] = [:]
            var disabledJobs: [String: Int] = [:]
            var instancesByServer: [String: Set<String>] = [:]
            for name in try await jobNames() {
                let snapshot = try await JobSnapshot.read(
                    from: registry, paths: JobNodePath(job: name), instanceID: nil, watches: nil)
                for (ip, status) in snapshot.servers {
                    jobsByServer[ip, default: []].insert(name)
                    if status.uppercased() == ServerStatus.disabled.rawValue { disabledJobs[ip, default: 0] += 1 }
                }
                for instance in snapshot.instances.values {
                    instancesByServer[instance.serverIP, default: []].insert(instance.id)
                }
            }
            return jobsByServer.keys.sorted(by: CoordinationRules.javaPrecedes).map { ip in
                ServerBrief(
                    serverIp: ip, jobNames: jobsByServer[ip, default: []].sorted(by: CoordinationRules.javaPrecedes),
                    instances: instancesByServer[ip, default: []].sorted(), disabledJobsNum: disabledJobs[ip, default: 0])
            }
        }
    }

    // MARK: Operating jobs

    /// Runs the job once now on every live instance: ElasticJob's `triggerAllInstances`. Requests
    /// left for instances that are gone are removed, and each live instance gets a `trigger/{id}`
    /// (one still waiting is kept: the instance runs the job once either way), in one transaction.
    /// Returns the instances asked, sorted.
    @discardableResult
    public func trigger(job name: String) async throws(OperationError) -> [String] {
        let paths = try jobPaths(name)
        let triggered = try await transact("triggering the job", job: name) { () async throws -> ([RegistryOperation], [String]) in
            try await requireJob(paths)
            let live = try await registry.childrenIfPresent(paths.instances).sorted()
            var operations: [RegistryOperation] = [.check(paths.config, version: nil)]
            if try await registry.exists(paths.trigger, watch: nil) == nil {
                operations.append(.create(paths.trigger, data: [], mode: .persistent))
            }
            let pending = Set(try await registry.childrenIfPresent(paths.trigger))
            for stale in pending.subtracting(live).sorted() {
                operations.append(.delete(paths.trigger(stale), version: nil))
            }
            for id in live {
                // Only to an instance that is still there when the request is written.
                operations.append(.check(paths.instance(id), version: nil))
                if !pending.contains(id) { operations.append(.create(paths.trigger(id), data: [], mode: .persistent)) }
            }
            return (operations, live)
        }
        performed("trigger", job: name, "\(triggered.count) instance(s)")
        logger.info("trigger requested", metadata: ["job": "\(name)", "instances": "\(triggered.joined(separator: ","))"])
        return triggered
    }

    /// Disables servers: ElasticJob's `JobOperateAPI.disable`. With a job and a server, that job's
    /// `servers/{ip}` (written even if the server never ran the job, so that it starts disabled);
    /// with a job only, every server of the job; with a server only, that server in every job that
    /// has it. Their instances get no items at the next resharding. Returns the server nodes
    /// selected, each now `DISABLED`; all are written in one transaction.
    @discardableResult
    public func disable(job: String?, server: String?) async throws(OperationError) -> [ServerStatusChange] {
        try await setServers(.disabled, job: job, server: server)
    }

    /// Enables servers, selected as ``disable(job:server:)`` selects them.
    @discardableResult
    public func enable(job: String?, server: String?) async throws(OperationError) -> [ServerStatusChange] {
        try await setServers(.enabled, job: job, server: server)
    }

    private func setServers(_ status: ServerStatus, job: String?, server: String?) async throws(OperationError) -> [ServerStatusChange] {
        guard job != nil || server != nil else {
            throw .invalid(job: nil, field: "job", "give a job, a server or both (ElasticJob: \"At least indicate jobName or serverIp.\")")
        }
        let paths = try job.map { name throws(OperationError) in try jobPaths(name) }
        if let server { try checkNodeName(server, field: "server", job: job) }
        let verb = status == .disabled ? "disabling" : "enabling"
        let changes = try await transact("\(verb) servers", job: job) { () async throws -> ([RegistryOperation], [ServerStatusChange]) in
            var targets: [(paths: JobNodePath, ip: String)] = []
            if let paths {
                try await requireJob(paths)
                if let server {
                    targets = [(paths, server)]
                } else {
                    targets = try await registry.childrenIfPresent(paths.servers).sorted(by: CoordinationRules.javaPrecedes).map { (paths, $0) }
                }
            } else if let server {
                for name in try await jobNames() {
                    let candidate = JobNodePath(job: name)
                    if try await registry.exists(candidate.server(server), watch: nil) != nil { targets.append((candidate, server)) }
                }
                guard !targets.isEmpty else {
                    throw OperationError.notFound(job: nil, "no job has server \(server); `servers` lists the servers of every job")
                }
            }
            var operations: [RegistryOperation] = []
            let value = [UInt8](utf8: status.rawValue)
            for target in targets {
                let path = target.paths.server(target.ip)
                if let node = try await registry.textIfPresent(path) {
                    // Unchanged nodes are left alone: a write would make every host reshard.
                    if node.text != status.rawValue { operations.append(.setData(path, data: value, version: node.stat.version)) }
                } else {
                    if try await registry.exists(target.paths.servers, watch: nil) == nil {
                        operations.append(.create(target.paths.servers, data: [], mode: .persistent))
                    }
                    operations.append(.create(path, data: value, mode: .persistent))
                }
            }
            return (operations, targets.map { ServerStatusChange(jobName: $0.paths.job, serverIp: $0.ip, status: status.rawValue) })
        }
        for change in changes {
            performed(change.status == ServerStatus.disabled.rawValue ? "disable" : "enable", job: change.jobName, "server \(change.serverIp)")
            logger.info("server status set", metadata: ["job": "\(change.jobName)", "server": "\(change.serverIp)", "status": "\(change.status)"])
        }
        return changes
    }

    /// Disables one sharding item (`sharding/{i}/disabled`): its owner skips it in normal fires.
    /// `item` must be in `0..<shardingTotalCount`.
    public func disableItem(job name: String, item: Int) async throws(OperationError) {
        let paths = try jobPaths(name)
        try await transact("disabling item \(item)", job: name) { () async throws -> ([RegistryOperation], Void) in
            let version = try await requireItem(item, of: paths)
            var operations: [RegistryOperation] = [.check(paths.config, version: version)]
            for path in [paths.sharding, paths.item(item), paths.itemDisabled(item)] {
                if try await registry.exists(path, watch: nil) == nil {
                    operations.append(.create(path, data: [], mode: .persistent))
                }
            }
            return (operations.count == 1 ? [] : operations, ())
        }
        performed("disable", job: name, "item \(item)")
        logger.info("item disabled", metadata: ["job": "\(name)", "item": "\(item)"])
    }

    /// Enables a sharding item disabled by ``disableItem(job:item:)``.
    public func enableItem(job name: String, item: Int) async throws(OperationError) {
        let paths = try jobPaths(name)
        try await transact("enabling item \(item)", job: name) { () async throws -> ([RegistryOperation], Void) in
            let version = try await requireItem(item, of: paths)
            guard try await registry.exists(paths.itemDisabled(item), watch: nil) != nil else { return ([], ()) }
            return ([.check(paths.config, version: version), .delete(paths.itemDisabled(item), version: nil)], ())
        }
        performed("enable", job: name, "item \(item)")
        logger.info("item enabled", metadata: ["job": "\(name)", "item": "\(item)"])
    }

    /// Asks instances to stop running jobs, selected as ElasticJob's `JobOperateAPI.shutdown`
    /// selects them (a job: its instances; a server: the instances on it; both: the job's instances
    /// on that server), narrowed to one instance id when `instance` is given. Each selected live
    /// instance is asked both ways, all in one transaction: its instance node is deleted
    /// (ElasticJob's way, which its nodes act on; a Shardwork host takes the deletion of its node
    /// by another client, while its session lives, for the same), and it gets a `shutdown/{id}`
    /// command node, which a Shardwork host acts on at once. Returns the instances asked.
    @discardableResult
    public func shutdown(job: String?, server: String?, instance: String?) async throws(OperationError) -> [ShutdownRequest] {
        guard job != nil || server != nil || instance != nil else {
            throw .invalid(job: nil, field: "job", "give a job, a server, an instance, or a combination of them")
        }
        let paths = try job.map { name throws(OperationError) in try jobPaths(name) }
        if let server { try checkNodeName(server, field: "server", job: job) }
        if let instance { try checkNodeName(instance, field: "instance", job: job) }
        let requests = try await transact("asking instances to shut down", job: job) { () async throws -> ([RegistryOperation], [ShutdownRequest]) in
            var jobs: [JobNodePath] = []
            if let paths {
                try await requireJob(paths)
                jobs = [paths]
            } else {
                jobs = try await jobNames().map(JobNodePath.init(job:))
            }
            var operations: [RegistryOperation] = []
            var requests: [ShutdownRequest] = []
            for candidate in jobs {
                let snapshot = try await JobSnapshot.read(from: registry, paths: candidate, instanceID: nil, watches: nil)
                let selected = snapshot.instances.values.filter { live in
                    (server == nil || live.serverIP == server) && (instance == nil || live.id == instance)
                }.map(\.id).sorted()
                guard !selected.isEmpty else { continue }
                if try await registry.exists(candidate.shutdown, watch: nil) == nil {
                    operations.append(.create(candidate.shutdown, data: [], mode: .persistent))
                }
                for id in selected {
                    requests.append(ShutdownRequest(jobName: candidate.job, instanceId: id))
                    // Only to an instance that is still there when the command is written.
                    operations.append(.delete(candidate.instance(id), version: nil))
                    if try await registry.exists(candidate.shutdown(id), watch: nil) == nil {
                        operations.append(.create(candidate.shutdown(id), data: [], mode: .persistent))
                    }
                }
            }
            if requests.isEmpty && (server != nil || instance != nil) {
                let wanted = [server.map { "on server \($0)" }, instance.map { "with id \($0)" }].compactMap { $0 }.joined(separator: " ")
                let scope = job.map { "of job '\($0)'" } ?? "of any job"
                throw OperationError.notFound(job: job, "no live instance \(scope) \(wanted); `job` lists a job's instances")
            }
            return (operations, requests)
        }
        for request in requests {
            performed("shutdown", job: request.jobName, "instance \(request.instanceId)")
            logger.info("an instance was asked to stop the job", metadata: ["job": "\(request.jobName)", "instance": "\(request.instanceId)"])
        }
        return requests
    }

    /// Removes a job from the registry: ElasticJob's `removeJobConfiguration`, which deletes the
    /// whole `/{job}` subtree. All nodes go in one transaction. Returns the nodes removed, as
    /// ``dump(job:)`` listed them just before.
    @discardableResult
    public func removeJob(_ name: String) async throws(OperationError) -> [DumpEntry] {
        let paths = try jobPaths(name)
        let removed = try await transact("removing the job", job: name) { () async throws -> ([RegistryOperation], [DumpEntry]) in
            let entries = try await readTree(paths.root)
            guard !entries.isEmpty else { throw Self.noSuchJob(name) }
            guard entries.count <= Self.largestRemovalTransaction else {
                // Too many nodes for one request (ZooKeeper takes 1 MB): the configuration goes
                // first, so that every host and listing sees the job gone at once, then the rest
                // node by node.
                try await registry.deleteIfPresent(paths.config)
                try await registry.deleteRecursively(paths.root)
                return ([], entries)
            }
            // Depth first, reversed: every node after everything under it.
            return (entries.reversed().map { .delete($0.path, version: nil) }, entries)
        }
        performed("remove", job: name, "\(removed.count) node(s)")
        logger.info("job removed from the cluster", metadata: ["job": "\(name)", "nodes": "\(removed.count)"])
        return removed
    }

    // MARK: Configuration

    /// The job's type, as its root node holds it (ElasticJob's job class or type name).
    public func jobType(of name: String) async throws(OperationError) -> String {
        let paths = try jobPaths(name)
        return try await perform("reading the job type", job: name) {
            guard let root = try await registry.textIfPresent(paths.root) else { throw Self.noSuchJob(name) }
            return root.text
        }
    }

    /// The job's configuration as stored: ElasticJob's `getJobConfiguration`, plus the text and
    /// the version to update it against.
    public func configuration(of name: String) async throws(OperationError) -> StoredJobConfiguration {
        let paths = try jobPaths(name)
        return try await perform("reading the configuration", job: name) {
            guard let root = try await registry.textIfPresent(paths.root), let stored = try await registry.textIfPresent(paths.config) else {
                throw Self.noSuchJob(name)
            }
            return Self.stored(stored.text, version: stored.stat.version, jobType: root.text, paths: paths)
        }
    }

    /// Replaces a job's configuration: ElasticJob's `updateJobConfiguration`, with checks and a
    /// version. The job must exist; its `jobType` cannot change (the job's root node holds it, and
    /// hosts chose their job type by it: remove the job and add it again instead); the fields are
    /// checked by the same code that reads a host's file, and the cron expression and time zone
    /// parsed. The write is conditional on the version read now, or on `expectedVersion` (the
    /// ``StoredJobConfiguration/version`` the change was based on): if someone else updated the
    /// job meanwhile, nothing is written and the error is a conflict. Returns what is stored now.
    @discardableResult
    public func updateConfiguration(
        _ configuration: JobConfiguration, expectedVersion: Int32? = nil
    ) async throws(OperationError) -> StoredJobConfiguration {
        let name = configuration.jobName
        let paths = try jobPaths(name, field: "jobName")
        let updated = try await perform("updating the configuration", job: name) {
            guard let root = try await registry.textIfPresent(paths.root), let stored = try await registry.textIfPresent(paths.config) else {
                throw OperationError.notFound(job: name, "no job named '\(name)' to update; add it with `addJob`, or check the name with `jobs`")
            }
            guard JobTypeName.matches(root.text, configuration.jobType, jobClasses: jobClasses) else {
                throw OperationError.invalid(
                    job: name, field: "jobType",
                    "the job's type is '\(root.text)' and cannot be changed to '\(configuration.jobType)' by an update "
                        + "(hosts run the job by the type in \(paths.root)); keep '\(root.text)', or remove the job and add it again")
            }
            // The stored type's spelling (ElasticJob's `SCRIPT`) stays, as the root node keeps it.
            var configuration = configuration
            configuration.jobType = root.text
            let (yaml, checked) = try Self.validated(configuration, compatibility: compatibility, stored: stored.text)
            let version = expectedVersion ?? stored.stat.version
            let results: [RegistryOperationResult]
            do throws(RegistryError) {
                results = try await registry.multi([
                    .check(paths.root, version: root.stat.version),
                    .setData(paths.config, data: [UInt8](utf8: yaml), version: version),
                ])
            } catch {
                guard case .transactionFailed(let index, let underlying) = error.code else { throw error }
                if underlying.isNoNode {
                    throw OperationError.notFound(job: name, "the job was removed while it was being updated; add it again with `addJob`")
                }
                guard underlying == .badVersion else { throw error }
                if index == 0 {
                    throw OperationError.conflict(job: name, "the job's type was changed while it was being updated; read the job again and retry")
                }
                let current = try await registry.exists(paths.config, watch: nil)?.version
                throw OperationError.conflict(
                    job: name,
                    "the configuration was changed by someone else: the update was based on version \(version), "
                        + "the registry holds version \(current.map(String.init) ?? "none"); read it again, reapply the change and send it with the new version")
            }
            guard case .set(let stat) = results.last else { throw RegistryError(.other("the update returned no stat"), path: paths.config) }
            return StoredJobConfiguration(configuration: checked, yaml: yaml, version: stat.version)
        }
        performed("configure", job: name, "version \(updated.version)")
        logger.info("configuration updated", metadata: ["job": "\(name)", "version": "\(updated.version)"])
        return updated
    }

    /// Adds a job to the running cluster: `/{job}` (its type), `/{job}/config` (ElasticJob's YAML)
    /// and `/{job}/dynamic` (who added it and when, as JSON) in one transaction. Hosts that can run
    /// the job adopt it through their watches. The configuration is checked as
    /// ``updateConfiguration(_:expectedVersion:)`` checks it; a job that exists (has a
    /// configuration) is a conflict. Returns what is stored.
    @discardableResult
    public func addJob(_ configuration: JobConfiguration, addedBy: String) async throws(OperationError) -> StoredJobConfiguration {
        let name = configuration.jobName
        let paths = try jobPaths(name, field: "jobName")
        guard !addedBy.trimmed.isEmpty else {
            throw .invalid(job: name, field: "addedBy", "say who adds the job (a user or tool name), for the record in \(paths.dynamic)")
        }
        let (yaml, checked) = try Self.validated(configuration, compatibility: compatibility, stored: nil)
        let record = DynamicJobRecord(addedBy: addedBy, addedAt: now().formatted(.iso8601))
        let exists = OperationError.conflict(
            job: name, "a job named '\(name)' exists already; change it with `updateConfiguration`, or remove it first with `removeJob`")
        try await perform("adding the job", job: name) {
            var operations: [RegistryOperation] = []
            let type = [UInt8](utf8: compatibility.storedJobType(configuration.jobType))
            if let root = try await registry.textIfPresent(paths.root) {
                // A job node without a configuration (left by an interrupted registration): take it.
                if try await registry.exists(paths.config, watch: nil) != nil { throw exists }
                operations.append(.setData(paths.root, data: type, version: root.stat.version))
            } else {
                operations.append(.create(paths.root, data: type, mode: .persistent))
            }
            operations.append(.create(paths.config, data: [UInt8](utf8: yaml), mode: .persistent))
            let marker = [UInt8](utf8: record.json)
            if let dynamic = try await registry.exists(paths.dynamic, watch: nil) {
                operations.append(.setData(paths.dynamic, data: marker, version: dynamic.version))
            } else {
                operations.append(.create(paths.dynamic, data: marker, mode: .persistent))
            }
            do throws(RegistryError) {
                try await registry.multi(operations)
            } catch {
                guard case .transactionFailed(_, let underlying) = error.code, underlying == .nodeExists || underlying == .badVersion else {
                    throw error
                }
                throw exists  // added by someone else meanwhile
            }
        }
        performed("add", job: name, "by \(addedBy)")
        logger.info("job added to the cluster", metadata: ["job": "\(name)", "added.by": "\(LogText.escaped(addedBy))"])
        return StoredJobConfiguration(configuration: checked, yaml: yaml, version: 0)
    }

    // MARK: Dump

    /// Every node under `/{job}` and its value, depth first with children in name order: ElasticJob's
    /// dump (reference §4.16), read from the registry rather than an instance's cache, and without
    /// masking IP addresses.
    public func dump(job name: String) async throws(OperationError) -> [DumpEntry] {
        let paths = try jobPaths(name)
        return try await perform("dumping the job", job: name) {
            let entries = try await readTree(paths.root)
            guard !entries.isEmpty else { throw Self.noSuchJob(name) }
            return entries
        }
    }

    // MARK: Reading

    /// What the operations read about one job.
    private struct JobView {
        var brief: JobBrief
        var configuration: JobConfiguration?
        var snapshot: JobSnapshot
        var incapable: [IncapableInstance]
        var dynamicRecord: DynamicJobRecord?
    }

    /// The job at `paths`, or `nil` when it has no configuration (ElasticJob lists only those).
    private func readJob(_ paths: JobNodePath) async throws -> JobView? {
        guard let root = try await registry.textIfPresent(paths.root), let stored = try await registry.textIfPresent(paths.config) else {
            return nil
        }
        let configuration = Self.stored(stored.text, version: stored.stat.version, jobType: root.text, paths: paths)
        let snapshot = try await JobSnapshot.read(from: registry, paths: paths, instanceID: nil, watches: nil)
        var incapable: [IncapableInstance] = []
        for id in try await registry.childrenIfPresent(paths.incapable).sorted() {
            if let reason = try await registry.string(paths.incapable(id)) {
                incapable.append(IncapableInstance(instanceId: id, reason: reason))
            }
        }
        let dynamic = try await registry.string(paths.dynamic)
        let job = configuration.configuration
        let brief = JobBrief(
            jobName: paths.job, jobType: root.text, description: job?.description ?? "", cron: job?.cron,
            instanceCount: snapshot.instances.count, shardingTotalCount: job?.shardingTotalCount ?? 0,
            status: .of(snapshot), dynamic: dynamic != nil, incapableInstances: incapable.map(\.instanceId),
            configurationError: configuration.configurationError)
        return JobView(
            brief: brief, configuration: job, snapshot: snapshot, incapable: incapable,
            dynamicRecord: dynamic.flatMap(DynamicJobRecord.parse))
    }

    /// The children of `/`: every job, in Java's string order as ElasticJob sorts job names.
    private func jobNames() async throws -> [String] {
        try await registry.childrenIfPresent("/").sorted(by: CoordinationRules.javaPrecedes)
    }

    /// The node at `path` and every node under it, depth first, children in name order; empty when
    /// `path` does not exist. A node deleted while it is read is left out.
    private func readTree(_ path: String) async throws -> [DumpEntry] {
        var entries: [DumpEntry] = []
        var stack = [path]
        while let next = stack.popLast() {
            guard let node = try await registry.textIfPresent(next) else { continue }
            entries.append(DumpEntry(path: next, value: node.text))
            let children = try await registry.childrenIfPresent(next).sorted()
            stack.append(contentsOf: children.reversed().map { next + "/" + $0 })
        }
        return entries
    }

    /// Stored configuration text, read with the job type of the root node.
    private static func stored(_ text: String, version: Int32, jobType: String, paths: JobNodePath) -> StoredJobConfiguration {
        do {
            let configuration = try ElasticJobYAML.decode(text, jobType: jobType, job: paths.job)
            return StoredJobConfiguration(configuration: configuration, yaml: text, version: version)
        } catch {
            return StoredJobConfiguration(
                configuration: nil, yaml: text, version: version,
                configurationError: "\(error); replace it with `updateConfiguration`")
        }
    }

    /// Throws unless the job has a configuration.
    private func requireJob(_ paths: JobNodePath) async throws {
        guard try await registry.exists(paths.config, watch: nil) != nil else { throw Self.noSuchJob(paths.job) }
    }

    /// Throws unless `item` is one of the job's items; returns the version of the configuration
    /// that says so, for the write to depend on.
    private func requireItem(_ item: Int, of paths: JobNodePath) async throws -> Int32 {
        guard let root = try await registry.textIfPresent(paths.root), let stored = try await registry.textIfPresent(paths.config) else {
            throw Self.noSuchJob(paths.job)
        }
        let read = Self.stored(stored.text, version: stored.stat.version, jobType: root.text, paths: paths)
        guard let total = read.configuration?.shardingTotalCount else {
            throw OperationError.conflict(
                job: paths.job, "the job's items are unknown because its stored configuration cannot be read: "
                    + "\(read.configurationError ?? ""); fix the configuration first")
        }
        guard (0..<total).contains(item) else {
            throw OperationError.invalid(
                job: paths.job, field: "item",
                "\(item) is not an item of the job: its items are 0..<\(total) (shardingTotalCount is \(total)); give an item from 0 to \(total - 1)")
        }
        return stored.stat.version
    }

    static func noSuchJob(_ name: String) -> OperationError {
        .notFound(job: name, "no job named '\(name)' in the registry; `jobs` lists the jobs")
    }

    // MARK: Checks

    /// The configuration checked by the code that reads a host's file (through ElasticJob's YAML,
    /// exactly as hosts will read it from the registry), and its cron expression and time zone
    /// parsed as the host parses them. Written for `compatibility`'s nodes: the time zone as they
    /// read it (a GMT offset; refused when none is exact), the executor key as `stored` (the
    /// configuration there now) spells it, or as the target does. Returns the YAML to store and the
    /// configuration as hosts will read it.
    static func validated(
        _ configuration: JobConfiguration, compatibility: ElasticJobCompatibility = .none, stored: String? = nil
    ) throws(OperationError) -> (yaml: String, configuration: JobConfiguration) {
        let name = configuration.jobName
        var configuration = configuration
        do {
            configuration.timeZone = try compatibility.storedTimeZone(configuration.timeZone)
        } catch {
            throw .invalid(job: name, field: "timeZone", error.description)
        }
        let yaml = ElasticJobYAML.encode(configuration, executorKey: .toWrite(stored: stored, target: compatibility))
        let checked: JobConfiguration
        do {
            checked = try ElasticJobYAML.decode(yaml, jobType: configuration.jobType, job: name)
        } catch {
            // The reader names fields of a file's job list (`jobs[0].jobName`); here there is one job.
            let field = error.field.hasPrefix("jobs[0].") ? String(error.field.dropFirst("jobs[0].".count)) : error.field
            throw .invalid(job: name, field: field.isEmpty ? "configuration" : field, error.message + "; correct it and send the configuration again")
        }
        var zone = TimeZone.gmt
        if let timeZone = checked.timeZone, !timeZone.isEmpty {
            do {
                zone = try CronExpression.timeZone(named: timeZone)
            } catch {
                throw .invalid(job: name, field: "timeZone", error.description)
            }
        }
        if let cron = checked.cron, !cron.isEmpty {
            do {
                _ = try CronExpression(cron, timeZone: zone)
            } catch {
                throw .invalid(job: name, field: "cron", error.description)
            }
        }
        return (yaml, checked)
    }

    /// The paths of a job named by a caller, after checking that the name is one node name.
    private func jobPaths(_ name: String, field: String = "job") throws(OperationError) -> JobNodePath {
        try checkNodeName(name, field: field, job: name)
        return JobNodePath(job: name)
    }

    private func checkNodeName(_ name: String, field: String, job: String?) throws(OperationError) {
        guard !name.isEmpty, !name.contains("/"), RegistryPath.isValid("/" + name) else {
            throw .invalid(job: job, field: field, "'\(name)' is not a registry node name: give a non-empty name without '/'")
        }
    }

    // MARK: Running

    /// Runs `body`, turning registry errors into operation errors that say what was being done.
    /// How long an operation waits before each new try after losing the registry connection: up to
    /// 3.5 s in all, within the shortest session timeout a host uses.
    static let connectionRetryWaits: [Duration] = [.milliseconds(500), .seconds(1), .seconds(2)]

    private func perform<Value>(
        _ action: String, job: String?, _ body: () async throws -> Value
    ) async throws(OperationError) -> Value {
        do {
            // A connection lost mid-request (a ZooKeeper server that paused, a network blip) is
            // retried while the session lasts, as Curator's retry loop does for ElasticJob: every
            // body reads afresh, and its writes are conditional or planned again from a new read.
            var waits = Self.connectionRetryWaits[...]
            while true {
                do {
                    return try await body()
                } catch let error as RegistryError where error.code == .connectionLoss && !waits.isEmpty {
                    logger.debug(
                        "the connection to the registry was lost; trying again",
                        metadata: ["action": "\(action)", "error": "\(LogText.escaped("\(error)"))"])
                    try? await Task.sleep(for: waits.removeFirst())
                }
            }
        } catch let error as OperationError {
            throw error
        } catch let error as RegistryError {
            throw .registry(error, job: job, while: action)
        } catch {
            throw OperationError(.registryFailure, job: job, message: "\(action) failed: \(error)")
        }
    }

    /// Plans a write from what it reads and applies it as one transaction. The plan makes its
    /// writes conditional on what it read (checks, versions, creates of absent nodes); when a
    /// concurrent change makes the transaction fail, it plans again from a fresh read, up to
    /// ``attempts`` times. An empty plan writes nothing.
    private func transact<Value>(
        _ action: String, job: String?, _ plan: () async throws -> ([RegistryOperation], Value)
    ) async throws(OperationError) -> Value {
        try await perform(action, job: job) {
            for attempt in 1...Self.attempts {
                let (operations, result) = try await plan()
                if operations.isEmpty { return result }
                do throws(RegistryError) {
                    try await registry.multi(operations)
                    return result
                } catch {
                    guard Self.isConcurrentChange(error), attempt < Self.attempts else { throw error }
                    logger.debug(
                        "the registry changed under the transaction; planning again",
                        metadata: ["action": "\(action)", "error": "\(LogText.escaped("\(error)"))"])
                }
            }
            throw OperationError.conflict(job: job, "the job kept changing while \(action); retry")
        }
    }

    /// A transaction that failed because a node it depends on changed since it was read.
    private static func isConcurrentChange(_ error: RegistryError) -> Bool {
        guard case .transactionFailed(_, let underlying) = error.code else { return false }
        return [.noNode, .nodeExists, .badVersion, .notEmpty].contains(underlying)
    }
}
