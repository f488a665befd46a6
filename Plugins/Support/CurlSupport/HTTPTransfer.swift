import CCurl
import Foundation
import ShardworkSDK

/// One HTTP request, as the HTTP job and the webhook handlers send it.
public struct HTTPRequest: Sendable {
    public var url: String
    /// `GET`, `POST`, `PUT`, `DELETE`, … (any token; `HEAD` asks for no body).
    public var method: String
    /// Header lines, `Name: value`.
    public var headers: [String]
    /// Sent when not `nil` (an empty body is sent as `Content-Length: 0`).
    public var body: [UInt8]?
    public var connectTimeoutMilliseconds: Int
    /// After connecting, the longest wait for the whole response.
    public var readTimeoutMilliseconds: Int

    public init(url: String, method: String = "GET", headers: [String] = [], body: [UInt8]? = nil,
                connectTimeoutMilliseconds: Int, readTimeoutMilliseconds: Int) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.readTimeoutMilliseconds = readTimeoutMilliseconds
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// At most ``HTTPTransfer/bodyLimit`` bytes of the body; the rest is read and dropped.
    public var body: [UInt8]

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A transfer that did not complete: no connection, a timeout, a refused TLS handshake, an SMTP
/// server that said no. `message` never contains credentials.
public struct TransferError: Error, Sendable, CustomStringConvertible {
    /// libcurl's code (`CURLE_…`).
    public var curlCode: Int32
    public var message: String

    public var isTimeout: Bool { curlCode == Int32(CURLE_OPERATION_TIMEDOUT.rawValue) }
    public var wasCancelled: Bool { curlCode == Int32(CURLE_ABORTED_BY_CALLBACK.rawValue) }
    public var description: String { message }
}

/// Blocking transfers with libcurl's easy interface. Call them from a thread of your own
/// (``PluginSupport/BlockingWork``), never from Swift's cooperative pool.
public enum HTTPTransfer {
    public static let bodyLimit = 1 << 20

    /// Sends `request` and returns the response, whatever its status. Throws when no response came.
    /// `isCancelled` is polled during the transfer; when it turns true, the transfer stops.
    public static func perform(_ request: HTTPRequest, isCancelled: (@Sendable () -> Bool)? = nil) throws(TransferError) -> HTTPResponse {
        let easy = try CurlEasy(protocols: "http,https")
        easy.set(CURLOPT_URL, request.url)
        easy.set(CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeoutMilliseconds)
        easy.set(CURLOPT_TIMEOUT_MS, request.connectTimeoutMilliseconds + request.readTimeoutMilliseconds)
        let method = request.method.uppercased()
        switch method {
        case "GET": easy.set(CURLOPT_HTTPGET, 1)
        case "HEAD": easy.set(CURLOPT_NOBODY, 1)
        case "POST": easy.set(CURLOPT_POST, 1)
        default: easy.set(CURLOPT_CUSTOMREQUEST, method)
        }
        if let body = request.body {
            // COPYPOSTFIELDS keeps its own copy; the size must be set first.
            shardwork_curl_set_size(easy.handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBufferPointer { buffer in
                let bytes = buffer.isEmpty ? UnsafeRawPointer(bitPattern: 1) : UnsafeRawPointer(buffer.baseAddress)
                _ = shardwork_curl_set_pointer(easy.handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes))
            }
            if method != "POST" { easy.set(CURLOPT_CUSTOMREQUEST, method) }
        }
        // No "Expect: 100-continue" round trip before a body.
        easy.headers(request.headers + ["Expect:"])
        easy.collectBody()
        if let isCancelled { easy.cancelWhen(isCancelled) }
        try easy.perform()
        return HTTPResponse(status: easy.responseCode, body: easy.receivedBody)
    }
}

/// One libcurl easy handle and what it points to, released together.
final class CurlEasy {
    static let globalInit: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK

    let handle: UnsafeMutableRawPointer
    private var lists: [UnsafeMutablePointer<curl_slist>] = []
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    private var sink: BodySink?
    private var source: BodySource?
    private var cancellation: Cancellation?

    init(protocols: String) throws(TransferError) {
        guard Self.globalInit, let handle = curl_easy_init() else {
            throw TransferError(curlCode: Int32(CURLE_FAILED_INIT.rawValue), message: "libcurl could not be initialised")
        }
        self.handle = handle
        errorBuffer.initialize(to: 0)
        _ = shardwork_curl_set_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        set(CURLOPT_NOSIGNAL, 1)
        set(CURLOPT_PROTOCOLS_STR, protocols)
    }

