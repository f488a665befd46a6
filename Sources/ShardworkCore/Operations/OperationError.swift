/// Why a cluster operation was refused or failed. The message names the job, the field and what
/// to do; ``httpStatus`` is the status an HTTP API answers with, and the error encodes as the JSON
/// body of that answer (`{"code": "invalid", "job": "orders", "field": "item", "message": "..."}`).
public struct OperationError: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable, Codable {
        /// The job (or the server, instance or node named) does not exist.
        case notFound
        /// An argument or a configuration field is wrong; ``OperationError/field`` names it.
        case invalid
        /// The registry is not in the state the operation needs: the job exists already, or it
        /// changed since it was read (a version mismatch). Reading again and retrying can succeed.
        case conflict
        /// The registry could not be reached or refused the request.
        case registryFailure
    }

    public var code: Code
    /// The job concerned, when there is one.
    public var job: String?
    /// The argument or configuration field at fault, for ``Code/invalid`` (`item`,
    /// `shardingTotalCount`, `jobType`...).
    public var field: String?
    public var message: String

    public init(_ code: Code, job: String?, field: String? = nil, message: String) {
        self.code = code
        self.job = job
        self.field = field
        self.message = message
    }

    /// 404 not found, 422 invalid, 409 conflict, 503 registry failure.
    public var httpStatus: Int {
        switch code {
        case .notFound: 404
        case .invalid: 422
        case .conflict: 409
        case .registryFailure: 503
        }
    }

    public var description: String {
        var text = ""
        if let job { text += "job '\(job)': " }
        if let field { text += "\(field): " }
        return text + message
    }

    static func notFound(job: String?, _ message: String) -> OperationError {
        OperationError(.notFound, job: job, message: message)
    }

    static func invalid(job: String?, field: String, _ message: String) -> OperationError {
        OperationError(.invalid, job: job, field: field, message: message)
    }

    static func conflict(job: String?, _ message: String) -> OperationError {
        OperationError(.conflict, job: job, message: message)
    }

    /// A registry error met while doing `action`. Errors that mean the registry is unreachable or
    /// refused access are failures; a node that appeared or vanished under the operation is a
    /// conflict with a concurrent change.
    static func registry(_ error: RegistryError, job: String?, while action: String) -> OperationError {
        var code = error.code
        if case .transactionFailed(_, let underlying) = code { code = underlying }
        switch code {
        case .connectionLoss, .sessionExpired, .closed, .noAuth, .other:
            return OperationError(
                .registryFailure, job: job,
                message: "the registry failed while \(action): \(error); check that the registry is reachable, then retry")
        default:
            return OperationError(
                .conflict, job: job,
                message: "the registry changed while \(action) (\(error)); read the job again and retry")
        }
    }
}
