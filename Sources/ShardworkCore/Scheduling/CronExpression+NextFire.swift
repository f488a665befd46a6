import Foundation
import Synchronization

// Quartz finds the next fire time by walking a java.util.GregorianCalendar field by field
// (second, minute, hour, day, month, year), setting fields leniently (minute 60 rolls into the
// next hour, day 0 is the last day of the month before) and restarting the walk whenever a field
// had to move. Its results at DST changes, at month ends and for 'W', 'L' and '#' follow from
// exactly that walk, so the search below takes the same steps over `LenientCalendar`, a small
// model of the calendar's lenient fields and its wall-clock-to-UTC rule, instead of Foundation's
// Calendar, which resolves skipped and repeated wall times differently and is slow on Linux.

/// Java's `Calendar.SUNDAY` and `Calendar.SATURDAY` (day-of-week 1-7, Sunday first).
private let sunday = 1
private let saturday = 7
private let millisecondsPerDay: Int64 = 86_400_000

extension CronFields {
    /// Quartz gives up when the walk passes this year.
    static let lastSearchedYear = 2999
    /// A bound on the walk's restarts. Quartz loops forever on a few expressions (`0W` in
    /// day-of-month, `L-30W` in a 30-day month); those get `nil` here. Real searches, even ones
    /// that walk month by month to the horizon, restart a few thousand times at most.
    static let searchStepLimit = 200_000

    /// The first fire time strictly after `instant` (epoch milliseconds), as Quartz's
    /// `CronExpression.getTimeAfter` computes it.
    func nextFireTime(after instant: Int64, zone: ZoneRules, yearHorizon: Int) -> Int64? {
        // Outside these bounds the calendar arithmetic could overflow; Quartz has nothing to
        // fire there either (it stops after 2999 and its years start at 1970).
        guard instant < 32_503_680_000_000 else { return nil }  // 3000-01-01
        let instant = max(instant, -62_135_596_800_000)  // 0001-01-01
        let searchStart = instant + 1000
        var calendar = LenientCalendar(zone: zone, utcMillis: searchStart)
        calendar.millisecond = 0
        let byDayOfMonth = !daysOfMonth.contains(QuartzMarker.noSpecificValue)

        // Each field Quartz sets is set here too, even to the value it already has: setting a
        // field makes the calendar resolve its wall time again, and inside a repeated (fall-back)
        // hour that moves it to the later, standard-time instant. That is why such an hour fires
        // only once, at its second occurrence.
        for _ in 0..<Self.searchStepLimit {
            if calendar.year > Self.lastSearchedYear { return nil }

            // Second.
            var second = calendar.second
            var minute = calendar.minute
            if let found = seconds.ceiling(second) {
                second = found
            } else {
                second = seconds.first
                minute += 1
                calendar.minute = minute
            }
            calendar.second = second

            // Minute.
            minute = calendar.minute
            var hour = calendar.hour
            let nextMinute = minutes.ceiling(minute)
            if nextMinute != minute {
                if nextMinute == nil { hour += 1 }
                calendar.second = 0
                calendar.minute = nextMinute ?? minutes.first
                calendar.setHourSkippingGap(hour)
                continue
            }
            calendar.minute = minute

            // Hour.
            hour = calendar.hour
            var day = calendar.day
            let nextHour = hours.ceiling(hour)
            if nextHour != hour {
                if nextHour == nil { day += 1 }
                calendar.second = 0
                calendar.minute = 0
                calendar.day = day
                calendar.setHourSkippingGap(nextHour ?? hours.first)
                continue
            }
            calendar.hour = hour

            // Day.
            day = calendar.day
            let month = calendar.month
            let moved =
                byDayOfMonth
                ? moveToDayOfMonth(&calendar, day: day, month: month, time: (hour, minute, second), searchStart: searchStart)
                : moveToDayOfWeek(&calendar, day: day, month: month)
            switch moved {
            case .restart: continue
            case .stay(let day): calendar.day = day
            }

            // Month.
            let monthNow = calendar.month
            var year = calendar.year
            if year > yearHorizon { return nil }
            let nextMonth = months.ceiling(monthNow)
            if nextMonth != monthNow {
                if nextMonth == nil { year += 1 }
                calendar.startOfMonth(month: nextMonth ?? months.first, year: year)
                continue
            }
            calendar.month = monthNow

            // Year.
            year = calendar.year
            guard let nextYear = years.ceiling(year) else { return nil }
            if nextYear != year {
                // Quartz moves there and then gives up; stopping now also keeps a year such as
                // 2042692032 (which it accepts) out of the date arithmetic.
                if nextYear > Self.lastSearchedYear { return nil }
                calendar.startOfMonth(month: 1, year: nextYear)
                continue
            }
            calendar.year = year
            return calendar.utcMillis
        }
        return nil
    }

