import Foundation
import Hummingbird
public import Logging
public import ServiceLifecycle
public import ShardworkCore
public import ShardworkHistory

/// The control API of a running host (docs/operations.md): JSON over HTTP on a configured address,
/// loopback by default, every request with the configured bearer token.
///
/// Job operations act on the registry (``ClusterOperations``), so with ZooKeeper they act on the
/// whole cluster, whichever host serves the request; plugin operations act on the host that serves
/// it.
public struct ControlServer: Service {
    let host: ShardworkHost
    let settings: APISettings
    let history: HistoryAccess
    let logger: Logger
    /// Called with the bound port once the server listens (the configured one, or the one picked for 0).
    let onListening: @Sendable (Int) -> Void

    /// `history`: what the executions routes read (docs/history.md).
    public init(
        host: ShardworkHost, settings: APISettings, history: HistoryAccess = .off(reason: "the host has no tracing: section"), logger: Logger,
        onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.host = host
        self.settings = settings
        self.history = history
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestMetricsMiddleware())
        router.add(middleware: BearerTokenMiddleware(token: settings.token ?? ""))
        router.add(middleware: JSONErrorMiddleware())
        ControlRoutes(host: host, history: history, logger: logger).add(to: router)
        var serverLogger = logger
        serverLogger[metadataKey: "component"] = "control-api"
        let settings = self.settings
        let logger = self.logger
        let onListening = self.onListening
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "shardwork"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                logger.info("control API listening", metadata: ["url": "http://\(settings.host):\(port)/v1"])
                onListening(port)
            },
            logger: serverLogger)
        do {
            // When the host begins to stop, the requests being served must end: a hot-load waiting
            // on a trial load would otherwise hold the server's drain, and the host's with it.
            let host = self.host
            try await withGracefulShutdownHandler {
                try await app.run()
            } onGracefulShutdown: {
                host.abandonChildProcesses()
            }
        } catch {
            throw ControlServerError(description: "api.address \(settings.host):\(settings.port): cannot serve the control API: \(error)")
        }
    }
}

/// The control API could not be served (its address taken, say): the host stops with this.
public struct ControlServerError: Error, CustomStringConvertible {
    public var description: String
}

/// Errors that no route turned into JSON (an unknown route, a wrong method) are answered as JSON too.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ControlError {
            throw error
        } catch let error as HTTPError {
            let message = error.status == .notFound
                ? "no such route: \(request.method) \(request.uri.path) (the routes are listed in docs/operations.md)"
                : error.body ?? "\(error.status)"
            throw ControlError(status: error.status, message: message)
        }
    }
}

/// Every request carries `Authorization: Bearer {api.token}`; anything else is answered 401 before
/// it reaches a route. The comparison takes the same time wherever the tokens differ.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]

    init(token: String) { self.token = Array(token.utf8) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard !token.isEmpty, header.hasPrefix(prefix), Self.equal(Array(header.dropFirst(prefix.count).utf8), token) else {
            var response = try ControlError(
                status: .unauthorized,
                message: header.isEmpty
                    ? "missing bearer token: send `Authorization: Bearer <api.token>` (the CLI reads --token or SHARDWORK_TOKEN)"
                    : "the bearer token does not match this host's api.token"
            ).response(from: request, context: context)
            response.headers[.wwwAuthenticate] = "Bearer realm=\"shardwork\""
            return response
        }
        return try await next(request, context)
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = 0
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0 && a.count == b.count
    }
}
