public import ShardworkSDK

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
