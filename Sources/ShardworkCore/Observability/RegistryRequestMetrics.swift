package import CoreMetrics

/// The kinds of request a registry sends, as the metrics label them (docs/metrics.md).
package enum RegistryRequestKind: String, CaseIterable, Sendable {
    case create, delete, set, get, exists, children, multi
}

/// How a registry request ended, as the metrics label it: answered (`ok`), answered with an error
/// (`refused`: no such node, a version conflict), or not answered (`unanswered`: the connection
/// was lost, the request timed out, the session expired).
package enum RegistryRequestResult: String, CaseIterable, Sendable {
    case ok, refused, unanswered
}

/// Requests to ZooKeeper by kind: how many, how they ended, how long they took
/// (`shardwork_registry_requests_total{kind, result}`, `shardwork_registry_request_duration_seconds{kind}`).
/// The handlers are made once, at the registry's creation, from the metrics system of that moment:
/// a request costs two atomic adds and a histogram bucket, nothing more.
package final class RegistryRequestMetrics: Sendable {
    private struct Handlers: Sendable {
        /// By ``RegistryRequestResult``, in its order.
        let results: [Counter]
        let duration: CoreMetrics.Timer
    }

    private let handlers: [Handlers]

    package init(factory: any MetricsFactory = MetricsSystem.factory) {
        handlers = RegistryRequestKind.allCases.map { kind in
            Handlers(
                results: RegistryRequestResult.allCases.map { result in
                    Counter(label: MetricNames.registryRequests, dimensions: [("kind", kind.rawValue), ("result", result.rawValue)], factory: factory)
                },
                duration: CoreMetrics.Timer(label: MetricNames.registryRequestDuration, dimensions: [("kind", kind.rawValue)], factory: factory))
        }
    }

    /// One request ended, `elapsed` after it was sent.
    package func record(_ kind: RegistryRequestKind, _ result: RegistryRequestResult, elapsed: Duration) {
        let handlers = handlers[RegistryRequestKind.allCases.firstIndex(of: kind) ?? 0]
        handlers.results[RegistryRequestResult.allCases.firstIndex(of: result) ?? 0].increment()
        handlers.duration.recordNanoseconds(elapsed.nanoseconds)
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return whole.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }

    /// The duration in whole milliseconds (saturating).
    package var milliseconds: Int64 { nanoseconds / 1_000_000 }
}
