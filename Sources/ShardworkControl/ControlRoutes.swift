import Foundation
import Hummingbird
import Logging
import ShardworkCore
import ShardworkHistory

/// An error answer: `{"error": {"status": 422, "message": "...", "job": "...", "field": "..."}}`.
struct ControlError: HTTPResponseError {
    var status: HTTPResponse.Status
    var message: String
    var job: String?
    var field: String?

    struct Body: Encodable {
        struct Detail: Encodable {
            var status: Int
            var message: String
            var job: String?
            var field: String?
        }
        var error: Detail
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = Body(error: .init(status: status.code, message: message, job: job, field: field))
        return ControlJSON.response(body, status: status)
    }

    static func badRequest(_ message: String, field: String? = nil) -> ControlError {
        ControlError(status: .badRequest, message: message, field: field)
    }

    /// A configuration that does not read or does not prepare: 422, naming the job and the field.
    init(_ error: HostConfigurationError) {
        var message = error.message
        if let location = error.location { message += " (at \(location) of the request body)" }
        self.init(status: .unprocessableContent, message: message, job: error.job, field: error.field.isEmpty ? nil : error.field)
    }

    init(_ error: OperationError) {
        self.init(
            status: HTTPResponse.Status(code: error.httpStatus), message: error.message, job: error.job, field: error.field)
    }

    init(status: HTTPResponse.Status, message: String, job: String? = nil, field: String? = nil) {
        self.status = status
        self.message = message
        self.job = job
        self.field = field
    }
}

enum ControlJSON {
    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = (try? encoder.encode(value)) ?? Data(#"{"error":{"status":500,"message":"the answer could not be encoded"}}"#.utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Array(data) + [0x0A])))
    }
}

/// What the job operations that change something answer.
struct Done: Encodable {
    var ok = true
    var message: String
    var instances: [String]?
    var warning: String?
    var version: Int32?
}

/// The routes of the control API, version 1. Every route answers JSON; errors are ``ControlError``.
struct ControlRoutes: Sendable {
    let host: ShardworkHost
    let history: HistoryAccess
    let logger: Logger

    /// Largest job configuration accepted.
    static let maximumConfigurationBytes = 1 << 20
    /// Largest plugin file accepted.
    static let maximumPluginBytes = 512 << 20

    var operations: ClusterOperations { host.operations }

    func add(to router: Router<BasicRequestContext>) {
        let v1 = router.group("v1")
        v1.get("jobs") { _, _ in try await answer { ControlJSON.response(try await operations.jobs()) } }
        v1.post("jobs") { request, context in try await answer { try await addJob(request, context) } }
        v1.get("jobs/:job") { _, context in
            try await answer { ControlJSON.response(try await operations.job(try job(context))) }
        }
        v1.delete("jobs/:job") { _, context in
            try await answer {
                let name = try job(context)
                let removed = try await operations.removeJob(name)
                logger.notice("control API: job removed from the cluster", metadata: ["job": "\(name)"])
                return ControlJSON.response(removed)
            }
        }
        v1.post("jobs/:job/trigger") { _, context in
            try await answer {
                let name = try job(context)
                try await operations.trigger(job: name)
                return ControlJSON.response(Done(message: "job '\(name)' triggered on every instance"))
            }
        }
        for (action, enable) in [("disable", false), ("enable", true)] {
            v1.post("jobs/:job/\(action)") { request, context in
                try await answer {
                    let name = try job(context)
                    let server = request.uri.queryParameters.get("server")
                    if enable {
                        try await operations.enable(job: name, server: server)
                    } else {
                        try await operations.disable(job: name, server: server)
                    }
                    return ControlJSON.response(Done(message: "job '\(name)' \(action)d" + (server.map { " on server \($0)" } ?? " on every server")))
                }
            }
            v1.post("jobs/:job/items/:item/\(action)") { _, context in
                try await answer {
                    let name = try job(context)
                    guard let item = context.parameters.get("item", as: Int.self) else {
                        throw ControlError.badRequest("the item must be a whole number", field: "item")
                    }
                    if enable {
                        try await operations.enableItem(job: name, item: item)
                    } else {
                        try await operations.disableItem(job: name, item: item)
                    }
                    return ControlJSON.response(Done(message: "item \(item) of job '\(name)' \(action)d"))
                }
            }
            v1.post("servers/:server/\(action)") { _, context in
                try await answer {
                    let server = try context.parameters.require("server")
                    if enable {
                        try await operations.enable(job: nil, server: server)
                    } else {
                        try await operations.disable(job: nil, server: server)
                    }
                    return ControlJSON.response(Done(message: "server \(server) \(action)d for every job"))
                }
            }
        }
        v1.post("jobs/:job/shutdown") { request, context in
            try await answer {
                let name = try job(context)
                let query = request.uri.queryParameters
                let asked = try await operations.shutdown(job: name, server: query.get("server"), instance: query.get("instance"))
                return ControlJSON.response(Done(message: "asked \(asked.count) instances to stop job '\(name)'", instances: asked.map(\.instanceId)))
            }
        }
        v1.post("servers/:server/shutdown") { _, context in
            try await answer {
                let server = try context.parameters.require("server")
                let asked = try await operations.shutdown(job: nil, server: server, instance: nil)
                return ControlJSON.response(Done(message: "asked \(Set(asked.map(\.instanceId)).count) instances on \(server) to stop \(asked.count) jobs", instances: Self.describe(asked)))
            }
        }
        v1.post("instances/:instance/shutdown") { _, context in
            try await answer {
                let instance = try context.parameters.require("instance")
                let asked = try await operations.shutdown(job: nil, server: nil, instance: instance)
                return ControlJSON.response(Done(message: "asked instance \(instance) to stop \(asked.count) jobs", instances: Self.describe(asked)))
            }
        }
        v1.get("jobs/:job/config") { _, context in
            try await answer { ControlJSON.response(try await operations.configuration(of: try job(context))) }
        }
        v1.put("jobs/:job/config") { request, context in try await answer { try await updateConfiguration(request, context) } }
        v1.get("jobs/:job/dump") { _, context in
            try await answer { ControlJSON.response(try await operations.dump(job: try job(context))) }
        }
        v1.get("history") { _, _ in try await answer { try historyFigures() } }
        v1.get("executions") { request, _ in try await answer { try await executions(request, job: nil) } }
        v1.get("jobs/:job/executions") { request, context in try await answer { try await executions(request, job: try job(context)) } }
        v1.get("servers") { _, _ in try await answer { ControlJSON.response(try await operations.servers()) } }
        v1.get("plugins") { _, _ in try await answer { ControlJSON.response(host.pluginGenerations()) } }
        v1.post("plugins") { request, context in try await answer { try await loadPlugin(request, context) } }
    }

