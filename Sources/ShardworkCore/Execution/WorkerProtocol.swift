package import Foundation

/// The messages between a host and a `shardwork worker` process that runs one job's items in
/// isolation (`props: shardwork.isolation: process`). One JSON object per line: the host writes to
/// the worker's standard input, the worker writes to its standard output.
package enum WorkerMessage {
    /// Host → worker, first: which job type to make, for which job.
    package struct Setup: Codable, Sendable, Equatable {
        package var plugin: String
        package var provider: String
        package var jobName: String
        package var properties: [[String]]
        package var streaming: Bool
    }

    /// Host → worker: run one item.
    package struct Run: Codable, Sendable {
        package var id: UInt64
        package var jobName: String
        package var taskID: String
        package var shardingTotalCount: Int
        package var jobParameter: String
        package var shardingItem: Int
        package var shardingParameter: String?
        package var fireTimeMilliseconds: Int64
        package var fencingEpoch: UInt64
    }

    package enum ToWorker: Codable, Sendable {
        case setup(Setup)
        case run(Run)
        /// The host asks the item to stop (its `isCancelled` turns true).
        case cancel(id: UInt64)
    }

    package enum FromWorker: Codable, Sendable {
        /// The job type's instance is made; items may come.
        case ready
        /// The worker cannot serve the job; it exits.
        case setupFailed(String)
        case log(id: UInt64?, level: Int32, message: String)
        case succeeded(id: UInt64)
        case failed(id: UInt64, message: String, code: Int32)
    }

    /// One message as a line of JSON.
    package static func line(_ message: some Encodable) -> Data {
        var data = (try? JSONEncoder().encode(message)) ?? Data("{}".utf8)
        data.append(0x0A)
        return data
    }
}