    private enum DayMove {
        /// The calendar was moved; start the walk again from the seconds.
        case restart
        /// This day of the current month is the one.
        case stay(Int)
    }

    /// The day-of-month rule: a list or range, `L`, `L-n`, `nW`, `LW`.
    private func moveToDayOfMonth(
        _ calendar: inout LenientCalendar, day current: Int, month currentMonth: Int,
        time: (hour: Int, minute: Int, second: Int), searchStart: Int64
    ) -> DayMove {
        var day = current
        var month = currentMonth
        // The day Quartz compares the result with; its "no later day this month" branch has
        // none, so that branch always moves.
        var reference: Int? = current
        let year = calendar.year
        if lastDayOfMonth {
            day = LenientCalendar.daysInMonth(month, year: year) - lastDayOffset
            if nearestWeekday {
                let (weekday, passed) = nearestWeekdayCandidate(
                    day, month: month, year: year, time: time, zone: calendar.zone, searchStart: searchStart)
                day = weekday
                if passed {
                    day = 1
                    month += 1
                }
            } else if current > day {
                month += 1
                if month > 12 {
                    month = 1
                    calendar.addYear()
                }
                day = 1
            }
        } else if nearestWeekday {
            let (weekday, passed) = nearestWeekdayCandidate(
                daysOfMonth.first, month: month, year: year, time: time, zone: calendar.zone, searchStart: searchStart)
            day = weekday
            if passed {
                day = daysOfMonth.first
                month += 1
            }
        } else if let found = daysOfMonth.ceiling(day) {
            day = found
            if day > LenientCalendar.daysInMonth(month, year: year) {
                day = daysOfMonth.first
                month += 1
            }
        } else {
            reference = nil
            day = daysOfMonth.first
            month += 1
        }
        if day != reference || month != currentMonth {
            calendar.startOfDay(day: day, month: month)
            return .restart
        }
        return .stay(day)
    }

    /// The weekday nearest `day` in the month, never crossing into another month, and whether
    /// that day at the current time of day is already before the search start. Quartz works this
    /// out on a separate calendar set leniently to the day (so day 31 of a 30-day month is the
    /// 1st of the next one), which is reproduced here.
    private func nearestWeekdayCandidate(
        _ day: Int, month: Int, year: Int, time: (hour: Int, minute: Int, second: Int), zone: ZoneRules,
        searchStart: Int64
    ) -> (day: Int, passed: Bool) {
        var probe = LenientCalendar(zone: zone, utcMillis: 0)
        probe.setWallTime(year: year, month: month, day: day, hour: 0, minute: 0, second: 0)
        // Quartz's probe keeps the milliseconds of the moment it runs, so a candidate in the very
        // second the search starts from may or may not count as passed; 999 makes it count as not
        // passed, which is what Quartz does for whole-second instants like previous fire times.
        probe.millisecond = 999
        let weekday = probe.dayOfWeek
        let lastDay = LenientCalendar.daysInMonth(month, year: year)
        var day = day
        if weekday == saturday, day == 1 {
            day += 2
        } else if weekday == saturday {
            day -= 1
        } else if weekday == sunday, day == lastDay {
            day -= 2
        } else if weekday == sunday {
            day += 1
        }
        probe.second = time.second
        probe.minute = time.minute
        probe.hour = time.hour
        probe.day = day
        probe.month = month
        return (day, probe.utcMillis < searchStart)
    }

