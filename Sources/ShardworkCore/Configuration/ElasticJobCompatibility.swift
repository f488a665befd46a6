public import Foundation

/// The ElasticJob version whose nodes must be able to read what Shardwork writes into a namespace
/// (`registry.zookeeper.elasticJobCompatibility`), so that Java nodes and Shardwork hosts can share
/// it during a migration (docs/migrating-from-elasticjob.md). Shardwork reads every spelling
/// whatever the target; the target decides what it writes.
public enum ElasticJobCompatibility: String, Sendable, Equatable, CaseIterable, Codable {
    /// ElasticJob-Lite 3.0.4: the executor key is `jobExecutorServiceHandlerType`; time zones are
    /// GMT offsets only. The default: a 3.0.4 node can join any job.
    case elasticJob304 = "3.0.4"
    /// ElasticJob-Lite 3.0.5 and later: the executor key is `jobExecutorThreadPoolSizeProviderType`;
    /// time zones are GMT offsets only.
    case elasticJob305 = "3.0.5"
    /// No ElasticJob node reads the namespace: the later spelling, and time zones by tz-database name
    /// (daylight saving time included).
    case none

    public static let `default`: Self = .elasticJob304

    /// The executor key this target writes for a job whose stored configuration has none yet.
    public var executorKey: ElasticJobExecutorKey {
        self == .elasticJob304 ? .serviceHandler : .threadPoolSizeProvider
    }

    /// The job type as a new job's root node holds it for this target: ElasticJob's own spelling of
    /// its type names (`SCRIPT`, `HTTP`), which its nodes compare letter for letter with theirs;
    /// any other name as it is.
    public func storedJobType(_ type: String) -> String {
        guard self != .none else { return type }
        return Self.elasticJobTypeNames[type.trimmingCharacters(in: .whitespaces).lowercased()] ?? type
    }

    /// ElasticJob's type-based jobs, by the name Shardwork's providers answer to.
    static let elasticJobTypeNames = ["script": "SCRIPT", "http": "HTTP"]

    /// Whether nodes of this target read only GMT offsets as time zones (ElasticJob's
    /// `JobScheduleController` refuses any other id, and a node that cannot parse a job's time zone
    /// stays registered holding its items without running them).
    public var readsOnlyGMTOffsets: Bool { self != .none }

    /// `timeZone` as this target's nodes read it: a GMT offset as it is; a tz-database name whose
    /// offset no longer changes (no daylight saving time from now on) as the GMT offset it equals,
    /// which is exact for every instant to come; `nil` for none (the host's zone). Throws, with the
    /// offset it has now, for a zone whose offset changes: no GMT offset follows it.
    public func storedTimeZone(_ name: String?, now: Date = Date()) throws(TimeZoneNotReadable) -> String? {
        guard let name, !name.isEmpty, readsOnlyGMTOffsets else { return name }
        if name.hasPrefix("GMT"), CronExpression.javaCustomOffset(name) != nil || name == "GMT" { return name }
        // Unknown names are the time zone check's to refuse, with its suggestion.
        guard let zone = try? CronExpression.timeZone(named: name) else { return name }
        let offset = Self.gmtOffset(seconds: zone.secondsFromGMT(for: now))
        guard zone.nextDaylightSavingTimeTransition(after: now) == nil, !zone.isDaylightSavingTime(for: now) else {
            throw TimeZoneNotReadable(name: name, target: self, offsetNow: offset)
        }
        return offset
    }

    /// Java's custom zone id for an offset: `GMT`, or `GMT+hh:mm` / `GMT-hh:mm`.
    static func gmtOffset(seconds: Int) -> String {
        guard seconds != 0 else { return "GMT" }
        let minutes = abs(seconds) / 60
        let hours = String(minutes / 60), rest = String(minutes % 60)
        return "GMT" + (seconds > 0 ? "+" : "-") + String(repeating: "0", count: 2 - hours.count) + hours + ":"
            + String(repeating: "0", count: 2 - rest.count) + rest
    }
}

/// The two spellings of the executor strategy's key in a `config` node.
public enum ElasticJobExecutorKey: String, Sendable, Equatable, CaseIterable {
    /// ElasticJob 3.0.4's.
    case serviceHandler = "jobExecutorServiceHandlerType"
    /// ElasticJob 3.0.5's and later (#2313).
    case threadPoolSizeProvider = "jobExecutorThreadPoolSizeProviderType"

    /// The spelling a stored `config` node uses, if it names an executor at all: a change to the job
    /// is written back in it, so that the nodes that read it now still do.
    public static func used(in storedText: String) -> Self? {
        for line in storedText.split(separator: "\n", omittingEmptySubsequences: true) {
            for key in allCases where line.hasPrefix(key.rawValue + ":") { return key }
        }
        return nil
    }

    /// What to write for a job: the stored node's spelling when it has one, the target's otherwise.
    public static func toWrite(stored: String?, target: ElasticJobCompatibility) -> Self {
        stored.flatMap(used(in:)) ?? target.executorKey
    }
}

/// Job type names as ElasticJob compares them: `SCRIPT` and `script` are one type (Shardwork's
/// providers resolve names the same way, trimmed and without regard to case).
public enum JobTypeName {
    /// Whether `local` names the job type `stored` (a root node's value) does: the same name in any
    /// case, or, for a stored ElasticJob class that `jobClasses` maps, its job type.
    public static func matches(_ stored: String, _ local: String, jobClasses: [String: String] = [:]) -> Bool {
        func same(_ one: String, _ other: String) -> Bool {
            one.trimmingCharacters(in: .whitespaces).lowercased() == other.trimmingCharacters(in: .whitespaces).lowercased()
        }
        return same(stored, local) || jobClasses[stored].map { same($0, local) } == true
    }
}

/// A time zone that the compatibility target's ElasticJob nodes cannot read.
public struct TimeZoneNotReadable: Error, Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var target: ElasticJobCompatibility
    /// The zone's offset now, as a GMT offset.
    public var offsetNow: String

    public var description: String {
        "'\(name)' changes its offset with daylight saving time, and ElasticJob \(target.rawValue) nodes read only GMT offsets "
            + "(such as '\(offsetNow)', its offset now), which do not follow it: a Java node of this namespace could not schedule the job. "
            + "Give a GMT offset, or set registry.zookeeper.elasticJobCompatibility: none if no ElasticJob node runs in this namespace"
    }
}
