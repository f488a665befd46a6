public import ShardworkSDK

/// What the network error handlers say about a failure: the job, the host, the item(s), the fire
/// time and the error, as ElasticJob's sentence for people and as a JSON document for programs.
public enum FailureReport {
    /// The items the failure concerns (none for a listener's or the environment's failure).
    public static func items(_ failure: JobFailure) -> [Int] {
        failure.item.map { [$0] } ?? []
    }

    /// ElasticJob's first line (`Job '{job}' exception occur in job processing, caused by {error}`),
    /// then one line each for the host, items, fire time and task.
    public static func text(_ failure: JobFailure) -> String {
        let items = items(failure)
        var lines = ["Job '\(failure.jobName)' exception occur in job processing, caused by \(failure.message)"]
        lines.append("host: \(failure.hostName) (instance \(failure.instanceID))")
        lines.append("items: " + (items.isEmpty ? "none (\(originText(failure)))" : items.map(String.init).joined(separator: ",")))
        lines.append("fire time: \(iso8601(milliseconds: failure.fireTimeMilliseconds))")
        if !failure.taskID.isEmpty { lines.append("task: \(failure.taskID)") }
        if failure.code != 0 { lines.append("code: \(failure.code)") }
        return lines.joined(separator: "\n")
    }

    /// `{"job":…,"host":…,"instance":…,"taskId":…,"items":[…],"fireTime":"…Z","fireTimeMilliseconds":…,
    /// "origin":"item","error":{"message":…,"code":…}}`
    public static func json(_ failure: JobFailure) -> String {
        JSONText.object([
            ("job", JSONText.string(failure.jobName)),
            ("host", JSONText.string(failure.hostName)),
            ("instance", JSONText.string(failure.instanceID)),
            ("taskId", JSONText.string(failure.taskID)),
            ("items", "[" + items(failure).map(String.init).joined(separator: ",") + "]"),
            ("fireTime", JSONText.string(iso8601(milliseconds: failure.fireTimeMilliseconds))),
            ("fireTimeMilliseconds", String(failure.fireTimeMilliseconds)),
            ("origin", JSONText.string(origin(failure))),
            ("error", JSONText.object([("message", JSONText.string(failure.message)), ("code", String(failure.code))])),
        ])
    }

    /// Why a failure concerns no item, for people.
    static func originText(_ failure: JobFailure) -> String {
        switch failure.origin {
        case .item: "an item failed"
        case .listener: "a job listener failed"
        case .environment: "the host's environment check failed"
        }
    }

    static func origin(_ failure: JobFailure) -> String {
        switch failure.origin {
        case .item: "item"
        case .listener: "listener"
        case .environment: "environment"
        }
    }
}
