public import Foundation

/// A Quartz cron expression (the syntax ElasticJob job configurations use) bound to a time zone,
/// answering "when does this fire next?".
///
/// The syntax, what is accepted and rejected, and every fire time are those of Quartz 2.3.2's
/// `org.quartz.CronExpression`, including its behaviour at daylight-saving changes:
///
///     seconds minutes hours day-of-month month day-of-week [year]
///     0       15      10    ?            *     MON-FRI
///
/// Exactly one of day-of-month and day-of-week must be `?`. Fields take `*`, numbers, lists
/// (`1,15`), ranges (`MON-FRI`, and wrapping ones such as `22-2` or `FRI-MON`) and steps (`0/15`,
/// `*/5`, `10-40/10`); months are 1-12 or JAN-DEC, weekdays 1-7 (1 = Sunday) or SUN-SAT, in any
/// case. Day-of-month also takes `L` (last day), `L-3` (third-to-last), `15W` (weekday nearest the
/// 15th, within the month) and `LW`; day-of-week takes `6L` (last Friday) and `6#3` (third
/// Friday). Instants are epoch milliseconds.
///
/// Like Quartz, fire times are only computed up to ``yearHorizon`` (the current year + 100).
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    /// The expression as given.
    public let expression: String
    /// The zone whose wall clock the expression's fields describe.
    public let timeZone: TimeZone

    let fields: CronFields
    let zoneRules: ZoneRules

    /// Parses `expression` for the wall clock of `timeZone`.
    ///
    /// - Throws: ``CronError`` naming the field and the 1-based position of the first problem.
    public init(_ expression: String, timeZone: TimeZone = .gmt) throws(CronError) {
        var parser = CronParser(expression, yearHorizon: Self.yearHorizon)
        self.fields = try parser.parse()
        self.expression = expression
        self.timeZone = timeZone
        self.zoneRules = ZoneRules.forZone(timeZone)
    }

    /// The first fire time strictly after `instant`, in epoch milliseconds; `nil` when there is
    /// none (the expression's years are past, or it names a day that never comes, like Feb 30).
    ///
    /// Works in whole seconds: the search starts one second after `instant` with the
    /// milliseconds dropped, as Quartz's does.
    public func nextFireTime(after instant: Int64) -> Int64? {
        fields.nextFireTime(after: instant, zone: zoneRules, yearHorizon: Self.yearHorizon)
    }

    /// Up to `count` consecutive fire times after `instant`, each computed from the one before
    /// (as a trigger would); fewer when the expression stops firing.
    public func nextFireTimes(after instant: Int64, count: Int) -> [Int64] {
        var times: [Int64] = []
        times.reserveCapacity(max(0, min(count, 1024)))
        var previous = instant
        while times.count < count, let next = nextFireTime(after: previous) {
            times.append(next)
            previous = next
        }
        return times
    }

    /// The expression text.
    public var description: String { expression }

    /// Two expressions are equal when their text and time zone are.
    public static func == (lhs: CronExpression, rhs: CronExpression) -> Bool {
        lhs.expression == rhs.expression && lhs.timeZone == rhs.timeZone
    }

    /// The last year fire times are computed for: the current year + 100, as in Quartz, which
    /// gives up on expressions that cannot fire by then (and fills `*` in the year field up to it).
    public static let yearHorizon: Int = {
        let days = Int((Date().timeIntervalSince1970 / 86_400).rounded(.down))
        return LenientCalendar.civil(fromDays: days).year + 100
    }()

    // MARK: Time zones

    /// The time zone named `name`, as ElasticJob configurations write them: a tz database
    /// identifier (`Asia/Shanghai`, `America/New_York`, `UTC`) or a Java-style offset (`GMT+8`,
    /// `GMT+08:00`, `GMT-0530`).
    ///
    /// - Throws: ``CronError`` with field ``CronError/Field/timeZone`` for a name that is neither.
    ///   (Java silently falls back to GMT for unknown names; a typo here should not move jobs.)
    public static func timeZone(named name: String) throws(CronError) -> TimeZone {
        if let seconds = javaCustomOffset(name) {
            if let zone = TimeZone(secondsFromGMT: seconds) { return zone }
        } else if !name.isEmpty, let zone = TimeZone(identifier: name) {
            return zone
        }
        var message = "unknown time zone"
        if let nearest = NameSuggestion.nearest(name, among: TimeZone.knownTimeZoneIdentifiers) {
            message += "; did you mean '\(nearest)'?"
        } else {
            message += "; use a tz database name such as 'Asia/Shanghai' or an offset such as 'GMT+08:00'"
        }
        throw CronError(input: name, field: .timeZone, position: 1, message: message)
    }

    /// Seconds east of GMT for Java's custom zone ids: `GMT` then a sign, then `h`, `hh`, `hhmm`
    /// or `h[h]:mm`, hours at most 23 and minutes at most 59.
    static func javaCustomOffset(_ name: String) -> Int? {
        let scalars = Array(name.unicodeScalars)
        guard scalars.count >= 5, String(String.UnicodeScalarView(scalars[0..<3])) == "GMT" else { return nil }
        let sign: Int
        switch scalars[3] {
        case "+": sign = 1
        case "-": sign = -1
        default: return nil
        }
        var hours = 0
        var number = 0
        var digits = 0
        var colons = 0
        for scalar in scalars[4...] {
            if scalar == ":" {
                guard colons == 0, digits <= 2 else { return nil }
                hours = number
                colons += 1
                number = 0
                digits = 0
                continue
            }
            guard ("0"..."9").contains(scalar) else { return nil }
            number = number * 10 + Int(scalar.value) - 48
            digits += 1
            guard digits <= 9 else { return nil }
        }
        var minutes = number
        if colons == 0 {
            if digits <= 2 {
                hours = number
                minutes = 0
            } else {
                hours = number / 100
                minutes = number % 100
            }
        } else if digits != 2 {
            return nil
        }
        guard hours <= 23, minutes <= 59 else { return nil }
        return sign * (hours * 60 + minutes) * 60
    }
}