    // MARK: Routes with bodies

    private func addJob(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let text = try await body(request, limit: Self.maximumConfigurationBytes)
        let configuration = try readJob(text)
        let missing = try await validate(configuration, request)
        let added = try await operations.addJob(configuration, addedBy: "control API of \(host.services.instance.id)")
        logger.notice("control API: job added to the cluster", metadata: ["job": "\(configuration.jobName)"])
        _ = added
        return ControlJSON.response(
            Done(message: "job '\(configuration.jobName)' added; every host that can run it starts firing it", warning: missing.map(Self.missingWarning)),
            status: .created)
    }

    private func updateConfiguration(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let name = try job(context)
        let text = try await body(request, limit: Self.maximumConfigurationBytes)
        // A body without `jobType` (what `job config` prints: the type lives in the job's root
        // node) keeps the job's type.
        // A job of a mapped ElasticJob class is checked as the job type this host runs it as.
        let storedType = try? await operations.jobType(of: name)
        let configuration = try readJob(text, defaultJobType: storedType.map(host.configuration.host.jobType(forStored:)))
        guard configuration.jobName == name else {
            throw ControlError(
                status: .unprocessableContent,
                message: "the body names job '\(configuration.jobName)' but the path names '\(name)'; a job cannot be renamed (add a new job and remove the old one)",
                job: name, field: "jobName")
        }
        var expected: Int32?
        if let match = request.headers[.ifMatch] {
            guard let version = Int32(match.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))) else {
                throw ControlError.badRequest("If-Match must be the configuration's version, a whole number, got '\(match)'", field: "If-Match")
            }
            expected = version
        }
        // A body that names the ElasticJob class is checked as the job type this host runs it as.
        var checked = configuration
        checked.jobType = host.configuration.host.jobType(forStored: configuration.jobType)
        let missing = try await validate(checked, request)
        let version = try await operations.updateConfiguration(configuration, expectedVersion: expected).version
        logger.notice("control API: job configuration changed", metadata: ["job": "\(name)", "version": "\(version)"])
        return ControlJSON.response(
            Done(message: "configuration of job '\(name)' changed; every instance applies it", warning: missing.map(Self.missingWarning), version: version))
    }

    private func loadPlugin(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let name = request.uri.queryParameters.get("name") ?? "plugin.so"
        guard !name.contains("/"), name.hasSuffix(".so"), name.count <= 200 else {
            throw ControlError.badRequest("name must be the plugin's file name ending in .so, without a directory, got '\(name)'", field: "name")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maximumPluginBytes)
        } catch {
            throw ControlError(status: .contentTooLarge, message: "a plugin file is at most \(Self.maximumPluginBytes) bytes")
        }
        guard buffer.readableBytes > 0 else { throw ControlError.badRequest("the request body must be the plugin file (a shared object)") }
        let upload = try host.stagePluginUpload(bytes: Array(buffer.readableBytesView), name: name)
        defer { try? FileManager.default.removeItem(atPath: (upload as NSString).deletingLastPathComponent) }
        switch await host.loadPlugin(file: upload, label: "\(name) (uploaded)") {
        case .success(let outcome):
            // The plugin's name and version are the uploaded file's own: outside text.
            logger.notice(
                outcome.alreadyLoaded ? "control API: uploaded plugin is loaded already; nothing changed" : "control API: uploaded plugin loaded",
                metadata: [
                    "plugin": "\(LogText.escaped(outcome.plugin))", "version": "\(LogText.escaped(outcome.version))",
                    "generation": "\(outcome.generation)", "file": "\(LogText.escaped(outcome.file))",
                ])
            return ControlJSON.response(outcome, status: .created)
        case .failure(let refusal):
            throw ControlError(status: refusal.code == .generationLimit ? .conflict : .unprocessableContent, message: refusal.description, field: "plugin")
        }
    }

    // MARK: Helpers

    /// The executions the history holds, newest first (docs/history.md): 503 when this host keeps no
    /// history, 400 naming a parameter it cannot take.
    private func executions(_ request: Request, job: String?) async throws -> Response {
        let store: any HistoryStore
        switch history {
        case .on(let on, _, _):
            store = on
        case .off(let reason):
            throw ControlError(status: .serviceUnavailable, message: "execution history is off on this host: \(reason)", field: "tracing")
        }
        var parameters: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { parameters[String(name)] = String(value) }
        let query: ExecutionQuery
        do {
            query = try ExecutionQuery.parse(parameters, job: job, now: host.services.clock.now())
        } catch {
            throw ControlError.badRequest(error.message, field: error.parameter)
        }
        do {
            let records = try await store.executions(query)
            return ControlJSON.response(ExecutionPage(executions: records.map(ExecutionView.init), limit: query.limit, offset: query.offset))
        } catch {
            throw ControlError(status: .serviceUnavailable, message: "cannot read the history: \(error)", field: "tracing")
        }
    }

    /// How the history's writer is doing: rows queued, written and dropped (docs/history.md); 503
    /// when this host keeps no history.
    private func historyFigures() throws -> Response {
        switch history {
        case .on(_, let writer, let database):
            return ControlJSON.response(HistoryFigures(writer: writer, database: database))
        case .off(let reason):
            throw ControlError(status: .serviceUnavailable, message: "execution history is off on this host: \(reason)", field: "tracing")
        }
    }

    private func job(_ context: BasicRequestContext) throws -> String {
        try context.parameters.require("job")
    }

    private func body(_ request: Request, limit: Int) async throws -> String {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw ControlError(status: .contentTooLarge, message: "the request body is larger than \(limit) bytes")
        }
        guard let text = String(bytes: buffer.readableBytesView, encoding: .utf8) else {
            throw ControlError.badRequest("the request body is not UTF-8 text")
        }
        return text
    }

    /// A job as JSON or YAML, read with the rules of the host configuration's `jobs:` entries.
    private func readJob(_ text: String, defaultJobType: String? = nil) throws -> JobConfiguration {
        do {
            return try HostConfigurationReader.parseJob(text, source: "request body", defaultJobType: defaultJobType)
        } catch {
            if error.job == nil, error.field.isEmpty || error.message.hasPrefix("invalid YAML") {
                throw ControlError(status: .badRequest, message: "the body is not a job in JSON or YAML: \(error.message)")
            }
            throw ControlError(error)
        }
    }

    private func validate(_ job: JobConfiguration, _ request: Request) async throws -> String? {
        let allowMissing = ["true", "1", "yes"].contains(request.uri.queryParameters.get("allowMissingPlugins")?.lowercased() ?? "")
        do {
            return try await host.validate(job, allowMissingPlugins: allowMissing)
        } catch {
            var failure = ControlError(error)
            if host.missingProviders(job) != nil {
                failure.message += " (if other hosts of the cluster have this plugin, repeat with allowMissingPlugins=true)"
            }
            throw failure
        }
    }

    /// `job: instance` for each shutdown request.
    static func describe(_ requests: [ShutdownRequest]) -> [String] {
        requests.map { "\($0.jobName): \($0.instanceId)" }
    }

    static func missingWarning(_ missing: String) -> String {
        "the host that served this request cannot run the job (\(missing)); hosts that have the plugins run it"
    }

    /// Runs a route, turning every error into a JSON answer.
    private func answer(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let error as ControlError {
            throw error
        } catch let error as OperationError {
            throw ControlError(error)
        } catch let error as HostConfigurationError {
            throw ControlError(error)
        } catch let error as HTTPError {
            throw ControlError(status: error.status, message: error.body ?? "\(error.status)")
        } catch {
            logger.error("control API: a request failed", metadata: ["error": "\(LogText.escaped("\(error)"))"])
            throw ControlError(status: .internalServerError, message: "\(error)")
        }
    }
}
