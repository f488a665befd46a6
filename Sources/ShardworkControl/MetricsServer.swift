import CoreMetrics
import Foundation
import Hummingbird
public import Logging
public import Prometheus
public import ServiceLifecycle
public import ShardworkCore

/// The metrics and health endpoint of `shardwork run` (docs/metrics.md), on a listener of its own:
///
/// - `GET /metrics`: every metric in Prometheus's text format (with `metrics.requireToken`, only
///   with the control API's bearer token);
/// - `GET /healthz`: 200 while the process serves;
/// - `GET /readyz`: 200 when the host is ready for work (``ShardworkHost/readiness()``), else 503,
///   with the reasons, as JSON.
public struct MetricsServer: Service {
    let host: ShardworkHost
    let metrics: HostMetrics
    let registry: PrometheusCollectorRegistry
    let settings: MetricsSettings
    let token: String?
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    /// `token`: what a scrape must carry when `settings.requireToken` (the control API's).
    public init(
        host: ShardworkHost, metrics: HostMetrics, registry: PrometheusCollectorRegistry, settings: MetricsSettings, token: String?,
        logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.host = host
        self.metrics = metrics
        self.registry = registry
        self.settings = settings
        self.token = token
        self.logger = logger
        self.onListening = onListening
    }

    /// A Prometheus back end for swift-metrics with the histogram buckets of ``MetricNames``:
    /// bootstrap the metrics system with its factory before the host and its registry are made.
    public static func prometheusFactory(_ registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = MetricNames.histogramBuckets
        return factory
    }

    public func run() async throws {
        let router = Router(context: BasicRequestContext.self)
        let host = self.host
        let metrics = self.metrics
        let registry = self.registry
        router.get("healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}\n")))
        }
        router.get("readyz") { _, _ in
            let readiness = host.readiness()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let body = (try? encoder.encode(readiness)) ?? Data("{}".utf8)
            return Response(
                status: readiness.ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        let scrape = router.group("metrics")
        if settings.requireToken, let token {
            scrape.add(middleware: BearerTokenMiddleware(token: token))
        }
        scrape.get { _, _ in
            metrics.sample()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        var serverLogger = logger
        serverLogger[metadataKey: "component"] = "metrics"
        let settings = self.settings
        let logger = self.logger
        let onListening = self.onListening
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "shardwork"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                logger.info("metrics listening", metadata: ["url": "http://\(settings.host):\(port)/metrics"])
                onListening(port)
            },
            logger: serverLogger)
        do {
            try await app.run()
        } catch {
            throw ControlServerError(description: "metrics.address \(settings.host):\(settings.port): cannot serve the metrics: \(error)")
        }
    }
}

/// Counts and times every control API request by its route's pattern (`/v1/jobs/{job}`, never the
/// job's name: the label set stays bounded), method and status (docs/metrics.md).
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        do {
            let response = try await next(request, context)
            record(request, context, status: response.status.code, since: started)
            return response
        } catch {
            record(request, context, status: (error as? any HTTPResponseError)?.status.code ?? 500, since: started)
            throw error
        }
    }

    private static var methods: [HTTPRequest.Method] { [.get, .post, .put, .delete, .head, .options, .patch] }

    private func record(_ request: Request, _ context: Context, status: Int, since started: ContinuousClock.Instant) {
        let route = context.endpointPath ?? "unmatched"
        // A client may send any token as its method: only the ones the API knows are labels.
        let method = Self.methods.contains(request.method) ? request.method.rawValue : "other"
        Counter(label: MetricNames.apiRequests, dimensions: [("route", route), ("method", method), ("status", "\(status)")])
            .increment()
        CoreMetrics.Timer(label: MetricNames.apiRequestDuration, dimensions: [("route", route)])
            .recordNanoseconds((ContinuousClock.now - started).nanoseconds)
    }
}
