import Foundation
import ShardworkSDK
import Yams

/// The YAML that ElasticJob stores in a job's `config` node: its `JobConfigurationPOJO` dumped by
/// SnakeYAML (`dumpAsMap`: block style, properties sorted by name, `null` values and empty lists and
/// maps left out, strings quoted where a plain scalar would read as something else). Writing the
/// same text lets ElasticJob's tools read a Shardwork namespace; reading accepts what they write,
/// including the 3.0.4 spelling of the executor key.
///
/// `jobType` is not part of it: like ElasticJob's job class, it lives in the job's root node.
public enum ElasticJobYAML {
    /// `job` as ElasticJob writes it: the fields of the `config` node sorted by name, text that may
    /// be absent only when present, lists and `props` only when not empty. The executor strategy goes
    /// under `executorKey`: ElasticJob 3.0.4 reads only `jobExecutorServiceHandlerType`, 3.0.5 and
    /// later only `jobExecutorThreadPoolSizeProviderType` (``ElasticJobExecutorKey/toWrite(stored:target:)``).
    public static func encode(_ job: JobConfiguration, executorKey: ElasticJobExecutorKey = .threadPoolSizeProvider) -> String {
        var fields: [(String, String)] = []
        for field in JobField.all where field.isInConfigNode {
            let key = field.key == ElasticJobExecutorKey.threadPoolSizeProvider.rawValue ? executorKey.rawValue : field.key
            switch field.value {
            case .text(let path):
                fields.append((key, " " + quoted(job[keyPath: path])))
            case .optionalText(let path):
                if let value = job[keyPath: path] { fields.append((key, " " + quoted(value))) }
            case .flag(let path):
                fields.append((key, " \(job[keyPath: path])"))
            case .whole(let path):
                fields.append((key, " \(job[keyPath: path])"))
            case .list(let path):
                let values = job[keyPath: path]
                if !values.isEmpty {
                    fields.append((key, "\n" + values.map { "- " + quoted($0) }.joined(separator: "\n")))
                }
            case .properties(let path):
                let properties = job[keyPath: path]
                if !properties.isEmpty {
                    fields.append((key, "\n" + properties.entries.map { "  " + quoted($0.key) + ": " + quoted($0.value) }.joined(separator: "\n")))
                }
            case .notStored:
                break
            }
        }
        return fields.sorted { $0.0 < $1.0 }.map { "\($0.0):\($0.1)\n" }.joined()
    }

    /// The keys the `config` node may hold: the POJO's fields, with the 3.0.4 executor key.
    static let fields = JobField.all.filter(\.isInConfigNode).map(\.key)

    /// Reads the `config` node of job `job`. `jobType` comes from the job's root node. Absent fields
    /// take ElasticJob's YAML defaults. A configuration that names another job is refused: applied,
    /// the job's code would be told the wrong name.
    public static func decode(_ text: String, jobType: String, job: String) throws(HostConfigurationError) -> JobConfiguration {
        let path = JobNodePath(job: job).config
        let reader = Reader(file: path)
        let root = try reader.compose(text, whenEmpty: "the node is empty")
        // The local reader checks the same fields with the same rules; the registry's copy has no
        // `jobType` field of its own, so it is added before reading.
        guard case .mapping(var mapping) = root else {
            throw reader.error(root, field: "", "expected a mapping, got \(reader.describe(root))")
        }
        mapping[Node("jobType")] = Node(jobType)
        var locations: [String: FilePosition] = [:]
        let decoded = try reader.job(.mapping(mapping), index: 0, locations: &locations)
        guard decoded.jobName == job else {
            throw reader.error(
                mapping[Node("jobName")], job: job, field: "jobName",
                "names job \(LogText.quoted(decoded.jobName)), but it is the configuration of \(LogText.quoted(job)); "
                    + "a job's configuration must carry its own name (correct it with `shardwork job update`)")
        }
        return decoded
    }

    /// `value` as SnakeYAML writes a string scalar in block style: plain when it reads back as the
    /// same string, in single quotes otherwise, in double quotes with escapes when it holds
    /// characters that cannot be written as they are.
    static func quoted(_ value: String) -> String {
        if value.unicodeScalars.contains(where: needsEscape) {
            return doubleQuoted(value)
        }
        if allowsPlain(value) { return value }
        return "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09: false  // tab is printable for SnakeYAML but not plain-safe; handled by allowsPlain
        case 0x0A, 0x0D: true
        case 0x20...0x7E: false
        case 0x85, 0xA0...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: scalar.value == 0xFEFF
        default: true
        }
    }

    private static func doubleQuoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where needsEscape(scalar):
                let hex = String(scalar.value, radix: 16, uppercase: true)
                out += scalar.value <= 0xFF ? "\\x" + String(repeating: "0", count: 2 - hex.count) + hex
                    : scalar.value <= 0xFFFF ? "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    : "\\U" + String(repeating: "0", count: 8 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// SnakeYAML's `analyzeScalar` for block context, and its resolver: a plain scalar must not start
    /// with an indicator, must not contain `: ` or ` #`, must not start or end with a space, and must
    /// not read back as a boolean, number, null, timestamp, merge or value.
    static func allowsPlain(_ value: String) -> Bool {
        guard let first = value.unicodeScalars.first, let last = value.unicodeScalars.last else { return false }
        if first == " " || first == "\t" || last == " " || last == "\t" { return false }
        let scalars = Array(value.unicodeScalars)
        let alwaysIndicators: Set<Unicode.Scalar> = ["#", ",", "[", "]", "{", "}", "&", "*", "!", "|", ">", "'", "\"", "%", "@", "`"]
        if alwaysIndicators.contains(first) { return false }
        if first == "-" || first == "?" || first == ":" {
            if scalars.count == 1 || scalars[1] == " " || scalars[1] == "\t" { return false }
        }
        for index in scalars.indices {
            let scalar = scalars[index]
            if scalar == "\t" { return false }
            if scalar == ":" && (index + 1 == scalars.count || scalars[index + 1] == " ") { return false }
            if scalar == "#" && index > 0 && scalars[index - 1] == " " { return false }
        }
        return !readsAsOtherType(value)
    }

    /// SnakeYAML's implicit resolvers (YAML 1.1): booleans, integers, floats, null, timestamps, merge
    /// and value keys.
    // Compiled once and only ever matched against: a Regex holds no state that matching changes.
    nonisolated(unsafe) private static let resolvers: [Regex<AnyRegexOutput>] = [
        #"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"#,
        #"^(?:[-+]?0b_*[0-1]+[0-1_]*|[-+]?0_*[0-7]+[0-7_]*|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x_*[0-9a-fA-F]+[0-9a-fA-F_]*|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"#,
        #"^(?:[-+]?(?:\.[0-9]+|[0-9_]+(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"#,
        #"^(?:~|null|Null|NULL| )$"#,
        #"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"#,
        #"^(?:<<)$"#,
        #"^(?:=)$"#,
    ].compactMap { try? Regex($0) }

    private static func readsAsOtherType(_ value: String) -> Bool {
        resolvers.contains { (try? $0.wholeMatch(in: value)) != nil }
    }
}
