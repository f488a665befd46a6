@testable import ShardworkCore
import Synchronization
import Testing

@Suite("Background work: coalesced runs and owned tasks")
struct BackgroundWorkTests {
    @Test("requests made while a run is under way make exactly one more run after it")
    func coalescing() async {
        let runner = CoalescingRunner<String>()
        let runs = Atomic<Int>(0)
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
        let first = Task {
            await runner.run("job") {
                runs.add(1, ordering: .relaxed)
                startedContinuation.yield()
                for await _ in release { break }
            }
        }
        var iterator = started.makeAsyncIterator()
        _ = await iterator.next()
        // Three requests during the first run: each returns at once, and they ask for one more run.
        for _ in 0..<3 { await runner.run("job") { runs.add(100, ordering: .relaxed) } }
        #expect(runner.isRunning("job"))
        releaseContinuation.yield()
        releaseContinuation.yield()
        await first.value
        let total = runs.load(ordering: .relaxed)
        #expect(total == 2, "the first run, then one more with the first run's body")
        #expect(!runner.isRunning("job"))
        // Another key runs on its own.
        await runner.run("other") { runs.add(10, ordering: .relaxed) }
        let withOther = runs.load(ordering: .relaxed)
        #expect(withOther == 12)
    }

    @Test("a request spawns a run only when none is under way for the key")
    func requests() async {
        let runner = CoalescingRunner<String>()
        let spawned = Atomic<Int>(0)
        let tasks = BackgroundTasks()
        let spawn: (@escaping @Sendable () async -> Void) -> Void = { work in
            spawned.add(1, ordering: .relaxed)
            tasks.spawn("run", work)
        }
        let gate = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let runs = Atomic<Int>(0)
        let body: @Sendable () async -> Void = {
            runs.add(1, ordering: .relaxed)
            if runs.load(ordering: .relaxed) == 1 {
                await withCheckedContinuation { continuation in gate.withLock { $0 = continuation } }
            }
        }
        runner.request("job", spawn: spawn, body)
        while gate.withLock({ $0 == nil }) { await Task.yield() }
        runner.request("job", spawn: spawn, body)
        runner.request("job", spawn: spawn, body)
        let spawnedOnce = spawned.load(ordering: .relaxed)
        #expect(spawnedOnce == 1)
        gate.withLock { $0 }?.resume()
        while runner.isRunning("job") { await Task.yield() }
        let ran = runs.load(ordering: .relaxed)
        #expect(ran == 2)
        #expect(await tasks.cancelAndWait(upTo: .seconds(10)).isEmpty)
    }

    @Test("stopping cancels the tasks and waits for them; one that ignores cancellation is named and left at the limit")
    func stopping() async {
        let tasks = BackgroundTasks()
        tasks.spawn("loop") {
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(5)) }
        }
        let stubborn = Mutex<CheckedContinuation<Void, Never>?>(nil)
        tasks.spawn("stubborn") {
            // Waits on something that ignores cancellation.
            await withCheckedContinuation { continuation in stubborn.withLock { $0 = continuation } }
        }
        while stubborn.withLock({ $0 == nil }) { await Task.yield() }
        #expect(tasks.count == 2)
        let left = await tasks.cancelAndWait(upTo: .milliseconds(200))
        #expect(left == ["stubborn"])
        // Spawned after the stop: it starts cancelled and is not kept.
        let sawCancelled = Atomic<Bool>(false)
        let (done, doneContinuation) = AsyncStream.makeStream(of: Void.self)
        tasks.spawn("late") {
            sawCancelled.store(Task.isCancelled, ordering: .relaxed)
            doneContinuation.yield()
        }
        var iterator = done.makeAsyncIterator()
        _ = await iterator.next()
        let cancelled = sawCancelled.load(ordering: .relaxed)
        #expect(cancelled)
        stubborn.withLock { $0 }?.resume()
        while tasks.count > 0 { await Task.yield() }
    }

    @Test("stopping with nothing under way returns at once")
    func stoppingIdle() async {
        let tasks = BackgroundTasks()
        #expect(await tasks.cancelAndWait(upTo: .seconds(60)).isEmpty)
    }
}
