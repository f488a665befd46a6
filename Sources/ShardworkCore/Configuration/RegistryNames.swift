/// The one rule for names that become registry node names: job names and the ZooKeeper namespace.
/// The host configuration file, the control API and a name found in the registry are all checked
/// by it, so that a name one of them accepts never fails later as an invalid path.
///
/// A name is one node name that ZooKeeper accepts (its `PathUtils.validatePath`: not `.` or `..`,
/// no `/`, none of NUL, U+007F–U+009F, private-use U+E000–U+F8FF, U+FFF0 and above, which takes in
/// every character outside the Basic Multilingual Plane, emoji among them), with no whitespace,
/// control or invisible formatting characters (a name is typed on command lines, put in URLs and
/// printed in logs, where those would hide or forge text), and not longer than a limit that keeps a
/// job's resharding within ZooKeeper's 1 MB request limit (``JobLimits/maximumShardingTotalCount``).
public enum RegistryNames {
    /// The longest job name, in UTF-8 bytes.
    public static let maximumJobNameBytes = 128
    /// The longest ZooKeeper namespace, in UTF-8 bytes.
    public static let maximumNamespaceBytes = 64

    /// What is wrong with `name` as a job name, and what to do; `nil` when it is a valid one.
    public static func jobNameProblem(_ name: String) -> String? {
        if let problem = nodeNameProblem(name, limit: maximumJobNameBytes) { return problem }
        if name.contains("@-@") {
            return "must not contain '@-@' (ElasticJob's task id separator: every fire of the job would fail)"
        }
        return nil
    }

    /// What is wrong with `name` as a ZooKeeper namespace, and what to do; `nil` when it is valid.
    public static func namespaceProblem(_ name: String) -> String? {
        if let problem = nodeNameProblem(name, limit: maximumNamespaceBytes) { return problem }
        if name == "zookeeper" {
            return "'zookeeper' is ZooKeeper's own reserved tree (/zookeeper); choose another namespace"
        }
        return nil
    }

    /// The rules every node name follows.
    static func nodeNameProblem(_ name: String, limit: Int) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name == "." || name == ".." { return "must not be '.' or '..' (ZooKeeper refuses them as node names)" }
        if name.contains("/") { return "must not contain '/' (it is one registry node name)" }
        for (offset, scalar) in name.unicodeScalars.enumerated() {
            if let kind = refusedKind(scalar) {
                return "must not contain \(kind) (\(codePoint(scalar)) at character \(offset + 1)); "
                    + "use letters, digits and punctuation such as - _ ."
            }
        }
        let bytes = name.utf8.count
        if bytes > limit {
            return "is \(bytes) bytes long, more than the \(limit) allowed (the name is part of every registry path of the job, "
                + "and a resharding writes them all in one ZooKeeper request)"
        }
        return nil
    }

    /// Why ZooKeeper or this rule refuses `scalar`, or `nil` when it is allowed.
    private static func refusedKind(_ scalar: Unicode.Scalar) -> String? {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: return "a control character"
        case 0xE000...0xF8FF: return "a private-use character, which ZooKeeper refuses"
        case 0xFFF0...0xFFFF: return "a character ZooKeeper refuses"
        case 0x10000...: return "a character outside the Basic Multilingual Plane (such as an emoji), which ZooKeeper refuses"
        default: break
        }
        if scalar.properties.isWhitespace { return "whitespace" }
        if scalar.properties.generalCategory == .format { return "an invisible formatting character" }
        return nil
    }

    private static func codePoint(_ scalar: Unicode.Scalar) -> String {
        let hex = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }
}
