// The parser accepts exactly the expressions Quartz 2.3.2 accepts, quirks included, because a job
// definition that ElasticJob schedules must mean the same thing here. Quartz's acceptance was
// established by running its 2.3.2 jar; where it is lenient (text after a value is ignored, a
// '*' followed by anything but '/' means every value, month and day names are read from their
// first three letters) this parser is lenient in the same places. Every rejection names the
// field and the position, which Quartz does not.

/// Special values Quartz stores in a field's value set instead of flags; they change how later
/// values are read, so they are kept as values here too.
enum QuartzMarker {
    /// Stored for '*'. A literal 99 in a field is read as this, so `99` in the seconds field means
    /// every second.
    static let allValues = 99
    /// Stored for '?'. A literal 98 in a day field is read as this.
    static let noSpecificValue = 98
}

/// The seven fields in the order they are written.
enum CronFieldKind: Int, CaseIterable, Sendable {
    case seconds, minutes, hours, dayOfMonth, month, dayOfWeek, year

    var errorField: CronError.Field {
        switch self {
        case .seconds: .seconds
        case .minutes: .minutes
        case .hours: .hours
        case .dayOfMonth: .dayOfMonth
        case .month: .month
        case .dayOfWeek: .dayOfWeek
        case .year: .year
        }
    }

    /// The values a plain number may take (the year field has no such check in Quartz).
    var validRange: ClosedRange<Int> {
        switch self {
        case .seconds, .minutes: 0...59
        case .hours: 0...23
        case .dayOfMonth: 1...31
        case .month: 1...12
        case .dayOfWeek: 1...7
        case .year: 1970...Int.max
        }
    }

    /// The largest step Quartz allows after `*/` or `n/`; `nil` for the year, which it does not check.
    var largestStep: Int? {
        switch self {
        case .seconds, .minutes: 59
        case .hours: 23
        case .dayOfMonth: 31
        case .month: 12
        case .dayOfWeek: 7
        case .year: nil
        }
    }

    /// How a range whose end is below its start wraps round (`22-2` in hours); `nil` for years.
    var wrapModulus: Int? {
        switch self {
        case .seconds, .minutes: 60
        case .hours: 24
        case .dayOfMonth: 31
        case .month: 12
        case .dayOfWeek: 7
        case .year: nil
        }
    }
}

/// A field's values in ascending order, with the lookups the fire-time search makes.
struct SortedValues: Sendable, Equatable {
    let values: [Int]

    /// Sorts `values` and drops repeats.
    init(_ values: [Int]) {
        var unique: [Int] = []
        unique.reserveCapacity(values.count)
        for value in values.sorted() where value != unique.last { unique.append(value) }
        self.values = unique
    }

    var isEmpty: Bool { values.isEmpty }
    /// The smallest value; callers only ask fields the parser guarantees are not empty.
    var first: Int { values.first ?? 0 }
    var last: Int? { values.last }

    func contains(_ value: Int) -> Bool { ceiling(value) == value }

