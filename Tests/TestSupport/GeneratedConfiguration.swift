import Foundation

/// Generated hostile host configurations, for the tests that require each to end in a clean
/// refusal or a clean start: a sound configuration of three jobs of the C test plugin, and
/// mutations of it (a value replaced by one at or past a bound, a name ZooKeeper refuses, garbage
/// or the wrong shape; a field removed; an unknown or repeated field added). `{PLUGINS}` in the
/// rendered text stands for the plugin directory.
public enum GeneratedConfiguration {
    /// A YAML value: a scalar written as given (already YAML), a mapping in order, or a list.
    public indirect enum YAML: Sendable {
        case scalar(String)
        case map([(String, YAML)])
        case list([YAML])

        public func render(indent: Int = 0) -> String {
            let pad = String(repeating: " ", count: indent)
            switch self {
            case .scalar(let text):
                return text
            case .map(let entries):
                if entries.isEmpty { return "{}" }
                return entries.map { key, value in
                    switch value {
                    case .scalar(let text): "\(pad)\(key): \(text)"
                    case .map(let inner) where inner.isEmpty: "\(pad)\(key): {}"
                    case .list(let inner) where inner.isEmpty: "\(pad)\(key): []"
                    case .map: "\(pad)\(key):\n" + value.render(indent: indent + 2)
                    case .list: "\(pad)\(key):\n" + value.render(indent: indent + 2)
                    }
                }.joined(separator: "\n")
            case .list(let items):
                if items.isEmpty { return "[]" }
                return items.map { item in
                    switch item {
                    case .scalar(let text):
                        return "\(pad)- \(text)"
                    default:
                        let body = item.render(indent: indent + 2)
                        return "\(pad)- " + body.dropFirst(indent + 2)
                    }
                }.joined(separator: "\n")
            }
        }
    }

    /// `text` as a YAML double-quoted scalar, with escapes for what cannot be written as it is.
    public static func quoted(_ text: String) -> YAML {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out += "\\x" + String(format: "%02X", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return .scalar(out + "\"")
    }

    static func job(_ name: String, type: String, cron: String?, total: Int, props: [(String, String)]) -> YAML {
        var entries: [(String, YAML)] = [("jobName", .scalar(name)), ("jobType", .scalar(type))]
        if let cron { entries.append(("cron", quoted(cron))) }
        entries += [
            ("shardingTotalCount", .scalar("\(total)")), ("shardingItemParameters", quoted("0=a,1=b")), ("jobParameter", quoted("p")),
            ("monitorExecution", .scalar("true")), ("misfire", .scalar("false")), ("maxTimeDiffSeconds", .scalar("-1")),
            ("reconcileIntervalMinutes", .scalar("0")), ("jobShardingStrategyType", .scalar("average")),
            ("jobExecutorThreadPoolSizeProviderType", .scalar("cpu")), ("jobErrorHandlerType", .scalar("log")),
            ("props", .map(props.map { ($0.0, quoted($0.1)) })),
        ]
        return .map(entries)
    }

    /// A sound configuration: every mutation starts from it.
    public static var base: YAML {
        .map([
            ("registry", .map([("embedded", .map([]))])),
            ("plugins", .map([("directories", .list([.scalar("{PLUGINS}")])), ("preflight", .scalar("false")), ("preflightTimeoutSeconds", .scalar("5"))])),
            ("host", .map([("shutdownTimeoutSeconds", .scalar("1")), ("workerThreads", .scalar("4"))])),
            ("jobs", .list([
                job("alpha", type: "c-echo", cron: "* * * * * ?", total: 3, props: [("c.note", "x")]),
                job("beta", type: "c-wait", cron: "0/2 * * * * ?", total: 2, props: [("c.wait.ms", "10"), ("shardwork.item.timeout.seconds", "5")]),
                job("gamma", type: "c-countdown", cron: nil, total: 1, props: [("streaming.process", "true")]),
            ])),
        ])
    }

    /// Hostile values: numbers at and past every bound, names ZooKeeper or the rule refuses,
    /// garbage of every kind, and values of the wrong shape.
    public static let values: [YAML] = [
        "0", "-1", "1", "1024", "1025", "2147483647", "2147483648", "-2147483649", "4611686018427387904", "9223372036854775807",
        "-9223372036854775808", "99999999999999999999", "1e308", "-1e308", ".nan", ".inf", "-.inf", "0.0001", "1e-300", "true", "yes",
        "maybe", "~", "null", "[]", "{}", "[1, 2]", "{a: b}", "''",
    ].map { .scalar($0) } + [
        "", " ", ".", "..", "a/b", "a@-@b", "\t", "x\ny", "\u{1B}[31mred", "😀", "zookeeper", "\u{202E}txt", "\u{0}",
        String(repeating: "n", count: 300), String(repeating: "big", count: 100_000), "0=a,b", "x=1", "* * * * * * *", "0 0 0 * * *",
        "0 0 12 L W ?", "0 15 10 ? * 6#9", "Mars/Base", "GMT+99:00", "SINGLE_THREAD", "fixed", "nope", "c-crash", "THROW",
        "process", "in-process",
    ].map(quoted)

    /// Every path to a value of `yaml`, with the path to its mapping or list.
    static func paths(_ yaml: YAML, _ prefix: [String] = []) -> [[String]] {
        switch yaml {
        case .scalar: [prefix]
        case .map(let entries): [prefix] + entries.flatMap { paths($0.1, prefix + [$0.0]) }
        case .list(let items): [prefix] + items.indices.flatMap { paths(items[$0], prefix + ["#\($0)"]) }
        }
    }

    /// `yaml` with the value at `path` changed by `change` (`nil` removes it).
    static func changing(_ yaml: YAML, at path: ArraySlice<String>, _ change: (YAML) -> YAML?) -> YAML? {
        guard let head = path.first else { return change(yaml) }
        switch yaml {
        case .map(let entries):
            var result: [(String, YAML)] = []
            for (key, value) in entries {
                if key == head {
                    if let changed = changing(value, at: path.dropFirst(), change) { result.append((key, changed)) }
                } else {
                    result.append((key, value))
                }
            }
            return .map(result)
        case .list(let items):
            guard let index = Int(head.dropFirst()), items.indices.contains(index) else { return yaml }
            var result = items
            if let changed = changing(items[index], at: path.dropFirst(), change) { result[index] = changed } else { result.remove(at: index) }
            return .list(result)
        case .scalar:
            return yaml
        }
    }

    /// One mutation of `yaml`: a value replaced, a field removed, an unknown or repeated field added.
    public static func mutate(_ yaml: YAML, _ random: inout SplitMix64) -> YAML {
        let all = paths(yaml).filter { !$0.isEmpty }
        guard let path = all.randomElement(using: &random) else { return yaml }
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            return changing(yaml, at: path[...]) { _ in nil } ?? yaml
        case 1:
            return changing(yaml, at: path.dropLast()[...]) { parent in
                guard case .map(var entries) = parent else { return parent }
                entries.append((Bool.random(using: &random) ? (path.last ?? "x") : "unknownField", values.randomElement(using: &random)!))
                return .map(entries)
            } ?? yaml
        default:
            let value = values.randomElement(using: &random)!
            return changing(yaml, at: path[...]) { _ in value } ?? yaml
        }
    }
}
