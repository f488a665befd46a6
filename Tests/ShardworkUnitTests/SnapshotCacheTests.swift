@testable import ShardworkCore
import Testing

@Suite("The snapshot cache's change wait")
struct SnapshotCacheTests {
    @Test("a wait returns at the next change: a watch that fires, or this instance's own write")
    func wakesAtChange() async {
        let cache = SnapshotCache()
        let generation = cache.generation
        guard let watcher = cache.watcher("/job/leader/sharding/necessary") else { Issue.record("no watcher"); return }
        async let waited: Void = cache.change(after: generation, within: .seconds(600))
        // The wait may not have started yet: a change before it starts is seen too.
        watcher(WatchEvent(.deleted, "/job/leader/sharding/necessary"))
        await waited
        #expect(cache.generation != generation)

        let next = cache.generation
        async let again: Void = cache.change(after: next, within: .seconds(600))
        cache.invalidate()
        await again
        #expect(cache.generation != next)
    }

    @Test("a change before the wait, the limit and cancellation each end it")
    func endsOtherwise() async {
        let cache = SnapshotCache()
        let old = cache.generation
        cache.invalidate()
        await cache.change(after: old, within: .seconds(600))  // at once: already past it

        let clock = ContinuousClock()
        let started = clock.now
        await cache.change(after: cache.generation, within: .milliseconds(50))
        #expect(clock.now - started >= .milliseconds(50))

        let waiting = Task { await cache.change(after: cache.generation, within: .seconds(600)) }
        waiting.cancel()
        await waiting.value
    }
}
