import CurlSupport
import PluginSupport
import Foundation
import ShardworkSDK

/// ElasticJob's HTTP job (type `HTTP`, reference §8): each item sends one request to `http.uri` with
/// the item's sharding context as Gson's JSON in the `shardingContext` header. Unlike ElasticJob, an
/// answer of 400 or above fails the item (its code is the status); ElasticJob only logs a warning.
struct HTTPJob: SimpleJob {
    static let methodsWithBody: Set<String> = ["POST", "PUT", "DELETE"]

    let uri: String
    let method: String
    let data: String?
    let contentType: String?
    let connectTimeoutMilliseconds: Int
    let readTimeoutMilliseconds: Int

    init(_ setup: ProviderSetup) throws {
        let properties = setup.properties
        uri = try properties.requiredNonEmpty("http.uri", "the URL each item calls, for example `https://api.example.com/sync`")
        let lower = uri.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw ConfigurationError(field: "http.uri", message: "The property `http.uri` should be an http:// or https:// URL, got '\(redactedURL(uri))'.")
        }
        let method = try properties.requiredNonEmpty("http.method", "the request method, for example GET or POST")
            .trimmingCharacters(in: .whitespaces).uppercased()
        guard method.allSatisfy({ $0.isASCII && $0.isLetter }) else {
            throw ConfigurationError(field: "http.method", message: "The property `http.method` should be a method such as GET, POST, PUT or DELETE, got '\(method)'.")
        }
        self.method = method
        data = properties["http.data"].flatMap { $0.isEmpty ? nil : $0 }
        contentType = properties["http.content.type"].flatMap { $0.isEmpty ? nil : $0 }
        connectTimeoutMilliseconds = try properties.positiveInteger("http.connect.timeout.milliseconds", default: 3000)
        readTimeoutMilliseconds = try properties.positiveInteger("http.read.timeout.milliseconds", default: 5000)
    }

    func execute(_ context: ShardingContext) async throws {
        var headers = ["shardingContext: " + JSONText.shardingContext(context)]
        if let contentType { headers.append("Content-Type: \(contentType)") }
        // As ElasticJob: the data is the body of POST, PUT and DELETE only.
        let body = Self.methodsWithBody.contains(method) ? Array((data ?? "").utf8) : nil
        let request = HTTPRequest(
            url: uri, method: method, headers: headers, body: body,
            connectTimeoutMilliseconds: connectTimeoutMilliseconds, readTimeoutMilliseconds: readTimeoutMilliseconds)
        let target = "\(method) \(redactedURL(uri))"
        let outcome = try await BlockingWork.run("shardwork-http") {
            Result { () throws(TransferError) in try HTTPTransfer.perform(request, isCancelled: { context.isCancelled }) }
        }
        switch outcome {
        case .success(let response) where response.status >= 400:
            let text = response.text.prefix(500)
            throw JobError("HTTP job: \(target) answered \(response.status)" + (text.isEmpty ? "" : ": \(text)"), code: Int32(response.status))
        case .success(let response):
            context.logger.debug("HTTP job: \(target) answered \(response.status) (\(response.body.count) bytes)")
        case .failure(let error) where error.isTimeout:
            throw JobError("HTTP job: \(target) timed out (http.connect.timeout.milliseconds \(connectTimeoutMilliseconds), "
                + "http.read.timeout.milliseconds \(readTimeoutMilliseconds)): \(error.message)")
        case .failure(let error) where error.wasCancelled:
            throw JobError("HTTP job: \(target) was stopped because the host asked the item to stop")
        case .failure(let error):
            throw JobError("HTTP job: \(target) failed: \(error.message)")
        }
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "http-job", version: "0.1.0", providers: [
        .simpleJob(name: "http", aliases: ["HTTP"]) { setup in try HTTPJob(setup) },
    ])
}
