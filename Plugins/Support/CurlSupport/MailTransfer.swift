import CCurl
import Foundation

/// One mail for an SMTP server, as the email handler sends it.
public struct MailTransfer: Sendable {
    public enum Security: Sendable, Equatable {
        /// TLS from the first byte (`smtps://`, usually port 465).
        case implicitTLS
        /// A plain connection upgraded with STARTTLS, which the server must offer (usually port 587).
        case startTLS
        /// No encryption: only for a server on the same machine or a trusted network.
        case none
    }

    public var host: String
    public var port: Int
    public var security: Security
    /// Skips the check of the server's certificate (JavaMail's `mail.smtp.ssl.trust` for this host).
    public var trustServerCertificate: Bool
    public var username: String?
    public var password: String?
    /// The envelope sender (MAIL FROM) and every recipient (RCPT TO): to, cc and bcc.
    public var sender: String
    public var recipients: [String]
    /// The whole message, headers and body, with CRLF line ends.
    public var message: [UInt8]
    public var connectTimeoutMilliseconds: Int
    public var timeoutMilliseconds: Int

    public init(host: String, port: Int, security: Security, trustServerCertificate: Bool, username: String?, password: String?,
                sender: String, recipients: [String], message: [UInt8], connectTimeoutMilliseconds: Int, timeoutMilliseconds: Int) {
        self.host = host
        self.port = port
        self.security = security
        self.trustServerCertificate = trustServerCertificate
        self.username = username
        self.password = password
        self.sender = sender
        self.recipients = recipients
        self.message = message
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// `smtps://host:port` or `smtp://host:port`: the server, for messages (no credentials).
    public var serverURL: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return "\(security == .implicitTLS ? "smtps" : "smtp")://\(bracketed):\(port)"
    }

    /// Sends the mail with libcurl's SMTP support (blocking: call it from a thread of your own).
    public func send() throws(TransferError) {
        let easy = try CurlEasy(protocols: "smtp,smtps")
        easy.set(CURLOPT_URL, serverURL)
        easy.set(CURLOPT_CONNECTTIMEOUT_MS, connectTimeoutMilliseconds)
        easy.set(CURLOPT_TIMEOUT_MS, connectTimeoutMilliseconds + timeoutMilliseconds)
        if security == .startTLS { easy.set(CURLOPT_USE_SSL, Int(CURLUSESSL_ALL.rawValue)) }
        if trustServerCertificate {
            easy.set(CURLOPT_SSL_VERIFYPEER, 0)
            easy.set(CURLOPT_SSL_VERIFYHOST, 0)
        }
        if let username { easy.set(CURLOPT_USERNAME, username) }
        if let password { easy.set(CURLOPT_PASSWORD, password) }
        easy.set(CURLOPT_MAIL_FROM, "<\(sender)>")
        easy.list(CURLOPT_MAIL_RCPT, recipients.map { "<\($0)>" })
        easy.upload(message)
        try easy.perform()
    }
}
