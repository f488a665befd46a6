/// The deadlines of every scheduled job of a host, in one binary heap.
///
/// A pure data structure: no clock, no threads. ``TimerService`` runs it. Scheduling a key again
/// replaces its deadline, and cancelling is O(1): stale heap entries are recognised by their
/// generation and skipped when they surface.
package struct TimerQueue<Key: Hashable & Sendable>: Sendable {
    struct Entry: Sendable {
        var deadline: Int64
        /// Breaks ties in scheduling order, so equal deadlines pop first-come first-served.
        var sequence: UInt64
        var key: Key
        var generation: UInt64
    }

    private var heap: [Entry] = []
    private var generations: [Key: UInt64] = [:]
    private var nextSequence: UInt64 = 0

    package init() {}

    /// How many keys are scheduled.
    package var count: Int { generations.count }

    package func isScheduled(_ key: Key) -> Bool { generations[key] != nil }

    /// Schedules `key` at `deadline`, replacing any earlier deadline of the same key.
    package mutating func schedule(_ key: Key, at deadline: Int64) {
        nextSequence &+= 1
        // Unique per entry, never reused: a key cancelled and scheduled again must not bring its
        // cancelled entry, still in the heap, back to life.
        let generation = nextSequence
        generations[key] = generation
        push(Entry(deadline: deadline, sequence: nextSequence, key: key, generation: generation))
        compactIfStale()
    }

    /// Removes `key`; returns whether it was scheduled.
    @discardableResult
    package mutating func cancel(_ key: Key) -> Bool {
        generations.removeValue(forKey: key) != nil
    }

    /// The earliest live deadline, if any.
    package mutating func nextDeadline() -> Int64? {
        dropStaleTop()
        return heap.first?.deadline
    }

    /// Removes and returns every key (at most `limit`) whose deadline is at or before `now`, earliest
    /// first. A returned key is no longer scheduled until it is scheduled again.
    package mutating func popDue(now: Int64, limit: Int = .max) -> [(key: Key, deadline: Int64)] {
        var due: [(key: Key, deadline: Int64)] = []
        while due.count < limit {
            dropStaleTop()
            guard let top = heap.first, top.deadline <= now else { return due }
            popTop()
            generations.removeValue(forKey: top.key)
            due.append((top.key, top.deadline))
        }
        return due
    }

    // MARK: Heap

    private static func precedes(_ a: Entry, _ b: Entry) -> Bool {
        (a.deadline, a.sequence) < (b.deadline, b.sequence)
    }

    private func isLive(_ entry: Entry) -> Bool { generations[entry.key] == entry.generation }

    private mutating func dropStaleTop() {
        while let top = heap.first, !isLive(top) { popTop() }
    }

    /// Rebuilds the heap when most entries are stale (keys rescheduled or cancelled many times), so
    /// memory stays proportional to the number of scheduled keys.
    private mutating func compactIfStale() {
        guard heap.count > 64, heap.count > 2 * generations.count else { return }
        heap = heap.filter(isLive)
        for index in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popTop() {
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        if !heap.isEmpty { siftDown(0) }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var first = parent
            if left < heap.count, Self.precedes(heap[left], heap[first]) { first = left }
            if right < heap.count, Self.precedes(heap[right], heap[first]) { first = right }
            if first == parent { return }
            heap.swapAt(parent, first)
            parent = first
        }
    }
}