    /// The day-of-week rule: a list or range, `dL` (last such weekday) or `d#n` (nth weekday).
    private func moveToDayOfWeek(_ calendar: inout LenientCalendar, day: Int, month: Int) -> DayMove {
        let currentWeekday = calendar.dayOfWeek
        let lastDay = LenientCalendar.daysInMonth(month, year: calendar.year)
        if lastWeekdayOfMonth {
            var daysToAdd = Self.daysUntil(daysOfWeek.first, from: currentWeekday)
            if day + daysToAdd > lastDay {
                calendar.startOfDay(day: 1, month: month + 1)
                return .restart
            }
            while day + daysToAdd + 7 <= lastDay { daysToAdd += 7 }
            if daysToAdd > 0 {
                calendar.startOfDay(day: day + daysToAdd, month: month)
                return .restart
            }
            return .stay(day)
        }
        if nthWeekday != 0 {
            let shift = Self.daysUntil(daysOfWeek.first, from: currentWeekday)
            var target = day + shift
            let weekOfMonth = target / 7 + (target % 7 > 0 ? 1 : 0)
            let weeksToAdd = (nthWeekday - weekOfMonth) * 7
            target += weeksToAdd
            if weeksToAdd < 0 || target > lastDay {
                calendar.startOfDay(day: 1, month: month + 1)
                return .restart
            }
            if weeksToAdd > 0 || shift > 0 {
                calendar.startOfDay(day: target, month: month)
                return .restart
            }
            return .stay(target)
        }
        let wanted = daysOfWeek.ceiling(currentWeekday) ?? daysOfWeek.first
        let daysToAdd = Self.daysUntil(wanted, from: currentWeekday)
        if day + daysToAdd > lastDay {
            calendar.startOfDay(day: 1, month: month + 1)
            return .restart
        }
        if daysToAdd > 0 {
            calendar.startOfDay(day: day + daysToAdd, month: month)
            return .restart
        }
        return .stay(day)
    }

    /// Days forward from weekday `from` to weekday `to` (0-6); Quartz's arithmetic, which also
    /// runs on out-of-range weekdays that `d#n` lets through.
    private static func daysUntil(_ to: Int, from: Int) -> Int {
        if from < to { return to - from }
        if from > to { return to + (7 - from) }
        return 0
    }
}

// MARK: - Lenient calendar

/// A model of the parts of `java.util.GregorianCalendar` Quartz relies on: fields that may be
/// set out of range and are resolved only when read (minute 60 is the next hour, day 0 the last
/// day of the previous month), a wall time resolved to UTC by Java's rule for skipped and
/// repeated times (see `ZoneRules.utc(forWall:)`), and reading any field first resolving all of
/// them. Months are 1-12 here (Java's are 0-11); weekdays are Java's, 1 = Sunday.
struct LenientCalendar {
    let zone: ZoneRules
    private var fields = Fields()
    private var time: Int64 = 0
    private var unresolved = false

    private struct Fields {
        var year = 1970
        var month = 1
        var day = 1
        var hour = 0
        var minute = 0
        var second = 0
        var millisecond = 0
        var dayOfWeek = 5
    }

    init(zone: ZoneRules, utcMillis: Int64) {
        self.zone = zone
        setTime(utcMillis)
    }

