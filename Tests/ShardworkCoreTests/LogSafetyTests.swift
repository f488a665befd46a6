import Foundation
import ShardworkCore
import Testing

/// Text from outside the host cannot forge or hide log lines.
@Suite("Log safety")
struct LogSafetyTests {
    @Test("line breaks, terminal escapes and invisible characters are written as escapes; plain text is left alone", arguments: [
        ("plain text, with punctuation: 100%", "plain text, with punctuation: 100%"),
        ("oops\n2026-12-06T00:00:00+0000 critical shardwork: host compromised", "oops\\n2026-12-06T00:00:00+0000 critical shardwork: host compromised"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\u{1B}[31mred\u{1B}[0m", "\\u{1B}[31mred\\u{1B}[0m"),
        ("right\u{202E}txt.exe", "right\\u{202E}txt.exe"),
        ("line\u{2028}separator", "line\\u{2028}separator"),
        ("nul\u{0}byte", "nul\\u{0}byte"),
        ("Zürich 订单 café", "Zürich 订单 café"),
    ])
    func escaping(text: String, expected: String) {
        #expect(LogText.escaped(text) == expected)
    }

    @Test("long text is cut at the limit, saying how much was left out, never inside a character or an escape")
    func bounded() {
        let huge = String(repeating: "x", count: 4 << 20)
        let cut = LogText.escaped(huge)
        #expect(cut.hasPrefix(String(repeating: "x", count: LogText.defaultLimit)))
        #expect(cut.hasSuffix("… (\((4 << 20) - LogText.defaultLimit) more bytes)"))
        #expect(LogText.escaped("ééé", limit: 3) == "é… (4 more bytes)")
        #expect(LogText.escaped("ab\ncd", limit: 3) == "ab… (3 more bytes)")
        #expect(LogText.quoted("a\nb") == "'a\\nb'")
    }
}
