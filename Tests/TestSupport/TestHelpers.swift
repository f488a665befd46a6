public import Logging
import Foundation
import Synchronization

/// Log lines captured from a logger built for one test (no global bootstrap).
public final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    public init() {}

    public var messages: [String] { lines.withLock { $0 } }

    public func contains(_ text: String) -> Bool { messages.contains { $0.contains(text) } }

    public func logger(level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: "test") { _ in Handler(log: self) }
        logger.logLevel = level
        return logger
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        /// `level: message`, then the call's own metadata (not the logger's, such as `job`) as
        /// ` key=value`, sorted by key: tests read fixed messages with their data.
        func log(event: LogEvent) {
            let data = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
            log.append("\(event.level): \(event.message)\(data)")
        }
    }
}

/// Polls `condition` until it holds, for at most `seconds`: for state that another thread sets
/// right after the event a test waited for. It blocks the calling thread: only for synchronous
/// tests. Async tests use `eventually`, which suspends, so that Swift's few cooperative threads stay
/// free for the code under test.
///
/// The default bound is an upper bound on a wait, never a claim about timing (figures belong in the
/// benchmarks): generous, so that a suite sharing two cores with ZooKeeper servers and host
/// processes does not fail a test that was only waiting. A condition that holds returns at once.
public func eventuallyBlocking(seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(1_000)
    }
    return condition()
}

/// `eventuallyBlocking` for async tests: it suspends between polls.
public func eventually(seconds: Double = 30, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return await condition()
}