    /// The smallest value at or above `value`, if any.
    @inline(__always)
    func ceiling(_ value: Int) -> Int? {
        var low = 0
        var high = values.count
        while low < high {
            let middle = (low + high) / 2
            if values[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low < values.count ? values[low] : nil
    }
}

/// What an expression parses to: a value set per field plus the day-rule flags.
struct CronFields: Sendable, Equatable {
    var seconds: SortedValues
    var minutes: SortedValues
    var hours: SortedValues
    var daysOfMonth: SortedValues
    var months: SortedValues
    var daysOfWeek: SortedValues
    var years: SortedValues
    /// `L` (with `lastDayOffset` for `L-n`) in day-of-month.
    var lastDayOfMonth: Bool
    var lastDayOffset: Int
    /// `W` in day-of-month (`15W`, `LW`).
    var nearestWeekday: Bool
    /// `dL` in day-of-week: the last such weekday of the month.
    var lastWeekdayOfMonth: Bool
    /// `d#n` in day-of-week; 0 when absent.
    var nthWeekday: Int
}

/// Parses one expression. Positions are indexes into `text`, the expression's Unicode scalars
/// upper-cased one for one (Quartz upper-cases the whole expression), so index + 1 is the
/// 1-based position reported to the user.
struct CronParser {
    private let source: String
    private let text: [Unicode.Scalar]
    private let yearHorizon: Int

    // Appended in any order, with repeats; sorted once at the end (cheaper than a Set per field).
    private var values: [[Int]] = Array(repeating: [], count: CronFieldKind.allCases.count)
    private var fieldStarts: [Int] = []
    private var fieldEnds: [Int] = []
    private var lastDayOfMonth = false
    private var lastDayOffset = 0
    private var nearestWeekday = false
    private var lastWeekdayOfMonth = false
    private var nthWeekday = 0

    init(_ source: String, yearHorizon: Int) {
        self.source = source
        self.text = source.unicodeScalars.map(Self.upperCased)
        self.yearHorizon = yearHorizon
    }

    mutating func parse() throws(CronError) -> CronFields {
        let fields = splitFields()
        guard fields.count >= 6 else {
            let expected = "expected 6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year])"
            if fields.isEmpty {
                throw CronError(input: source, field: .expression, position: 1, message: "the expression is empty; \(expected)")
            }
            throw CronError(
                input: source, field: .expression, position: text.count + 1,
                message: "\(expected) but found \(fields.count)")
        }
        // Quartz reads at most seven fields and ignores anything after them.
        for (kind, range) in zip(CronFieldKind.allCases, fields) {
            fieldStarts.append(range.lowerBound)
            fieldEnds.append(range.upperBound)
            try parseField(range, kind)
        }
        if fields.count == 6 {
            fieldStarts.append(text.count)
            fieldEnds.append(text.count)
            try addValues(.year, start: QuartzMarker.allValues, end: -1, step: 0, startAt: text.count, endAt: text.count)
        }
        try checkDayFields()
        try checkNothingEmpty()
        return CronFields(
            seconds: SortedValues(values[CronFieldKind.seconds.rawValue]),
            minutes: SortedValues(values[CronFieldKind.minutes.rawValue]),
            hours: SortedValues(values[CronFieldKind.hours.rawValue]),
            daysOfMonth: SortedValues(values[CronFieldKind.dayOfMonth.rawValue]),
            months: SortedValues(values[CronFieldKind.month.rawValue]),
            daysOfWeek: SortedValues(values[CronFieldKind.dayOfWeek.rawValue]),
            years: SortedValues(values[CronFieldKind.year.rawValue]),
            lastDayOfMonth: lastDayOfMonth, lastDayOffset: lastDayOffset, nearestWeekday: nearestWeekday,
            lastWeekdayOfMonth: lastWeekdayOfMonth, nthWeekday: nthWeekday)
    }

    // MARK: Fields

    /// Splits on spaces and tabs only (Quartz's delimiters), then trims each field of control
    /// characters the way Java's `String.trim` does, so a trailing `\r` or `\n` is dropped.
    private func splitFields() -> [Range<Int>] {
        var fields: [Range<Int>] = []
        var index = 0
        while index < text.count {
            while index < text.count, Self.isDelimiter(text[index]) { index += 1 }
            guard index < text.count else { break }
            var end = index
            while end < text.count, !Self.isDelimiter(text[end]) { end += 1 }
            var low = index
            var high = end
            while low < high, text[low].value <= 0x20 { low += 1 }
            while high > low, text[high - 1].value <= 0x20 { high -= 1 }
            fields.append(low..<high)
            index = end
        }
        return fields
    }

    private mutating func parseField(_ range: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let field = text[range]
        if kind == .dayOfMonth || kind == .dayOfWeek, field.count > 1, field.contains(","),
            let last = field.firstIndex(of: "L")
        {
            let what = kind == .dayOfMonth ? "days of the month" : "days of the week"
            throw failure(
                kind, at: last,
                "'L' at position \(last + 1) cannot be combined with other \(what) in a list; use it on its own")
        }
        if kind == .dayOfWeek, let first = field.firstIndex(of: "#"),
            let second = field[(first + 1)...].firstIndex(of: "#")
        {
            throw failure(
                kind, at: second,
                "only one 'd#n' (nth weekday) is allowed in day-of-week; found a second '#' at position \(second + 1)")
        }
        var pieceStart = range.lowerBound
        for index in range.lowerBound...range.upperBound where index == range.upperBound || text[index] == "," {
            if index > pieceStart { try parsePiece(pieceStart..<index, kind) }
            pieceStart = index + 1
        }
    }

    /// One comma-separated element of a field.
    private mutating func parsePiece(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let first = text[piece.lowerBound]
        if ("A"..."Z").contains(first), !isLastDayForm(piece) {
            return try parseName(piece, kind)
        }
        switch first {
        case "?": try parseNoSpecificValue(piece, kind)
        case "*", "/": try parseEvery(piece, kind)
        case "L": try parseLast(piece, kind)
        case "0"..."9": try parseNumber(piece, kind)
        default:
            throw failure(
                kind, at: piece.lowerBound,
                "unexpected character \(Self.describe(first)) at position \(piece.lowerBound + 1)")
        }
    }

    /// `L`, `LW`, or `L-` followed by digits and an optional `W`: the forms Quartz reads as
    /// "last day" rather than as a name.
    private func isLastDayForm(_ piece: Range<Int>) -> Bool {
        let chars = text[piece]
        guard chars.first == "L" else { return false }
        if chars.count == 1 { return true }
        if chars.count == 2, chars.last == "W" { return true }
        guard chars.count >= 2, text[piece.lowerBound + 1] == "-" else { return false }
        var rest = chars.dropFirst(2)
        if rest.last == "W" { rest = rest.dropLast() }
        return rest.allSatisfy { ("0"..."9").contains($0) }
    }

    // MARK: Element forms

    private mutating func parseName(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let start = piece.lowerBound
        let end = piece.upperBound
        guard kind == .month || kind == .dayOfWeek else {
            throw failure(
                kind, at: start,
                "'\(string(piece))' at position \(start + 1) is not allowed in the \(kind.errorField) field, "
                    + "which takes numbers \(rangeText(kind))")
        }
        let name = try nameValue(at: start, end: end, kind)
        var rangeEnd = -1
        if end > start + 3 {
            switch text[start + 3] {
            case "-":
                rangeEnd = try nameValue(at: start + 4, end: end, kind)
            case "#" where kind == .dayOfWeek:
                nthWeekday = try occurrence(from: start + 4, to: end)
            case "L" where kind == .dayOfWeek:
                lastWeekdayOfMonth = true
            default:
                break  // Quartz reads a name from its first three letters: "MONDAY" is MON.
            }
        }
        try addValues(
            kind, start: name, end: rangeEnd, step: rangeEnd == -1 ? 0 : 1, startAt: start, endAt: start + 4)
    }

    /// The month (1-12) or weekday (1-7) named by the three letters at `start`.
    private func nameValue(at start: Int, end: Int, _ kind: CronFieldKind) throws(CronError) -> Int {
        let names = kind == .month ? Self.monthNames : Self.dayNames
        let word = kind == .month ? "month" : "day"
        let allowed = kind == .month ? "JAN-DEC or 1-12" : "SUN-SAT or 1-7"
        guard end >= start + 3 else {
            let found = start < end ? "'\(string(start..<end))'" : "nothing"
            throw failure(
                kind, at: start, "expected a \(word) name at position \(start + 1) but found \(found); use \(allowed)")
        }
        let candidate = string(start..<(start + 3))
        guard let index = names.firstIndex(of: candidate) else {
            throw failure(kind, at: start, "unknown \(word) '\(candidate)' at position \(start + 1); use \(allowed)")
        }
        return index + 1
    }

    private mutating func parseNoSpecificValue(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let start = piece.lowerBound
        // Quartz lets one stray character follow '?' and rejects two or more.
        if piece.count >= 3 {
            throw failure(
                kind, at: start + 1,
                "unexpected '\(string((start + 1)..<piece.upperBound))' after '?' at position \(start + 2)")
        }
        guard kind == .dayOfMonth || kind == .dayOfWeek else {
            throw failure(
                kind, at: start,
                "'?' at position \(start + 1) is only allowed in day-of-month or day-of-week")
        }
        if kind == .dayOfWeek, !lastDayOfMonth {
            let dayOfMonth = CronFieldKind.dayOfMonth.rawValue
            guard let last = values[dayOfMonth].max() else {
                throw emptyField(.dayOfMonth)
            }
            if last == QuartzMarker.noSpecificValue {
                throw failure(
                    kind, at: start,
                    "'?' at position \(start + 1) is in both day-of-month and day-of-week; "
                        + "give one of them a value, e.g. \(suggestion(dayOfMonth: "?", dayOfWeek: "*")) "
                        + "or \(suggestion(dayOfMonth: "*", dayOfWeek: "?"))")
            }
        }
        try addValues(kind, start: QuartzMarker.noSpecificValue, end: -1, step: 0, startAt: start, endAt: start)
    }

    /// `*`, `*/n`, or `/n` (which Quartz reads as `*/n`).
    private mutating func parseEvery(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let start = piece.lowerBound
        let end = piece.upperBound
        let first = text[start]
        if first == "*", piece.count == 1 {
            return try addValues(kind, start: QuartzMarker.allValues, end: -1, step: 0, startAt: start, endAt: start)
        }
        var index = first == "*" ? start + 1 : start
        guard text[index] == "/" else {
            // Quartz reads '*' followed by anything but '/' as every value.
            return try addValues(kind, start: QuartzMarker.allValues, end: -1, step: 1, startAt: start, endAt: start)
        }
        index += 1
        guard index < end else {
            throw failure(
                kind, at: index - 1, "'/' at position \(index) must be followed by a step, e.g. '*/5'")
        }
        guard let step = Self.javaParseInt(text[index..<end]) else {
            throw failure(
                kind, at: index, "step '\(string(index..<end))' at position \(index + 1) is not a number")
        }
        try checkStep(step, kind, at: index)
        try addValues(kind, start: QuartzMarker.allValues, end: -1, step: step, startAt: start, endAt: start)
    }

    /// `L`, `LW`, `L-n`, `L-nW` in day-of-month; in day-of-week a bare `L` means Saturday (7).
    private mutating func parseLast(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let start = piece.lowerBound
        let end = piece.upperBound
        switch kind {
        case .dayOfMonth:
            lastDayOfMonth = true
            var index = start + 1
            if index < end, text[index] == "-" {
                guard index + 1 < end else {
                    throw failure(
                        kind, at: start,
                        "'L-' at position \(start + 1) must be followed by an offset 0-30, e.g. 'L-3'")
                }
                let (offset, next) = try digits(after: 0, from: index + 1, end: end, kind, numberAt: index + 1)
                guard offset <= 30 else {
                    throw failure(
                        kind, at: index + 1,
                        "offset \(offset) after 'L-' at position \(index + 2) is out of range 0-30")
                }
                lastDayOffset = offset
                index = next
            }
            if index < end, text[index] == "W" { nearestWeekday = true }
        case .dayOfWeek:
            try addValues(kind, start: 7, end: 7, step: 0, startAt: start, endAt: start)
        default:
            break  // Quartz accepts a bare 'L' here and adds no value.
        }
    }

    private mutating func parseNumber(_ piece: Range<Int>, _ kind: CronFieldKind) throws(CronError) {
        let start = piece.lowerBound
        let end = piece.upperBound
        var value = Int(text[start].value) - 48
        var index = start + 1
        if index >= end {
            return try addValues(kind, start: value, end: -1, step: -1, startAt: start, endAt: start)
        }
        if Self.isASCIIDigit(text[index]) {
            (value, index) = try digits(after: value, from: index, end: end, kind, numberAt: start)
        }
        try parseAfterNumber(value, numberAt: start, index: index, end: end, kind)
    }

    /// What may follow a number: `L`, `W`, `#n`, `-end[/step]`, `/step`; anything else is ignored,
    /// as Quartz ignores it.
    private mutating func parseAfterNumber(
        _ value: Int, numberAt start: Int, index: Int, end: Int, _ kind: CronFieldKind
    ) throws(CronError) {
        guard index < end else {
            return try addValues(kind, start: value, end: -1, step: -1, startAt: start, endAt: start)
        }
        switch text[index] {
        case "L":
            guard kind == .dayOfWeek else {
                throw failure(
                    kind, at: index,
                    "'L' after a number at position \(index + 1) is only allowed in day-of-week (e.g. '6L', "
                        + "the last Friday); in day-of-month write 'L' or 'L-3' on its own")
            }
            guard (1...7).contains(value) else {
                throw failure(kind, at: start, "value \(value) at position \(start + 1) is out of range 1-7")
            }
            lastWeekdayOfMonth = true
            values[kind.rawValue].append(value)
        case "W":
            guard kind == .dayOfMonth else {
                throw failure(
                    kind, at: index,
                    "'W' at position \(index + 1) is only allowed in day-of-month (e.g. '15W', the weekday nearest the 15th)")
            }
            guard value <= 31 else {
                throw failure(kind, at: start, "value \(value) at position \(start + 1) is out of range 1-31")
            }
            nearestWeekday = true
            values[kind.rawValue].append(value)
        case "#":
            guard kind == .dayOfWeek else {
                throw failure(
                    kind, at: index,
                    "'#' at position \(index + 1) is only allowed in day-of-week (e.g. '6#3', the third Friday)")
            }
            nthWeekday = try occurrence(from: index + 1, to: end)
            values[kind.rawValue].append(value)
        case "-":
            try parseRangeEnd(value, numberAt: start, dash: index, end: end, kind)
        case "/":
            var cursor = index + 1
            guard cursor < end, let firstDigit = Self.javaDigit(text[cursor]) else {
                throw failure(
                    kind, at: index,
                    "'/' at position \(index + 1) must be followed by a step, e.g. '\(value)/5'")
            }
            let stepAt = cursor
            cursor += 1
            var step = firstDigit
            if cursor < end {
                guard Self.isASCIIDigit(text[cursor]) else {
                    throw failure(
                        kind, at: cursor,
                        "unexpected \(Self.describe(text[cursor])) at position \(cursor + 1) after the step")
                }
                (step, _) = try digits(after: firstDigit, from: cursor, end: end, kind, numberAt: stepAt)
            }
            try checkStep(step, kind, at: stepAt)
            try addValues(kind, start: value, end: -1, step: step, startAt: start, endAt: start)
        default:
            try addValues(kind, start: value, end: -1, step: 0, startAt: start, endAt: start)
        }
    }

    /// `a-b` and `a-b/c`. Quartz does not limit the step of a range.
    private mutating func parseRangeEnd(
        _ value: Int, numberAt start: Int, dash: Int, end: Int, _ kind: CronFieldKind
    ) throws(CronError) {
        var cursor = dash + 1
        guard cursor < end else {
            throw failure(kind, at: start, "the range at position \(start + 1) needs an end value after '-'")
        }
        guard let firstDigit = Self.javaDigit(text[cursor]) else {
            throw failure(
                kind, at: cursor,
                "range end \(Self.describe(text[cursor])) at position \(cursor + 1) is not a number")
        }
        let endAt = cursor
        var rangeEnd = firstDigit
        cursor += 1
        if cursor < end, Self.isASCIIDigit(text[cursor]) {
            (rangeEnd, cursor) = try digits(after: firstDigit, from: cursor, end: end, kind, numberAt: endAt)
        }
        var step = 1
        if cursor < end, text[cursor] == "/" {
            cursor += 1
            guard cursor < end, let stepDigit = Self.javaDigit(text[cursor]) else {
                throw failure(
                    kind, at: cursor - 1,
                    "'/' at position \(cursor) must be followed by a step, e.g. '\(value)-\(rangeEnd)/2'")
            }
            step = stepDigit
            if cursor + 1 < end, Self.isASCIIDigit(text[cursor + 1]) {
                (step, _) = try digits(after: stepDigit, from: cursor + 1, end: end, kind, numberAt: cursor)
            }
        }
        try addValues(kind, start: value, end: rangeEnd, step: step, startAt: start, endAt: endAt)
    }

    // MARK: Values

    /// Adds `start` alone (step 0 or -1), or `start...end` by `step`, wrapping round when `end`
    /// is below `start`; -1 means "not given". Checks the range the way Quartz does, which exempts
    /// its marker values from the check.
    private mutating func addValues(
        _ kind: CronFieldKind, start: Int, end: Int, step: Int, startAt: Int, endAt: Int
    ) throws(CronError) {
        if kind != .year {
            let range = kind.validRange
            var exempt = start == QuartzMarker.allValues
            if kind == .dayOfMonth || kind == .dayOfWeek, start == QuartzMarker.noSpecificValue { exempt = true }
            let startBad = kind == .dayOfWeek ? (start == 0 || start > range.upperBound) : !range.contains(start)
            if !exempt, startBad {
                throw failure(
                    kind, at: startAt,
                    "value \(start) at position \(startAt + 1) is out of range \(rangeText(kind))")
            }
            if !exempt, end > range.upperBound {
                throw failure(kind, at: endAt, "value \(end) at position \(endAt + 1) is out of range \(rangeText(kind))")
            }
        }
        if step == 0 || step == -1, start != QuartzMarker.allValues {
            values[kind.rawValue].append(start)
            return
        }
        var from = start
        var through = end
        var step = step
        if start == QuartzMarker.allValues, step <= 0 {
            step = 1
            values[kind.rawValue].append(QuartzMarker.allValues)
        }
        if through == -1 { through = kind == .year ? yearHorizon : kind.validRange.upperBound }
        if from == QuartzMarker.allValues { from = kind == .year ? 1970 : kind.validRange.lowerBound }
        var modulus: Int?
        if through < from {
            guard let wrap = kind.wrapModulus else {
                if end == -1 {
                    throw failure(
                        kind, at: startAt,
                        "year \(from) at position \(startAt + 1) with a step starts after \(yearHorizon), "
                            + "the last year fire times are computed for")
                }
                throw failure(
                    kind, at: startAt,
                    "year range \(from)-\(through) at position \(startAt + 1) runs backwards; write the earlier year first")
            }
            modulus = wrap
            through += wrap
        }
        // Years past the horizon can never fire, so a huge year range need not be enumerated.
        let last = kind == .year ? min(through, yearHorizon) : through
        guard from <= last else { return }
        for raw in stride(from: from, through: last, by: step) {
            guard let modulus else {
                values[kind.rawValue].append(raw)
                continue
            }
            var wrapped = raw % modulus
            if wrapped == 0, kind == .month || kind == .dayOfWeek || kind == .dayOfMonth { wrapped = modulus }
            values[kind.rawValue].append(wrapped)
        }
    }

    private func checkStep(_ step: Int, _ kind: CronFieldKind, at index: Int) throws(CronError) {
        if let largest = kind.largestStep, step > largest {
            throw failure(
                kind, at: index,
                "step \(step) at position \(index + 1) is out of range; the \(kind.errorField) field allows steps up to \(largest)")
        }
    }

    /// The `n` of `d#n`: 1-5.
    private func occurrence(from start: Int, to end: Int) throws(CronError) -> Int {
        guard start <= end, let value = Self.javaParseInt(text[start..<end]), (1...5).contains(value) else {
            let found = start < end ? "'\(string(start..<end))'" : "nothing"
            throw failure(
                .dayOfWeek, at: start,
                "'#' must be followed by 1-5 (which occurrence of the weekday in the month), found \(found) at position \(start + 1)")
        }
        return value
    }

    /// Reads the ASCII digits from `index` after a leading value already read (Quartz's way of
    /// reading multi-digit numbers). Returns the value and the index after the digits, which is
    /// one past `end` when the digits run to the end, as Quartz has it.
    private func digits(
        after leading: Int, from index: Int, end: Int, _ kind: CronFieldKind, numberAt numberStart: Int
    ) throws(CronError) -> (value: Int, next: Int) {
        var cursor = index
        var value = leading
        var overflow = false
        while cursor < end, Self.isASCIIDigit(text[cursor]) {
            value = value * 10 + Int(text[cursor].value) - 48
            if value > Int(Int32.max) { overflow = true; value = Int(Int32.max) }
            cursor += 1
        }
        if overflow {
            throw failure(
                kind, at: numberStart,
                "number '\(string(numberStart..<cursor))' at position \(numberStart + 1) is too large")
        }
        return (value, cursor < end ? cursor : end + 1)
    }

    // MARK: Whole-expression checks

    /// Quartz needs '?' in exactly one of day-of-month and day-of-week.
    private func checkDayFields() throws(CronError) {
        let dayOfMonthOpen = values[CronFieldKind.dayOfMonth.rawValue].contains(QuartzMarker.noSpecificValue)
        let dayOfWeekOpen = values[CronFieldKind.dayOfWeek.rawValue].contains(QuartzMarker.noSpecificValue)
        guard dayOfMonthOpen == dayOfWeekOpen else { return }
        let dayOfWeekAt = fieldStarts[CronFieldKind.dayOfWeek.rawValue]
        if dayOfMonthOpen {
            throw failure(
                .dayOfWeek, at: dayOfWeekAt,
                "neither day-of-month nor day-of-week has a value; give one of them a value, e.g. "
                    + "\(suggestion(dayOfMonth: "?", dayOfWeek: "*")) or \(suggestion(dayOfMonth: "*", dayOfWeek: "?"))")
        }
        let dayOfMonthText = fieldText(.dayOfMonth)
        let dayOfWeekText = fieldText(.dayOfWeek)
        throw failure(
            .dayOfWeek, at: dayOfWeekAt,
            "day-of-month '\(dayOfMonthText)' and day-of-week '\(dayOfWeekText)' (position \(dayOfWeekAt + 1)) are both set, "
                + "but only one of them may be; put '?' in the other, e.g. "
                + "\(suggestion(dayOfMonth: dayOfMonthText, dayOfWeek: "?")) or \(suggestion(dayOfMonth: "?", dayOfWeek: dayOfWeekText))")
    }

    /// Quartz accepts a field that ends up with no values ("," or a bare "L" in the minutes
    /// field) and then fails when asked for a fire time; rejecting it here says why. An empty
    /// year field is the exception: Quartz simply never fires it, and neither does this.
    private func checkNothingEmpty() throws(CronError) {
        for kind in [CronFieldKind.seconds, .minutes, .hours, .month] where values[kind.rawValue].isEmpty {
            throw emptyField(kind)
        }
        let dayOfWeekRule = values[CronFieldKind.dayOfMonth.rawValue].contains(QuartzMarker.noSpecificValue)
        if dayOfWeekRule, values[CronFieldKind.dayOfWeek.rawValue].isEmpty {
            throw emptyField(.dayOfWeek)
        }
        if !dayOfWeekRule, !lastDayOfMonth, values[CronFieldKind.dayOfMonth.rawValue].isEmpty {
            throw emptyField(.dayOfMonth)
        }
    }

    private func emptyField(_ kind: CronFieldKind) -> CronError {
        let start = fieldStarts[kind.rawValue]
        return failure(
            kind, at: start,
            "the \(kind.errorField) field '\(fieldText(kind))' at position \(start + 1) has no values; "
                + "use numbers \(rangeText(kind)) or '*'")
    }

    // MARK: Helpers

    private func failure(_ kind: CronFieldKind, at index: Int, _ message: String) -> CronError {
        CronError(input: source, field: kind.errorField, position: index + 1, message: message)
    }

    private func rangeText(_ kind: CronFieldKind) -> String {
        let range = kind.validRange
        return kind == .year ? "1970-\(yearHorizon)" : "\(range.lowerBound)-\(range.upperBound)"
    }

    private func string(_ range: Range<Int>) -> String {
        var result = String.UnicodeScalarView()
        result.append(contentsOf: text[range.clamped(to: 0..<text.count)])
        return String(result)
    }

    private func fieldText(_ kind: CronFieldKind) -> String {
        string(fieldStarts[kind.rawValue]..<fieldEnds[kind.rawValue])
    }

    /// The user's expression with the two day fields replaced, to show a form that would work.
    private func suggestion(dayOfMonth: String, dayOfWeek: String) -> String {
        let parts = CronFieldKind.allCases.prefix(fieldStarts.count).map { kind -> String in
            switch kind {
            case .dayOfMonth: dayOfMonth
            case .dayOfWeek: dayOfWeek
            default: fieldText(kind)
            }
        }
        return "'" + parts.filter { !$0.isEmpty }.joined(separator: " ") + "'"
    }

    private static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    private static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    private static func isDelimiter(_ scalar: Unicode.Scalar) -> Bool { scalar == " " || scalar == "\t" }

    private static func isASCIIDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }

    /// Upper-cases without changing the number of scalars, so positions stay those of the input.
    private static func upperCased(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        if ("a"..."z").contains(scalar) { return Unicode.Scalar(scalar.value - 32) ?? scalar }
        guard !scalar.isASCII else { return scalar }
        let mapped = scalar.properties.uppercaseMapping.unicodeScalars
        return mapped.count == 1 ? mapped.first ?? scalar : scalar
    }

    /// A decimal digit as Java's `Integer.parseInt` reads a one-character string: any Unicode
    /// decimal digit, not only ASCII.
    private static func javaDigit(_ scalar: Unicode.Scalar) -> Int? {
        if isASCIIDigit(scalar) { return Int(scalar.value) - 48 }
        guard scalar.properties.numericType == .decimal, let value = scalar.properties.numericValue else { return nil }
        return Int(value)
    }

    /// Java's `Integer.parseInt`: an optional sign, then decimal digits, within 32 bits.
    static func javaParseInt(_ scalars: ArraySlice<Unicode.Scalar>) -> Int? {
        var digits = scalars[...]
        var negative = false
        if let sign = digits.first, sign == "+" || sign == "-" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty else { return nil }
        var value = 0
        for scalar in digits {
            guard let digit = javaDigit(scalar) else { return nil }
            value = value * 10 + digit
            if value > Int(Int32.max) + 1 { return nil }
        }
        if !negative, value > Int(Int32.max) { return nil }
        return negative ? -value : value
    }

    private static func describe(_ scalar: Unicode.Scalar) -> String {
        if scalar.value >= 0x21, scalar.value != 0x7F, scalar.properties.generalCategory != .control {
            return "'\(scalar)'"
        }
        return "U+" + String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
