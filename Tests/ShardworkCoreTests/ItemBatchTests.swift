import Foundation
import ShardworkCore
import Synchronization
import Testing

@Suite("Item batch")
struct ItemBatchTests {
    final class Concurrency: Sendable {
        private let state = Mutex((now: 0, most: 0))
        func enter() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
        func leave() { state.withLock { $0.now -= 1 } }
        var most: Int { state.withLock { $0.most } }
    }

    @Test("items run at most `concurrency` at a time (the executor strategy's count), each exactly once", arguments: [1, 2, 3])
    func concurrencyLimit(limit: Int) async {
        let pool = WorkerPool(size: 8)
        let concurrency = Concurrency()
        let ran = Mutex<[Int]>([])
        let outcomes = await ItemBatch.run(Array(0..<12), concurrency: limit, pool: pool, timeout: nil) { item, _ in
            concurrency.enter()
            usleep(2_000)
            concurrency.leave()
            ran.withLock { $0.append(item) }
            return item == 5 ? .failed(message: "five", code: 5) : .succeeded
        }
        #expect(concurrency.most <= limit)
        #expect(ran.withLock { $0.sorted() } == Array(0..<12))
        #expect(outcomes.count == 12)
        #expect(outcomes[5] == .failed(message: "five", code: 5))
        #expect(outcomes.values.filter(\.succeeded).count == 11)
        pool.shutdown()
    }

    @Test("an item past its timeout is given up on and asked to stop; the rest of the batch finishes without it")
    func timeout() async {
        let pool = WorkerPool(size: 1)
        let stopped = DispatchSemaphore(value: 0)
        let outcomes = await ItemBatch.run([0, 1, 2], concurrency: 1, pool: pool, timeout: 0.1) { item, isCancelled in
            if item == 0 {
                while !isCancelled() { usleep(1_000) }
                stopped.signal()
                return .failed(message: "stopped", code: 0)
            }
            return .succeeded
        }
        #expect(outcomes[0] == .timedOut(seconds: 0.1))
        #expect(outcomes[1] == .succeeded && outcomes[2] == .succeeded)
        #expect(stopped.wait(timeout: .now() + 10) == .success)
        pool.shutdown()
    }

    @Test("cancelling asks every running item to stop")
    func cancellation() async {
        let pool = WorkerPool(size: 4)
        let cancellation = ItemBatchCancellation()
        let started = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for _ in 0..<2 { started.wait() }
            cancellation.cancelAll()
        }
        let outcomes = await ItemBatch.run([0, 1], concurrency: 2, pool: pool, timeout: nil, cancellation: cancellation) { _, isCancelled in
            started.signal()
            while !isCancelled() { usleep(1_000) }
            return .failed(message: "cancelled", code: 0)
        }
        #expect(outcomes.values.allSatisfy { $0 == .failed(message: "cancelled", code: 0) })
        pool.shutdown()
    }
}
