import CCrypto
import CurlSupport
import PluginSupport
import ShardworkSDK

#if canImport(Glibc)
import Glibc
#endif

/// Sending one failure's notification: in the background, with timeouts, and with retries and a
/// doubling backoff on a 5xx answer or a network error. The handler returns before the first
/// attempt, so a slow or unreachable server never holds up the job's fire or the host's workers.
struct Delivery: Sendable {
    /// Every handler of this plugin sends through these threads.
    static let queue = DeliveryQueue(name: "shardwork-webhook")

    let label: String
    let jobName: String
    let connectTimeoutMilliseconds: Int
    let readTimeoutMilliseconds: Int
    let attempts: Int
    let backoffMilliseconds: Int
    let logger: PluginLogger

    /// Reads `{prefix}.connectTimeoutMilliseconds` (3000), `{prefix}.readTimeoutMilliseconds` (5000),
    /// `{prefix}.attempts` and `{prefix}.backoffMilliseconds` (1000).
    init(_ setup: ProviderSetup, prefix: String, label: String, defaultAttempts: Int = 3) throws(ConfigurationError) {
        let properties = setup.properties
        self.label = label
        jobName = setup.jobName
        connectTimeoutMilliseconds = try properties.positiveInteger("\(prefix).connectTimeoutMilliseconds", default: 3000)
        readTimeoutMilliseconds = try properties.positiveInteger("\(prefix).readTimeoutMilliseconds", default: 5000)
        attempts = try properties.positiveInteger("\(prefix).attempts", default: defaultAttempts)
        backoffMilliseconds = try properties.positiveInteger("\(prefix).backoffMilliseconds", default: 1000)
        logger = setup.logger
    }

    /// The value of `key`: required, an `http://` or `https://` URL.
    static func checkedURL(_ properties: JobProperties, _ key: String) throws(ConfigurationError) -> String {
        let url = try properties.requiredNonEmpty(key, "the URL to POST to")
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw ConfigurationError(
                field: key, message: "The property `\(key)` should be an http:// or https:// URL, got '\(redactedURL(url))'.")
        }
        return url
    }

    /// Queues the notification. `request` makes the URL, headers and body of an attempt (numbered
    /// from 1); `accept` looks at a 2xx answer and returns why it is not a success, or `nil`.
    func send(
        _ failure: JobFailure,
        request: @escaping @Sendable (Int) -> (url: String, headers: [String], body: [UInt8]),
        accept: @escaping @Sendable (HTTPResponse) -> String?
    ) {
        let what = "\(label) notification of job '\(jobName)'" + (failure.item.map { " item \($0)" } ?? "")
        let queued = Self.queue.submit { [self] in deliver(what, request: request, accept: accept) }
        if !queued {
            logger.error("\(what) dropped: too many notifications are waiting to be sent")
        }
    }

    private func deliver(
        _ what: String, request: (Int) -> (url: String, headers: [String], body: [UInt8]),
        accept: (HTTPResponse) -> String?
    ) {
        var lastProblem = ""
        for attempt in 1...attempts {
            if attempt > 1 {
                // 1×, 2×, 4× … the backoff, at most a minute.
                let wait = min(backoffMilliseconds << min(attempt - 2, 16), 60_000)
                usleep(useconds_t(wait) * 1000)
            }
            let (url, headers, body) = request(attempt)
            let target = redactedURL(url)
            do {
                let response = try HTTPTransfer.perform(HTTPRequest(
                    url: url, method: "POST", headers: headers + ["User-Agent: shardwork"], body: body,
                    connectTimeoutMilliseconds: connectTimeoutMilliseconds, readTimeoutMilliseconds: readTimeoutMilliseconds))
                switch response.status {
                case 200..<300:
                    if let refusal = accept(response) {
                        logger.error("\(what) to \(target) was not accepted: \(refusal)")
                    } else {
                        logger.debug("\(what) sent to \(target) (HTTP \(response.status), attempt \(attempt))")
                    }
                    return
                case 500...:
                    lastProblem = "HTTP \(response.status)"
                    logger.warning("\(what) to \(target): attempt \(attempt) of \(attempts) got HTTP \(response.status)")
                default:
                    logger.error("\(what) to \(target) was refused with HTTP \(response.status); not retried: \(response.text.prefix(200))")
                    return
                }
            } catch {
                lastProblem = error.message
                logger.warning("\(what) to \(target): attempt \(attempt) of \(attempts) failed: \(error.message)")
            }
        }
        logger.error("\(what) gave up after \(attempts) attempt\(attempts == 1 ? "" : "s"): \(lastProblem)")
    }

    static func nowMilliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}

/// HMAC-SHA256 with OpenSSL's libcrypto.
enum HMACSHA256 {
    static func digest(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let result = key.withUnsafeBufferPointer { key in
            message.withUnsafeBufferPointer { message in
                HMAC(EVP_sha256(), key.baseAddress, Int32(key.count), message.baseAddress, message.count, &output, &length)
            }
        }
        // HMAC only fails when OpenSSL cannot allocate; an empty digest then fails verification.
        return result == nil ? [] : Array(output.prefix(Int(length)))
    }

    static func hex(key: [UInt8], message: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in digest(key: key, message: message) {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