    deinit {
        curl_easy_cleanup(handle)
        for list in lists { curl_slist_free_all(list) }
        errorBuffer.deallocate()
    }

    func set(_ option: CURLoption, _ value: Int) {
        _ = shardwork_curl_set_long(handle, option, value)
    }

    /// libcurl copies string options.
    func set(_ option: CURLoption, _ value: String) {
        _ = shardwork_curl_set_string(handle, option, value)
    }

    func list(_ option: CURLoption, _ values: [String]) {
        guard !values.isEmpty else { return }
        var list: UnsafeMutablePointer<curl_slist>?
        for value in values { list = curl_slist_append(list, value) }
        if let list {
            lists.append(list)
            _ = shardwork_curl_set_list(handle, option, list)
        }
    }

    func headers(_ lines: [String]) { list(CURLOPT_HTTPHEADER, lines) }

    func collectBody() {
        let sink = BodySink()
        self.sink = sink
        _ = shardwork_curl_set_data_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            guard let data, let context else { return 0 }
            let sink = Unmanaged<BodySink>.fromOpaque(context).takeUnretainedValue()
            let total = size * count
            if sink.bytes.count < HTTPTransfer.bodyLimit {
                let kept = min(total, HTTPTransfer.bodyLimit - sink.bytes.count)
                data.withMemoryRebound(to: UInt8.self, capacity: kept) { sink.bytes.append(contentsOf: UnsafeBufferPointer(start: $0, count: kept)) }
            }
            return total
        }
        _ = shardwork_curl_set_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(sink).toOpaque())
    }

    var receivedBody: [UInt8] { sink?.bytes ?? [] }

    /// The upload (an SMTP message) comes from `bytes`.
    func upload(_ bytes: [UInt8]) {
        let source = BodySource(bytes)
        self.source = source
        set(CURLOPT_UPLOAD, 1)
        set(CURLOPT_INFILESIZE, bytes.count)
        _ = shardwork_curl_set_data_callback(handle, CURLOPT_READFUNCTION) { buffer, size, count, context in
            guard let buffer, let context else { return 0 }
            let source = Unmanaged<BodySource>.fromOpaque(context).takeUnretainedValue()
            let count = min(size * count, source.bytes.count - source.offset)
            guard count > 0 else { return 0 }
            source.bytes.withUnsafeBufferPointer { bytes in
                UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress! + source.offset, byteCount: count)
            }
            source.offset += count
            return count
        }
        _ = shardwork_curl_set_pointer(handle, CURLOPT_READDATA, Unmanaged.passUnretained(source).toOpaque())
    }

    func cancelWhen(_ isCancelled: @escaping @Sendable () -> Bool) {
        let cancellation = Cancellation(isCancelled)
        self.cancellation = cancellation
        set(CURLOPT_NOPROGRESS, 0)
        _ = shardwork_curl_set_progress_callback(handle) { context, _, _, _, _ in
            guard let context else { return 0 }
            return Unmanaged<Cancellation>.fromOpaque(context).takeUnretainedValue().check() ? 1 : 0
        }
        _ = shardwork_curl_set_pointer(handle, CURLOPT_XFERINFODATA, Unmanaged.passUnretained(cancellation).toOpaque())
    }

    func perform() throws(TransferError) {
        let code = curl_easy_perform(handle)
        guard code == CURLE_OK else {
            let detail = String(cString: errorBuffer)
            let summary = String(cString: curl_easy_strerror(code))
            throw TransferError(curlCode: Int32(code.rawValue), message: detail.isEmpty ? summary : "\(summary): \(detail)")
        }
    }

    var responseCode: Int {
        var code = 0
        _ = shardwork_curl_get_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return code
    }
}

private final class BodySink {
    var bytes: [UInt8] = []
}

private final class BodySource {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }
}

private final class Cancellation {
    let check: @Sendable () -> Bool

    init(_ check: @escaping @Sendable () -> Bool) { self.check = check }
}

/// A URL fit for a log line: scheme, host and path, without credentials or query (a DingTalk or
/// WeChat webhook carries its access token in the query).
public func redactedURL(_ url: String) -> String {
    var text = Substring(url)
    var cut = false
    if let query = text.firstIndex(where: { $0 == "?" || $0 == "#" }) {
        text = text[..<query]
        cut = true
    }
    if let scheme = text.range(of: "://") {
        let rest = text[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") {
            text = text[..<scheme.upperBound] + rest[rest.index(after: at)...]
        }
    }
    return String(text) + (cut ? "?…" : "")
}
