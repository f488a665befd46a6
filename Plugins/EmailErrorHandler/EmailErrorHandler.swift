import CurlSupport
import Foundation
import PluginSupport
import ShardworkSDK

/// ElasticJob's `EMAIL` (reference §7): a mail about each failure, naming the job, the host, the
/// item(s), the fire time and the error, sent over SMTP with libcurl, with SSL or STARTTLS and
/// authentication. It is queued and sent in the background: the handler returns at once.
struct EmailHandler: ErrorHandler {
    /// Every email handler of the process sends through these threads.
    static let queue = DeliveryQueue(name: "shardwork-email")

    let jobName: String
    let settings: MailSettings
    let logger: PluginLogger

    init(_ setup: ProviderSetup) throws {
        jobName = setup.jobName
        settings = try MailSettings(setup.properties)
        logger = setup.logger
    }

    func handle(_ failure: JobFailure) async -> ErrorDisposition {
        let what = "email notification of job '\(jobName)'" + (failure.item.map { " item \($0)" } ?? "")
        let transfer = settings.transfer(message: MailMessage.render(settings, body: FailureReport.text(failure)))
        let (logger, debug) = (self.logger, settings.debug)
        let queued = Self.queue.submit {
            if debug {
                logger.info("\(what): sending from \(transfer.sender) to \(transfer.recipients.joined(separator: ", ")) via \(transfer.serverURL)")
            }
            do throws(TransferError) {
                try transfer.send()
                logger.debug("\(what) sent via \(transfer.serverURL) to \(transfer.recipients.count) recipient(s)")
            } catch {
                logger.error("\(what) could not be sent via \(transfer.serverURL): \(error.message)")
            }
        }
        if !queued {
            logger.error("\(what) dropped: too many notifications are waiting to be sent")
        }
        return .handled
    }
}

/// The `email.*` props, checked.
struct MailSettings: Sendable {
    var host: String
    var port: Int
    var username: String
    var password: String
    var from: String
    var to: [String]
    var cc: String?
    var bcc: String?
    var security: MailTransfer.Security
    var trustServerCertificate: Bool
    var subject: String
    var debug: Bool
    var connectTimeoutMilliseconds: Int
    var readTimeoutMilliseconds: Int

    init(_ properties: JobProperties) throws(ConfigurationError) {
        host = try properties.requiredNonEmpty("email.host", "the SMTP server's name or address")
        port = try properties.positiveInteger("email.port", default: 0)
        guard properties["email.port"] != nil else {
            throw ConfigurationError(field: "email.port", message: "The property `email.port` is required.")
        }
        guard port <= 65_535 else {
            throw ConfigurationError(field: "email.port", message: "The property `email.port` should be a port number (1 to 65535), got \(port).")
        }
        username = try properties.required("email.username")
        password = try properties.required("email.password")
        from = try Self.address(properties, "email.from")
        let toText = try properties.requiredNonEmpty("email.to", "the recipients, comma-separated")
        var to: [String] = []
        for address in toText.split(separator: ",") {
            to.append(try Self.checked(address.trimmingCharacters(in: .whitespaces), "email.to"))
        }
        self.to = to
        cc = try Self.optionalAddress(properties, "email.cc")
        bcc = try Self.optionalAddress(properties, "email.bcc")
        let useSsl = try properties.boolean("email.useSsl", default: true)
        let useStartTls = try properties.boolean("email.useStartTls", default: false)
        if useSsl && useStartTls {
            throw ConfigurationError(
                field: "email.useStartTls",
                message: "The properties `email.useSsl` and `email.useStartTls` are both true; choose one (email.useSsl defaults to true: set it to false for STARTTLS).")
        }
        security = useSsl ? .implicitTLS : useStartTls ? .startTLS : .none
        // JavaMail's mail.smtp.ssl.trust: "*" or a list of hosts whose certificates are not checked.
        let trusted = (properties["email.ssl.trust"] ?? "").split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        trustServerCertificate = trusted.contains("*") || trusted.contains(host)
        subject = properties["email.subject"] ?? "ElasticJob error message"
        debug = try properties.boolean("email.debug", default: false)
        connectTimeoutMilliseconds = try properties.positiveInteger("email.connectTimeoutMilliseconds", default: 3000)
        readTimeoutMilliseconds = try properties.positiveInteger("email.readTimeoutMilliseconds", default: 10_000)
    }

    /// ElasticJob's cc and bcc: one address each, optional.
    static func optionalAddress(_ properties: JobProperties, _ key: String) throws(ConfigurationError) -> String? {
        guard let text = properties[key]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        return try checked(text, key)
    }

    static func address(_ properties: JobProperties, _ key: String) throws(ConfigurationError) -> String {
        try checked(try properties.requiredNonEmpty(key, "a mail address").trimmingCharacters(in: .whitespaces), key)
    }

    /// A bare address (`name@example.com`): one `@`, no spaces, brackets or line breaks.
    static func checked(_ address: String, _ key: String) throws(ConfigurationError) -> String {
        let forbidden: Set<Character> = [" ", "\t", "\r", "\n", "<", ">", ",", "\""]
        let parts = address.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty, !address.contains(where: forbidden.contains) else {
            throw ConfigurationError(field: key, message: "The property `\(key)` should hold mail addresses like ops@example.com, got '\(address)'.")
        }
        return address
    }

    func transfer(message: [UInt8]) -> MailTransfer {
        MailTransfer(
            host: host, port: port, security: security, trustServerCertificate: trustServerCertificate,
            username: username.isEmpty ? nil : username, password: username.isEmpty ? nil : password,
            sender: from, recipients: to + [cc, bcc].compactMap { $0 }, message: message,
            connectTimeoutMilliseconds: connectTimeoutMilliseconds, timeoutMilliseconds: readTimeoutMilliseconds)
    }
}

/// The mail itself: RFC 5322 headers and a UTF-8 plain-text body in base64.
enum MailMessage {
    static func render(_ settings: MailSettings, body: String, date: Date = Date()) -> [UInt8] {
        var headers = [
            "Date: \(rfc5322Date(date))",
            "From: \(settings.from)",
            "To: \(settings.to.joined(separator: ", "))",
        ]
        if let cc = settings.cc { headers.append("Cc: \(cc)") }
        headers += [
            "Subject: \(encodedHeader(settings.subject))",
            "Message-ID: <\(UUID().uuidString.lowercased())@shardwork>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
        ]
        let encoded = Data(body.utf8).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        return Array((headers.joined(separator: "\r\n") + "\r\n\r\n" + encoded + "\r\n").utf8)
    }

    /// ASCII text as it is; anything else as an RFC 2047 encoded word.
    static func encodedHeader(_ text: String) -> String {
        let plain = text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f }
        return plain ? text : "=?UTF-8?B?\(Data(text.utf8).base64EncodedString())?="
    }

    static func rfc5322Date(_ date: Date) -> String {
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "email-error-handler", version: "0.1.0", providers: [
        .errorHandler(name: "email", aliases: ["EMAIL"]) { setup in try EmailHandler(setup) },
    ])
}
