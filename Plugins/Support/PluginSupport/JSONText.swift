import ShardworkSDK

#if canImport(Glibc)
import Glibc
#endif

/// JSON written by hand, in a fixed member order: what ElasticJob's Gson writes for a sharding
/// context, and the documents the error handlers send.
public enum JSONText {
    /// `text` as a JSON string literal, quotes included. With `htmlSafe`, `<`, `>`, `&`, `=` and `'`
    /// are written as `\u003c` and so on, as Gson does by default.
    public static func string(_ text: String, htmlSafe: Bool = false) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case "\u{2028}", "\u{2029}": result += unicodeEscape(scalar.value)
            case _ where scalar.value < 0x20: result += unicodeEscape(scalar.value)
            case _ where htmlSafe && "<>&='".unicodeScalars.contains(scalar): result += unicodeEscape(scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    private static func unicodeEscape(_ value: UInt32) -> String {
        let hex = String(value, radix: 16)
        return "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    /// An object from members whose values are already JSON, in the given order.
    public static func object(_ members: [(String, String)]) -> String {
        "{" + members.map { string($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    /// ElasticJob's sharding context as its script and HTTP jobs hand it to the outside world: Gson's
    /// JSON of `ShardingContext` (members in declaration order, a missing item parameter left out,
    /// HTML-safe escaping), for example
    /// `{"jobName":"myJob","taskId":"myJob@-@0@-@READY@-@10.0.0.3@-@77","shardingTotalCount":3,"jobParameter":"a\u003db","shardingItem":0}`.
    public static func shardingContext(_ context: ShardingContext) -> String {
        var members = [
            ("jobName", string(context.jobName, htmlSafe: true)),
            ("taskId", string(context.taskID, htmlSafe: true)),
            ("shardingTotalCount", String(context.shardingTotalCount)),
            ("jobParameter", string(context.jobParameter, htmlSafe: true)),
            ("shardingItem", String(context.shardingItem)),
        ]
        if let parameter = context.shardingParameter {
            members.append(("shardingParameter", string(parameter, htmlSafe: true)))
        }
        return object(members)
    }
}

/// Helpers for reading props beyond the SDK's.
extension JobProperties {
    /// The value of `key`, required and not blank.
    public func requiredNonEmpty(_ key: String, _ what: String) throws(ConfigurationError) -> String {
        let value = try required(key)
        guard !value.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }) else {
            throw ConfigurationError(field: key, message: "The property `\(key)` is empty; give \(what).")
        }
        return value
    }
}

/// An instant as ISO 8601 in UTC with milliseconds (`2026-11-22T06:36:02.000Z`).
public func iso8601(milliseconds: Int64) -> String {
    var seconds = time_t(milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int32, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    let millis = Int32(((milliseconds % 1000) + 1000) % 1000)
    return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
        + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(millis, 3))Z"
}
