/// A job's `props`: string keys and values, in the order of the job's configuration.
///
/// The typed accessors validate as ElasticJob's property validators do and throw a
/// ``ConfigurationError`` that names the key, so a provider can check its configuration when the
/// host creates it for a job (at registration, before the job ever fires).
public struct JobProperties: Sendable, Equatable, Sequence {
    public private(set) var entries: [(key: String, value: String)]

    public init(_ entries: [(key: String, value: String)] = []) {
        self.entries = entries
    }

    public init(_ dictionary: [String: String]) {
        self.entries = dictionary.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }

    public static func == (lhs: JobProperties, rhs: JobProperties) -> Bool {
        lhs.entries.elementsEqual(rhs.entries) { $0.key == $1.key && $0.value == $1.value }
    }

    public func makeIterator() -> IndexingIterator<[(key: String, value: String)]> {
        entries.makeIterator()
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// The value of `key`, or `nil`. A key given twice keeps its last value, as a YAML map would.
    public subscript(key: String) -> String? {
        entries.last { $0.key == key }?.value
    }

    /// The value of `key`; throws "The property `key` is required." when it is missing.
    public func required(_ key: String) throws(ConfigurationError) -> String {
        guard let value = self[key] else {
            throw ConfigurationError(field: key, message: "The property `\(key)` is required.")
        }
        return value
    }

    /// The value of `key` as a whole number from 1 to 2147483647 (a Java int, as ElasticJob reads
    /// its properties), or `defaultValue` when the key is missing. The bound keeps the arithmetic a
    /// plugin does with the value (milliseconds to nanoseconds, a sum of two timeouts) from
    /// overflowing.
    public func positiveInteger(_ key: String, default defaultValue: Int) throws(ConfigurationError) -> Int {
        try positiveInteger(key, default: defaultValue, maximum: Int(Int32.max))
    }

    /// The value of `key` as a whole number from 1 to `maximum`, or `defaultValue` when the key is
    /// missing.
    public func positiveInteger(_ key: String, default defaultValue: Int, maximum: Int) throws(ConfigurationError) -> Int {
        guard let text = self[key] else { return defaultValue }
        guard let value = Int(text.trimmingWhitespace()) else {
            throw ConfigurationError(
                field: key, message: "The property `\(key)` should be an integer, got '\(text)'.")
        }
        guard value > 0 else {
            throw ConfigurationError(
                field: key, message: "The property `\(key)` should be positive, got \(value).")
        }
        guard value <= maximum else {
            throw ConfigurationError(
                field: key, message: "The property `\(key)` should be at most \(maximum), got \(value).")
        }
        return value
    }

    /// The value of `key` as `true` or `false` (any case), or `defaultValue` when the key is missing.
    public func boolean(_ key: String, default defaultValue: Bool) throws(ConfigurationError) -> Bool {
        guard let text = self[key] else { return defaultValue }
        switch text.trimmingWhitespace().lowercased() {
        case "true": return true
        case "false": return false
        default:
            throw ConfigurationError(
                field: key, message: "The property `\(key)` should be true or false, got '\(text)'.")
        }
    }
}

extension String {
    func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) }) ?? start
        return self[start...end]
    }
}

/// A provider's configuration is invalid. The host refuses the job and shows `field` and `message`.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The configuration key at fault, for example `fixed.threads`.
    public var field: String?
    public var message: String

    public init(field: String? = nil, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { message }
}

/// A job, handler or listener failed. `code` travels to error handlers (a script's exit status, an
/// HTTP status); `message` is what the user reads.
public struct JobError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var code: Int32

    public init(_ message: String, code: Int32 = 0) {
        self.message = message
        self.code = code
    }

    public var description: String { message }
}
