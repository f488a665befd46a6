/// "Did you mean ...?" for names a user typed: provider names, configuration fields.
public enum NameSuggestion {
    /// The closest of `names` within two edits, ignoring case and the difference between `-` and
    /// `_`, or else a name that the given one begins (`shardwork.item.timeout` for
    /// `shardwork.item.timeout.seconds`); `nil` when nothing is that close.
    public static func nearest(_ name: String, among names: [String]) -> String? {
        func normalized(_ text: String) -> [Character] {
            Array(text.lowercased().map { $0 == "_" ? "-" : $0 })
        }
        let target = normalized(name)
        var best: (name: String, distance: Int)?
        for candidate in names {
            let normalizedCandidate = normalized(candidate)
            var distance = editDistance(target, normalizedCandidate)
            if distance > 2, target.count >= 4, normalizedCandidate.starts(with: target) {
                distance = 2
            }
            if distance <= 2, distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.name
    }

    /// Levenshtein distance.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