    var year: Int {
        mutating get { resolve(); return fields.year }
        set { fields.year = newValue; unresolved = true }
    }
    var month: Int {
        mutating get { resolve(); return fields.month }
        set { fields.month = newValue; unresolved = true }
    }
    var day: Int {
        mutating get { resolve(); return fields.day }
        set { fields.day = newValue; unresolved = true }
    }
    var hour: Int {
        mutating get { resolve(); return fields.hour }
        set { fields.hour = newValue; unresolved = true }
    }
    var minute: Int {
        mutating get { resolve(); return fields.minute }
        set { fields.minute = newValue; unresolved = true }
    }
    var second: Int {
        mutating get { resolve(); return fields.second }
        set { fields.second = newValue; unresolved = true }
    }
    var millisecond: Int {
        mutating get { resolve(); return fields.millisecond }
        set { fields.millisecond = newValue; unresolved = true }
    }
    var dayOfWeek: Int {
        mutating get { resolve(); return fields.dayOfWeek }
    }
    var utcMillis: Int64 {
        mutating get { resolve(); return time }
    }

    /// Quartz's `setCalendarHour`: an hour that the clocks skip (02:xx on a spring-forward day)
    /// resolves to the hour after it, and Quartz then asks for that next hour explicitly.
    mutating func setHourSkippingGap(_ hour: Int) {
        self.hour = hour
        if self.hour != hour, hour != 24 {
            self.hour = hour + 1
        }
    }

    /// Midnight on `day` of `month` in the current year (both may be out of range).
    mutating func startOfDay(day: Int, month: Int) {
        fields.second = 0
        fields.minute = 0
        fields.hour = 0
        fields.day = day
        fields.month = month
        unresolved = true
    }

    /// Midnight on the 1st of `month` in `year`.
    mutating func startOfMonth(month: Int, year: Int) {
        startOfDay(day: 1, month: month)
        fields.year = year
    }

    mutating func setWallTime(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        fields.year = year
        startOfDay(day: day, month: month)
        fields.hour = hour
        fields.minute = minute
        fields.second = second
    }

    /// `Calendar.add(YEAR, 1)`: resolve, step the year, keep the day within the month.
    mutating func addYear() {
        resolve()
        fields.year += 1
        fields.day = min(fields.day, Self.daysInMonth(fields.month, year: fields.year))
        unresolved = true
    }

    private mutating func resolve() {
        guard unresolved else { return }
        unresolved = false
        let monthIndex = fields.month - 1
        let year = fields.year + Self.floorDivide(monthIndex, 12)
        let month = monthIndex - Self.floorDivide(monthIndex, 12) * 12 + 1
        let days = Int64(Self.daysFromCivil(year: year, month: month, day: 1) + fields.day - 1)
        let wall =
            days * millisecondsPerDay + Int64(fields.hour) * 3_600_000 + Int64(fields.minute) * 60_000
            + Int64(fields.second) * 1000 + Int64(fields.millisecond)
        setTime(zone.utc(forWall: wall))
    }

    private mutating func setTime(_ utc: Int64) {
        time = utc
        unresolved = false
        let wall = utc + zone.offset(atUTC: utc)
        let days = Self.floorDivide(wall, millisecondsPerDay)
        var rest = Int(wall - days * millisecondsPerDay)
        let date = Self.civil(fromDays: Int(days))
        fields.year = date.year
        fields.month = date.month
        fields.day = date.day
        fields.hour = rest / 3_600_000
        rest %= 3_600_000
        fields.minute = rest / 60_000
        rest %= 60_000
        fields.second = rest / 1000
        fields.millisecond = rest % 1000
        // 1970-01-01 was a Thursday, Java's 5.
        fields.dayOfWeek = Int(((days % 7) + 7 + 4) % 7) + 1
    }

