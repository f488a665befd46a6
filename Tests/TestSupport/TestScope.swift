import Synchronization
public import Testing

/// What a test started that must stop when it ends, however it ends (an expectation that throws,
/// a `#require` that fails): hosts and clusters register their shutdown here as they are made,
/// and the ``Trait/stopsWhatItStarts`` trait runs every registered stop after the test, last
/// made first.
public final class TestScope: Sendable {
    @TaskLocal public static var current: TestScope?

    private let stops = Mutex<[@Sendable () async -> Void]>([])

    public init() {}

    /// Registers `stop` with the scope of the running test, if it has one.
    public static func onEnd(_ stop: @escaping @Sendable () async -> Void) {
        current?.stops.withLock { $0.append(stop) }
    }

    fileprivate func end() async {
        let stops = stops.withLock { stops in defer { stops = [] }; return stops }
        for stop in stops.reversed() { await stop() }
    }
}

/// Runs each test of a suite in a ``TestScope``, and stops what it started when it ends.
public struct StopsWhatItStarts: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public init() {}

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // The suite itself: its tests get a scope each.
        guard !test.isSuite else { return try await function() }
        let scope = TestScope()
        do {
            try await TestScope.$current.withValue(scope) { try await function() }
        } catch {
            await scope.end()
            throw error
        }
        await scope.end()
    }
}

extension Trait where Self == StopsWhatItStarts {
    /// Every host or cluster a test makes is stopped when the test ends, passed or failed.
    public static var stopsWhatItStarts: Self { Self() }
}
