/// Why a cron expression or a time zone name was rejected: which part, where, and what to change.
///
/// The description reads like
/// `invalid cron expression '60 * * * * ?': seconds: value 60 at position 1 is out of range 0-59`.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The part of the input the problem is in.
    public enum Field: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
        case seconds
        case minutes
        case hours
        case dayOfMonth = "day-of-month"
        case month
        case dayOfWeek = "day-of-week"
        case year
        /// The expression as a whole: empty, too few fields.
        case expression
        /// A time zone name given to ``CronExpression/timeZone(named:)``.
        case timeZone = "time zone"

        /// The name a user sees: `seconds`, `day-of-month`, `time zone`...
        public var description: String { rawValue }
    }

    /// The text that was rejected: the cron expression, or the zone name for ``Field/timeZone``.
    public let input: String
    /// The part of ``input`` the problem is in.
    public let field: Field
    /// 1-based position in ``input`` where the problem starts, counted in Unicode scalars (for
    /// the ASCII of cron expressions, characters); one past the end when something is missing
    /// at the end.
    public let position: Int
    /// What is wrong and, where it helps, what would be accepted; mentions ``position``.
    public let message: String

    /// Makes an error; ``description`` is built from these parts.
    public init(input: String, field: Field, position: Int, message: String) {
        self.input = input
        self.field = field
        self.position = position
        self.message = message
    }

    /// One line for a log or a CLI: what was rejected, in which part, and why.
    public var description: String {
        switch field {
        case .timeZone: "invalid time zone '\(input)': \(message)"
        default: "invalid cron expression '\(input)': \(field): \(message)"
        }
    }
}