    static func daysInMonth(_ month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    static func isLeapYear(_ year: Int) -> Bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    private static func floorDivide<T: BinaryInteger>(_ value: T, _ divisor: T) -> T {
        let quotient = value / divisor
        return (value % divisor != 0 && (value < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = floorDivide(shiftedYear, 400)
        let yearOfEra = shiftedYear - era * 400
        let monthFromMarch = (month + 9) % 12
        let dayOfYear = (153 * monthFromMarch + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}

// MARK: - Zone rules

/// A zone's UTC offsets as a table of transitions, read once from Foundation and shared by every
/// expression in that zone, so converting between wall time and UTC is a binary search.
final class ZoneRules: Sendable {
    private let zone: TimeZone
    /// Set for zones that never change offset (UTC, `GMT+08:00`).
    private let fixedOffset: Int64?
    /// UTC instants (ms) at which the offset changes, ascending.
    private let transitions: [Int64]
    /// Each transition's instant in the wall time it starts (`transitions[i] + offsets[i]`).
    private let wallStarts: [Int64]
    /// The offset (ms) in force from each transition on.
    private let offsets: [Int64]
    private let initialOffset: Int64
    /// The instants the table covers; outside it Foundation is asked directly.
    private let covered: Range<Int64>

    private static let cache = Mutex<[String: ZoneRules]>([:])

    /// The rules for `zone`, built on first use and then shared.
    static func forZone(_ zone: TimeZone) -> ZoneRules {
        let key = zone.identifier
        if let cached = cache.withLock({ $0[key] }) { return cached }
        let built = ZoneRules(zone: zone, throughYear: CronExpression.yearHorizon + 2)
        return cache.withLock { cache in
            if let existing = cache[key] { return existing }
            cache[key] = built
            return built
        }
    }

    private init(zone: TimeZone, throughYear lastYear: Int) {
        self.zone = zone
        let start: Int64 = -2_208_988_800_000  // 1900-01-01
        let end = Int64(LenientCalendar.daysFromCivil(year: lastYear + 1, month: 1, day: 1)) * millisecondsPerDay
        covered = start..<end
        initialOffset = Int64(zone.secondsFromGMT(for: Self.date(start))) * 1000
        var transitions: [Int64] = []
        var offsets: [Int64] = []
        var cursor = Self.date(start)
        while let next = zone.nextDaylightSavingTimeTransition(after: cursor), next > cursor {
            let instant = Int64((next.timeIntervalSince1970 * 1000).rounded())
            guard instant < end else { break }
            transitions.append(instant)
            offsets.append(Int64(zone.secondsFromGMT(for: next)) * 1000)
            cursor = next
        }
        self.transitions = transitions
        self.offsets = offsets
        wallStarts = zip(transitions, offsets).map { $0 + $1 }
        fixedOffset = transitions.isEmpty ? initialOffset : nil
    }

    /// The offset (ms) to add to a UTC instant to get wall time.
    func offset(atUTC instant: Int64) -> Int64 {
        if let fixedOffset { return fixedOffset }
        guard covered.contains(instant) else {
            return Int64(zone.secondsFromGMT(for: Self.date(instant))) * 1000
        }
        let index = Self.lastIndex(in: transitions, atOrBefore: instant)
        return index < 0 ? initialOffset : offsets[index]
    }

    /// The UTC instant of a wall time, by java.util.GregorianCalendar's rule: the offset in force
    /// is the one of the last transition whose own wall-clock start is at or before `wall`. So a
    /// time the clocks skip (02:30 on a spring-forward day) is read with the offset from before
    /// the change and lands after the gap (03:30), and a time that occurs twice (01:30 on a
    /// fall-back day) is read with the offset from after it: the second, standard-time one.
    func utc(forWall wall: Int64) -> Int64 {
        if let fixedOffset { return wall - fixedOffset }
        guard covered.contains(wall) else {
            let guess = Int64(zone.secondsFromGMT(for: Self.date(wall))) * 1000
            return wall - Int64(zone.secondsFromGMT(for: Self.date(wall - guess))) * 1000
        }
        let index = Self.lastIndex(in: wallStarts, atOrBefore: wall)
        return wall - (index < 0 ? initialOffset : offsets[index])
    }

    private static func lastIndex(in sorted: [Int64], atOrBefore value: Int64) -> Int {
        var low = 0
        var high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] <= value { low = middle + 1 } else { high = middle }
        }
        return low - 1
    }

    private static func date(_ millis: Int64) -> Date {
        Date(timeIntervalSince1970: Double(millis) / 1000)
    }
}
