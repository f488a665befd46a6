/// ZooKeeper's rules for node paths (its client's `PathUtils.validatePath`), and splitting a path
/// into parent and name.
enum RegistryPath {
    private static let slash = UInt8(ascii: "/")
    private static let dot = UInt8(ascii: ".")

    /// Whether `path` names a node: absolute, `/`-separated, no trailing slash except the root, no
    /// empty, `.` or `..` segment, and none of the characters ZooKeeper refuses (NUL, controls,
    /// U+007F–U+009F, private use U+E000–U+F8FF, U+FFF0 and above).
    ///
    /// With `sequential`, the path is only a prefix: ZooKeeper validates `path + "1"`, so a trailing
    /// slash (`/jobs/`) and a last segment of `.` or `..` are accepted, because the server appends
    /// the counter to them.
    static func isValid(_ path: String, sequential: Bool = false) -> Bool {
        let bytes = path.utf8
        guard bytes.first == slash else { return false }
        if bytes.count == 1 { return true }

        var segmentLength = 0
        var segmentIsDots = true
        var nonASCII = false
        for byte in bytes.dropFirst() {
            if byte == slash {
                if segmentLength == 0 || (segmentIsDots && segmentLength <= 2) { return false }
                segmentLength = 0
                segmentIsDots = true
                continue
            }
            segmentLength += 1
            if byte != dot { segmentIsDots = false }
            if byte < 0x20 || byte == 0x7F { return false }
            if byte >= 0x80 { nonASCII = true }
        }
        // The counter a sequential create appends completes the last segment.
        if !sequential && (segmentLength == 0 || (segmentIsDots && segmentLength <= 2)) { return false }
        return !nonASCII || path.unicodeScalars.allSatisfy(isAllowed)
    }

    /// ZooKeeper checks UTF-16 code units, so a character outside the Basic Multilingual Plane (a
    /// surrogate pair there) is refused as well.
    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x7F...0x9F, 0xE000...0xF8FF, 0xFFF0...: false
        default: true
        }
    }

    /// The parent path and the last segment of a valid path other than the root. For a sequential
    /// prefix ending in `/`, the name is empty.
    static func split(_ path: String) -> (parent: String, name: Substring) {
        let bytes = path.utf8
        guard let last = bytes.lastIndex(of: slash), last != bytes.startIndex else {
            return ("/", path.dropFirst())
        }
        return (String(path[..<last]), path[path.index(after: last)...])
    }

    /// ZooKeeper's sequence suffix: the counter formatted as `%010d` (a negative counter, after
    /// 2^31 creations, keeps its sign within the ten characters, as Java formats it).
    static func sequenceSuffix(_ counter: Int32) -> String {
        let digits = String(counter.magnitude)
        let width = counter < 0 ? 9 : 10
        let padding = String(repeating: "0", count: max(0, width - digits.count))
        return (counter < 0 ? "-" : "") + padding + digits
    }
}
