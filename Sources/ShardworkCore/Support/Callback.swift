/// A closure kept in a lock (`Mutex<Callback?>`), to be read and called many times.
///
/// Not `Mutex<(@Sendable () -> Void)?>`: a closure that is itself a `Mutex`'s generic value is
/// re-wrapped in a reabstraction thunk on every `withLock` access, so each call goes through one
/// more thunk than the last (measured: 20,000 reads took 2 s, the next 20,000 took 7 s), and a
/// callback read after every fire would slow the host down, and in the end overflow its stack. A
/// class holds the closure in its own representation.
final class Callback<Argument>: Sendable {
    let body: @Sendable (Argument) -> Void

    init(_ body: @escaping @Sendable (Argument) -> Void) { self.body = body }

    func call(_ argument: Argument) { body(argument) }
}

extension Callback where Argument == Void {
    func call() { body(()) }
}

/// ``Callback`` for an async closure: the same reason, the same remedy.
final class AsyncCallback<Argument>: Sendable {
    let body: @Sendable (Argument) async -> Void

    init(_ body: @escaping @Sendable (Argument) async -> Void) { self.body = body }

    func call(_ argument: Argument) async { await body(argument) }
}
