/// A JSON value whose objects keep their keys in document order (Foundation's parser does not,
/// and the order of a sharding result's keys is part of what the tests check).
public indirect enum OrderedJSON: Equatable, Sendable {
    case object([(key: String, value: OrderedJSON)])
    case array([OrderedJSON])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null

    public static func == (lhs: OrderedJSON, rhs: OrderedJSON) -> Bool {
        switch (lhs, rhs) {
        case (.object(let a), .object(let b)):
            a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let a), .array(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.bool(let a), .bool(let b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    public subscript(key: String) -> OrderedJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var int: Int? { if case .number(let value) = self { Int(exactly: value) } else { nil } }
    public var int64: Int64? { if case .number(let value) = self { Int64(exactly: value) } else { nil } }
    public var array: [OrderedJSON]? { if case .array(let value) = self { value } else { nil } }
    public var members: [(key: String, value: OrderedJSON)]? { if case .object(let value) = self { value } else { nil } }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String) throws -> OrderedJSON {
        var parser = Parser(Array(text.utf8))
        let value = try parser.value()
        parser.skipWhitespace()
        guard parser.atEnd else { throw parser.error("trailing characters") }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var position = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool { position >= bytes.count }

        func error(_ message: String) -> ParseError {
            ParseError(description: "invalid JSON at byte \(position): \(message)")
        }

        mutating func skipWhitespace() {
            while !atEnd, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
        }

        mutating func expect(_ literal: String) throws {
            for byte in literal.utf8 {
                guard !atEnd, bytes[position] == byte else { throw error("expected \(literal)") }
                position += 1
            }
        }

        mutating func value() throws -> OrderedJSON {
            skipWhitespace()
            guard !atEnd else { throw error("unexpected end") }
            switch bytes[position] {
            case UInt8(ascii: "{"):
                position += 1
                var members: [(key: String, value: OrderedJSON)] = []
                skipWhitespace()
                if !atEnd, bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                while true {
                    skipWhitespace()
                    let key = try string()
                    skipWhitespace()
                    try expect(":")
                    members.append((key, try value()))
                    skipWhitespace()
                    guard !atEnd else { throw error("unterminated object") }
                    if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                    try expect("}")
                    return .object(members)
                }
            case UInt8(ascii: "["):
                position += 1
                var elements: [OrderedJSON] = []
                skipWhitespace()
                if !atEnd, bytes[position] == UInt8(ascii: "]") { position += 1; return .array(elements) }
                while true {
                    elements.append(try value())
                    skipWhitespace()
                    guard !atEnd else { throw error("unterminated array") }
                    if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                    try expect("]")
                    return .array(elements)
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try expect("true"); return .bool(true)
            case UInt8(ascii: "f"):
                try expect("false"); return .bool(false)
            case UInt8(ascii: "n"):
                try expect("null"); return .null
            default:
                let start = position
                while !atEnd, "+-0123456789.eE".utf8.contains(bytes[position]) { position += 1 }
                guard let number = Double(String(decoding: bytes[start..<position], as: UTF8.self)) else {
                    throw error("bad number")
                }
                return .number(number)
            }
        }

        mutating func string() throws -> String {
            try expect("\"")
            var scalars = String.UnicodeScalarView()
            var pendingHigh: UInt32?
            while true {
                guard !atEnd else { throw error("unterminated string") }
                let byte = bytes[position]
                if byte == UInt8(ascii: "\"") { position += 1; break }
                if byte == UInt8(ascii: "\\") {
                    position += 1
                    guard !atEnd else { throw error("unterminated escape") }
                    let escape = bytes[position]
                    position += 1
                    switch escape {
                    case UInt8(ascii: "\""): scalars.append("\"")
                    case UInt8(ascii: "\\"): scalars.append("\\")
                    case UInt8(ascii: "/"): scalars.append("/")
                    case UInt8(ascii: "b"): scalars.append("\u{08}")
                    case UInt8(ascii: "f"): scalars.append("\u{0C}")
                    case UInt8(ascii: "n"): scalars.append("\n")
                    case UInt8(ascii: "r"): scalars.append("\r")
                    case UInt8(ascii: "t"): scalars.append("\t")
                    case UInt8(ascii: "u"):
                        guard position + 4 <= bytes.count,
                              let code = UInt32(String(decoding: bytes[position..<position + 4], as: UTF8.self), radix: 16)
                        else { throw error("bad \\u escape") }
                        position += 4
                        if (0xD800...0xDBFF).contains(code) {
                            pendingHigh = code
                            continue
                        }
                        if (0xDC00...0xDFFF).contains(code), let high = pendingHigh {
                            let combined = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)
                            scalars.append(Unicode.Scalar(combined)!)
                        } else if let scalar = Unicode.Scalar(code) {
                            scalars.append(scalar)
                        }
                    default: throw error("bad escape")
                    }
                    pendingHigh = nil
                    continue
                }
                // Copy one UTF-8 sequence.
                let length = byte < 0x80 ? 1 : byte < 0xE0 ? 2 : byte < 0xF0 ? 3 : 4
                guard position + length <= bytes.count else { throw error("truncated UTF-8") }
                scalars.append(contentsOf: String(decoding: bytes[position..<position + length], as: UTF8.self).unicodeScalars)
                position += length
            }
            return String(scalars)
        }
    }
}
