import ShardworkSDK

/// ElasticJob's LOG: logs "Job '{job}' exception occur in job processing" with the cause at error
/// level, and the fire goes on.
struct LogHandler: ErrorHandler {
    let logger: PluginLogger

    func handle(_ failure: JobFailure) async -> ErrorDisposition {
        var location = ""
        if let item = failure.item { location = " (item \(item), task \(failure.taskID))" }
        logger.error("Job '\(failure.jobName)' exception occur in job processing\(location): \(failure.message)")
        return .handled
    }
}

/// ElasticJob's THROW: the failure propagates and aborts the rest of the fire.
struct ThrowHandler: ErrorHandler {
    func handle(_ failure: JobFailure) async -> ErrorDisposition { .propagate }
}

/// ElasticJob's IGNORE: nothing happens.
struct IgnoreHandler: ErrorHandler {
    func handle(_ failure: JobFailure) async -> ErrorDisposition { .handled }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "standard-error-handlers", version: "0.1.0", providers: [
        .errorHandler(name: "log", aliases: ["LOG"]) { setup in LogHandler(logger: setup.logger) },
        .errorHandler(name: "throw", aliases: ["THROW"]) { _ in ThrowHandler() },
        .errorHandler(name: "ignore", aliases: ["IGNORE"]) { _ in IgnoreHandler() },
    ])
}
