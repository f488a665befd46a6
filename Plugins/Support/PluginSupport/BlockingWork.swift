import Foundation

/// Blocking work (waiting for a child process, a network transfer, a foreign function) on a thread
/// of its own.
///
/// The SDK runs a provider's async code on Swift's cooperative pool, which has one thread per core
/// and also serves the host's coordination. A blocking call there would stall the firing of every
/// other job, so the ecosystem plugins never block in async code: they wait here instead.
public enum BlockingWork {
    /// Runs `body` on a new thread and suspends until it returns.
    public static func run<Value: Sendable>(
        _ name: String, _ body: @escaping @Sendable () throws -> Value
    ) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try body() })
            }
            thread.name = name
            thread.start()
        }
    }
}

/// Sends notifications in the background, so that an error handler returns at once and a slow or
/// unreachable server never holds a worker thread of the host (which other jobs' items need).
///
/// A few threads, started when first needed, take work in order; at most `capacity` pieces of work
/// wait. Work that finds the queue full is refused, and the caller says so in the log. Work still
/// waiting when the process exits is lost: delivery is best effort, like ElasticJob's handlers.
public final class DeliveryQueue: @unchecked Sendable {
    // Everything below is guarded by `condition`.
    private let condition = NSCondition()
    private var waiting: [@Sendable () -> Void] = []
    private var threads = 0
    private var idle = 0

    private let name: String
    private let maximumThreads: Int
    private let capacity: Int

    public init(name: String, threads: Int = 4, capacity: Int = 1_000) {
        self.name = name
        self.maximumThreads = max(1, threads)
        self.capacity = max(1, capacity)
    }

    /// Queues `work`; false when `capacity` pieces of work are already waiting.
    public func submit(_ work: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard waiting.count < capacity else { return false }
        waiting.append(work)
        if idle > 0 {
            condition.signal()
        } else if threads < maximumThreads {
            threads += 1
            let thread = Thread { [self] in loop() }
            thread.name = name
            thread.start()
        }
        return true
    }

    private func loop() {
        condition.lock()
        while true {
            guard !waiting.isEmpty else {
                idle += 1
                condition.wait()
                idle -= 1
                continue
            }
            let work = waiting.removeFirst()
            condition.unlock()
            work()
            condition.lock()
        }
    }
}
