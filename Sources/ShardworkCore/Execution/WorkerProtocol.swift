public import Foundation

/// The messages between a host and a `shardwork worker` process that runs one job's items in
/// isolation (`props: shardwork.isolation: process`). One JSON object per line: the host writes to
/// the worker's standard input, the worker writes to its standard output.
public enum WorkerMessage {
    /// Host → worker, first: which job type to make, for which job.
    public struct Setup: Codable, Sendable, Equatable {
        public var plugin: String
        public var provider: String
        public var jobName: String
        public var properties: [[String]]
        public var streaming: Bool
    }

    /// Host → worker: run one item.
    public struct Run: Codable, Sendable {
        public var id: UInt64
        public var jobName: String
        public var taskID: String
        public var shardingTotalCount: Int
        public var jobParameter: String
        public var shardingItem: Int
        public var shardingParameter: String?
        public var fireTimeMilliseconds: Int64
        public var fencingEpoch: UInt64
    }

    public enum ToWorker: Codable, Sendable {
        case setup(Setup)
        case run(Run)
        /// The host asks the item to stop (its `isCancelled` turns true).
        case cancel(id: UInt64)
    }

    public enum FromWorker: Codable, Sendable {
        /// The job type's instance is made; items may come.
        case ready
        /// The worker cannot serve the job; it exits.
        case setupFailed(String)
        case log(id: UInt64?, level: Int32, message: String)
        case succeeded(id: UInt64)
        case failed(id: UInt64, message: String, code: Int32)
    }

    /// One message as a line of JSON.
    public static func line(_ message: some Encodable) -> Data {
        var data = (try? JSONEncoder().encode(message)) ?? Data("{}".utf8)
        data.append(0x0A)
        return data
    }
}
