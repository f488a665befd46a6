import CurlSupport
import Foundation
import PluginSupport
import ShardworkSDK

/// `webhook`: POSTs a JSON document about each failure (job, host, items, fire time, error) to
/// `webhook.url`, signed with HMAC-SHA256 under `webhook.secret` in `X-Shardwork-Signature`.
struct WebhookHandler: ErrorHandler {
    let url: String
    let secret: [UInt8]?
    let delivery: Delivery

    init(_ setup: ProviderSetup) throws {
        let properties = setup.properties
        url = try Delivery.checkedURL(properties, "webhook.url")
        secret = properties["webhook.secret"].map { Array($0.utf8) }
        if let secret, secret.isEmpty {
            throw ConfigurationError(field: "webhook.secret", message: "The property `webhook.secret` is empty; give the signing secret or leave the key out.")
        }
        delivery = try Delivery(setup, prefix: "webhook", label: "webhook")
    }

    func handle(_ failure: JobFailure) async -> ErrorDisposition {
        let body = Array(FailureReport.json(failure).utf8)
        var headers = ["Content-Type: application/json; charset=utf-8"]
        if let secret {
            headers.append("X-Shardwork-Signature: sha256=" + HMACSHA256.hex(key: secret, message: body))
        }
        let (url, finalHeaders) = (self.url, headers)
        delivery.send(failure, request: { _ in (url, finalHeaders, body) }, accept: { _ in nil })
        return .handled
    }
}

/// ElasticJob's `WECHAT`: a text message to a WeChat Work group robot.
struct WeChatHandler: ErrorHandler {
    let url: String
    let delivery: Delivery

    init(_ setup: ProviderSetup) throws {
        url = try Delivery.checkedURL(setup.properties, "wechat.webhook")
        delivery = try Delivery(setup, prefix: "wechat", label: "WeChat Work", defaultAttempts: 1)
    }

    func handle(_ failure: JobFailure) async -> ErrorDisposition {
        let body = Array(RobotMessage.text(FailureReport.text(failure)).utf8)
        let url = self.url
        delivery.send(failure, request: { _ in (url, ["Content-Type: application/json; charset=utf-8"], body) }, accept: RobotMessage.refusal)
        return .handled
    }
}

/// ElasticJob's `DINGTALK`: a text message to a DingTalk group robot, prefixed with
/// `dingtalk.keyword`, and with `dingtalk.secret` a signed URL (`&timestamp=…&sign=…`).
struct DingTalkHandler: ErrorHandler {
    let url: String
    let keyword: String?
    let secret: String?
    let delivery: Delivery

    init(_ setup: ProviderSetup) throws {
        let properties = setup.properties
        url = try Delivery.checkedURL(properties, "dingtalk.webhook")
        keyword = properties["dingtalk.keyword"].flatMap { $0.isEmpty ? nil : $0 }
        secret = properties["dingtalk.secret"].flatMap { $0.isEmpty ? nil : $0 }
        delivery = try Delivery(setup, prefix: "dingtalk", label: "DingTalk", defaultAttempts: 1)
    }

    func handle(_ failure: JobFailure) async -> ErrorDisposition {
        let text = FailureReport.text(failure)
        let body = Array(RobotMessage.text(keyword.map { "\($0) \(text)" } ?? text).utf8)
        let (url, secret) = (self.url, self.secret)
        delivery.send(failure, request: { _ in
            (secret.map { Self.signedURL(url, secret: $0, timestamp: Delivery.nowMilliseconds()) } ?? url,
             ["Content-Type: application/json; charset=utf-8"], body)
        }, accept: RobotMessage.refusal)
        return .handled
    }

    /// DingTalk's signature: `sign` = URL-encoded base64 of HMAC-SHA256 under the secret of
    /// `"{timestamp}\n{secret}"`, the timestamp in milliseconds, made afresh for every attempt.
    static func signedURL(_ url: String, secret: String, timestamp: Int64) -> String {
        let mac = HMACSHA256.digest(key: Array(secret.utf8), message: Array("\(timestamp)\n\(secret)".utf8))
        let sign = Data(mac).base64EncodedString()
        var encoded = ""
        for character in sign.unicodeScalars {
            switch character {
            case "+": encoded += "%2B"
            case "/": encoded += "%2F"
            case "=": encoded += "%3D"
            default: encoded.unicodeScalars.append(character)
            }
        }
        return url + (url.contains("?") ? "&" : "?") + "timestamp=\(timestamp)&sign=\(encoded)"
    }
}

/// The message both robots take, and how they say no.
enum RobotMessage {
    static func text(_ content: String) -> String {
        JSONText.object([
            ("msgtype", JSONText.string("text")),
            ("text", JSONText.object([("content", JSONText.string(content))])),
        ])
    }

    /// A robot answers 200 with `{"errcode":0,…}` when it took the message; any other errcode is a
    /// refusal, described with its `errmsg`.
    static func refusal(_ response: HTTPResponse) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
            return "the answer is not the JSON a robot sends: \(response.text.prefix(200))"
        }
        let code = (object["errcode"] as? NSNumber)?.intValue ?? Int((object["errcode"] as? String) ?? "")
        guard code == 0 else {
            return "the robot refused the message: errcode \(code.map(String.init) ?? "missing"), errmsg \(object["errmsg"] ?? "none")"
        }
        return nil
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "webhook-error-handlers", version: "0.1.0", providers: [
        .errorHandler(name: "webhook", aliases: ["WEBHOOK"]) { setup in try WebhookHandler(setup) },
        .errorHandler(name: "wechat", aliases: ["WECHAT"]) { setup in try WeChatHandler(setup) },
        .errorHandler(name: "dingtalk", aliases: ["DINGTALK"]) { setup in try DingTalkHandler(setup) },
    ])
}
