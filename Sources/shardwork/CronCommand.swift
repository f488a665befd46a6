import ArgumentParser
import Foundation
import ShardworkCore

struct CronCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cron",
        abstract: "Work with Quartz cron expressions.",
        subcommands: [Next.self]
    )

    struct Next: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The next fire times of a cron expression, as Quartz 2.3.2 computes them.",
            discussion: """
                Seven fields at most: second, minute, hour, day-of-month, month, day-of-week, and an \
                optional year; `?`, `L`, `W`, `#` and names as in Quartz. An invalid expression exits 2 \
                with the field and position at fault.
                """)

        @Argument(help: "The cron expression, quoted (for example \"0/5 * * * * ?\").")
        var expression: String

        @Option(name: .customLong("time-zone"), help: ArgumentHelp(
            "A tz-database zone (Asia/Shanghai) or a Java GMT offset (GMT+08:00); default: this host's zone.",
            valueName: "zone"))
        var timeZone: String?

        @Option(help: ArgumentHelp("Fire times strictly after this instant, in milliseconds since the Unix epoch; default: now.",
                                   valueName: "epoch-ms"))
        var after: Int64?

        @Option(help: "How many fire times (1 to 10000).")
        var count: Int = 10

        @Flag(help: "Print a JSON array of epoch-millisecond fire times.")
        var json = false

        func run() throws {
            guard (1...10_000).contains(count) else {
                throw CLIFailure.badInput("--count must be between 1 and 10000, got \(count)")
            }
            let zone: TimeZone
            let cron: CronExpression
            do {
                zone = try timeZone.map { try CronExpression.timeZone(named: $0) } ?? TimeZone.current
                cron = try CronExpression(expression, timeZone: zone)
            } catch {
                throw CLIFailure.badInput("\(error)")
            }
            let start = after ?? Int64(Date().timeIntervalSince1970 * 1000)
            let times = cron.nextFireTimes(after: start, count: count)
            if json {
                print("[" + times.map(String.init).joined(separator: ",") + "]")
                return
            }
            let formatter = ISO8601DateFormatter()
            formatter.timeZone = zone
            formatter.formatOptions = [.withInternetDateTime]
            for time in times {
                print("\(formatter.string(from: Date(timeIntervalSince1970: Double(time) / 1000)))  \(time)")
            }
            if times.count < count {
                print(times.isEmpty ? "(no fire time after that instant)" : "(no more fire times)")
            }
        }
    }
}
