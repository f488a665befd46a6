#if canImport(Glibc)
import Glibc
#endif

/// Text from outside the host (plugin log messages and errors, HTTP bodies, script output, registry
/// values, names that failed their check) made safe for one log line: line breaks, control
/// characters (terminal escape codes among them) and invisible formatting characters are written as
/// escapes, so such text can neither start a line of its own (a forged entry) nor hide or recolour
/// what the host writes; and it is cut at a limit, so a 4 MB message costs a log line, not 4 MB.
public enum LogText {
    /// The most UTF-8 bytes of outside text a log line carries by default.
    public static let defaultLimit = 4_096

    /// `text` escaped (`\n`, `\r`, `\t`, others as `\u{1B}`) and cut after `limit` bytes, with how
    /// much was left out.
    public static func escaped(_ text: some StringProtocol, limit: Int = defaultLimit) -> String {
        escaped(text, limit: limit, totalBytes: text.utf8.count)
    }

    /// ``escaped(_:limit:)`` of a C string, without copying more of it than the limit needs (a
    /// plugin's 4 MB message is measured, not copied).
    public static func escaped(cString pointer: UnsafePointer<CChar>?, limit: Int = defaultLimit) -> String {
        guard let pointer else { return "" }
        let length = strlen(pointer)
        // Enough bytes for the limit and the character it may end inside.
        let taken = min(length, limit + 4)
        let text = pointer.withMemoryRebound(to: UInt8.self, capacity: taken) {
            String(decoding: UnsafeBufferPointer(start: $0, count: taken), as: UTF8.self)
        }
        return escaped(text, limit: limit, totalBytes: taken == length ? text.utf8.count : length)
    }

    private static func escaped(_ text: some StringProtocol, limit: Int, totalBytes: Int) -> String {
        let utf8 = text.utf8
        // The common case, checked in one pass over the bytes: printable ASCII within the limit.
        if totalBytes <= limit, utf8.count <= limit, utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return String(text) }
        var out = ""
        var written = 0
        var consumed = 0
        for scalar in text.unicodeScalars {
            let piece = escape(scalar)
            if written + piece.utf8.count > limit { break }
            out += piece
            written += piece.utf8.count
            consumed += String(scalar).utf8.count
        }
        if consumed < totalBytes {
            out += "… (\(totalBytes - consumed) more bytes)"
        }
        return out
    }

    /// ``escaped(_:limit:)`` in single quotes: for a value named in a message.
    public static func quoted(_ text: some StringProtocol, limit: Int = 200) -> String {
        "'" + escaped(text, limit: limit) + "'"
    }

    private static func escape(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        default: break
        }
        if scalar.value >= 0x20 && scalar.value < 0x7F { return String(scalar) }
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned, .privateUse:
            return "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
        default:
            return String(scalar)
        }
    }
}
