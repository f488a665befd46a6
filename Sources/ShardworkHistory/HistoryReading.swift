import Foundation
import ShardworkCore

/// Whether a host keeps history, for the control API: the store to read, or why there is none.
public enum HistoryAccess: Sendable {
    /// The store the routes read, the writer whose figures `GET /v1/history` gives, and where the
    /// history goes (never the password).
    case on(any HistoryStore, writer: HistoryWriter, database: String)
    case off(reason: String)
}

/// How the history's writer is doing (`GET /v1/history`): what waits, what was written, what was
/// lost and why.
public struct HistoryFigures: Codable, Sendable, Equatable {
    /// Where the history goes: `sqlite PATH` or `postgresql USER@HOST:PORT/DATABASE`.
    public var database: String
    /// The most rows that wait for the database (`tracing.queueCapacity`).
    public var queueCapacity: Int
    /// Rows waiting for the database now.
    public var rowsQueued: Int
    /// Rows handed to the database since the host started.
    public var rowsWritten: Int
    /// Rows dropped because the queue was full (the database slow or down, or the host too busy).
    public var rowsDropped: Int
    /// The host's events the writer lost because it fell behind by more than its event buffer:
    /// the rows they would have made are missing too.
    public var eventsDropped: Int

    public init(writer: HistoryWriter, database: String) {
        self.database = database
        queueCapacity = writer.capacity
        rowsQueued = writer.queued
        rowsWritten = writer.written
        rowsDropped = writer.dropped
        eventsDropped = writer.eventsDropped
    }
}

/// One execution as the control API answers it (`GET /v1/executions`, `GET /v1/jobs/JOB/executions`).
/// Times are milliseconds since 1970 (UTC).
public struct ExecutionView: Codable, Sendable, Equatable {
    public var id: String
    public var job: String
    public var item: Int
    /// `schedule`, `trigger`, `misfire` or `failover`.
    public var source: String
    /// ElasticJob's `execution_source`: `NORMAL_TRIGGER`, `MISFIRE` or `FAILOVER`.
    public var executionSource: String
    public var taskId: String
    public var hostname: String
    public var ip: String
    public var instanceId: String
    public var fireTime: Int64
    public var startTime: Int64
    /// Absent while the item runs (or when its host died running it).
    public var completeTime: Int64?
    public var durationMs: Int64?
    public var lagMs: Int64
    /// `succeeded`, `failed` or `timedOut`; absent while it runs.
    public var outcome: String?
    public var failureCause: String?
    public var fencingEpoch: UInt64
    public var plugin: String
    public var pluginVersion: String
    public var fenced: Bool

    public init(_ record: ExecutionRecord) {
        id = record.id
        job = record.jobName
        item = record.item
        source = record.source.rawValue
        executionSource = record.elasticJobSource
        taskId = record.taskID
        hostname = record.hostname
        ip = record.ip
        instanceId = record.instanceID
        fireTime = record.fireTime
        startTime = record.startTime
        completeTime = record.completeTime
        durationMs = record.completeTime.map { max(0, $0 - record.startTime) }
        lagMs = record.lagMilliseconds
        outcome = record.outcome?.rawValue
        failureCause = record.failureCause
        fencingEpoch = record.fencingEpoch
        plugin = record.plugin
        pluginVersion = record.pluginVersion
        fenced = record.fenced
    }
}

/// A page of executions, newest first; `next` is the offset of the next page when there may be one.
public struct ExecutionPage: Codable, Sendable, Equatable {
    public var executions: [ExecutionView]
    public var limit: Int
    public var offset: Int
    public var next: Int?

    public init(executions: [ExecutionView], limit: Int, offset: Int) {
        self.executions = executions
        self.limit = limit
        self.offset = offset
        next = executions.count == limit ? offset + limit : nil
    }
}

/// A query parameter the history cannot take, and what it takes.
public struct HistoryQueryError: Error, CustomStringConvertible, Sendable {
    public var parameter: String
    public var message: String
    public var description: String { "\(parameter): \(message)" }
}

extension ExecutionQuery {
    /// The query that the control API's parameters describe: `item`, `instance`, `since`, `until`
    /// (milliseconds since 1970, an ISO 8601 time such as `2026-12-07T14:00:00Z`, or a time ago
    /// such as `90m`, `24h`, `7d`), `failed` (`true`), `source`, `limit` (1 to 1,000, 100 by
    /// default) and `offset`.
    public static func parse(_ parameters: [String: String], job: String?, now: Int64) throws(HistoryQueryError) -> ExecutionQuery {
        let known: Set = ["item", "instance", "since", "until", "failed", "source", "limit", "offset"]
        if let unknown = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw HistoryQueryError(parameter: unknown, message: "is not a parameter of the history; use \(known.sorted().joined(separator: ", "))")
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(HistoryQueryError) -> Int? {
            guard let text = parameters[name] else { return nil }
            guard let value = Int(text), range.contains(value) else {
                throw HistoryQueryError(parameter: name, message: "must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
            }
            return value
        }
        var query = ExecutionQuery(jobName: job)
        query.item = try integer("item", 0...(JobLimits.maximumShardingTotalCount - 1))
        if let instance = parameters["instance"] {
            guard !instance.isEmpty else { throw HistoryQueryError(parameter: "instance", message: "is empty; give an instance id such as 10.0.0.1@-@4242") }
            query.instanceID = instance
        }
        query.since = try parameters["since"].map { text throws(HistoryQueryError) in try time(text, parameter: "since", now: now) }
        query.until = try parameters["until"].map { text throws(HistoryQueryError) in try time(text, parameter: "until", now: now) }
        if let failed = parameters["failed"] {
            switch failed.lowercased() {
            case "true", "1", "yes", "": query.failedOnly = true
            case "false", "0", "no": query.failedOnly = false
            default: throw HistoryQueryError(parameter: "failed", message: "must be true or false, got '\(failed)'")
            }
        }
        if let source = parameters["source"] {
            guard let value = FireSource(rawValue: source.lowercased()) else {
                throw HistoryQueryError(
                    parameter: "source", message: "must be one of \(FireSource.allCases.map(\.rawValue).joined(separator: ", ")), got '\(source)'")
            }
            query.source = value
        }
        if let limit = try integer("limit", 1...ExecutionQuery.maximumLimit) { query.limit = limit }
        if let offset = try integer("offset", 0...1_000_000_000) { query.offset = offset }
        return query
    }

    /// Milliseconds since 1970 from milliseconds, an ISO 8601 time, or a time ago (`90m`, `24h`, `7d`).
    static func time(_ text: String, parameter: String, now: Int64) throws(HistoryQueryError) -> Int64 {
        if let milliseconds = Int64(text), milliseconds >= 0 { return milliseconds }
        if let unit = text.last, let amount = Int64(text.dropLast()), amount >= 0 {
            let scale: Int64? = switch unit {
            case "s": 1000
            case "m": 60_000
            case "h": 3_600_000
            case "d": 86_400_000
            default: nil
            }
            if let scale, amount <= Int64.max / scale / 2 { return now - amount * scale }
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text) {
            return Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        }
        throw HistoryQueryError(
            parameter: parameter,
            message: "must be milliseconds since 1970, an ISO 8601 time such as 2026-12-07T14:00:00Z, or a time ago such as 90m, 24h or 7d; got '\(text)'")
    }
}
