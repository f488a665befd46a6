import Dispatch
import Foundation
import Synchronization

/// The stop signals (SIGTERM, SIGINT, SIGHUP) from the moment `shardwork run` begins. The service
/// group only listens once it runs, after the host has loaded its plugins, connected and registered
/// its jobs; a signal before that used to end the process in the middle of its registration.
/// Watched from the first moment: before the host begins to register (loading plugins, waiting for
/// ZooKeeper) a stop signal ends the process at once, with status 0, since nothing is there to
/// drain; from then on it is remembered, and the host drains as soon as its group runs.
final class StopSignals: Sendable {
    private let registering = Flag()
    /// The signals that came once the host began to register.
    let remembered: AsyncStream<Int32>
    private let sources: Mutex<[SignalSourceBox]>

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        remembered = stream
        var sources: [SignalSourceBox] = []
        let registering = self.registering
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                guard registering.isSet else { _exit(0) }
                continuation.yield(number)
            }
            source.resume()
            sources.append(SignalSourceBox(source: source))
        }
        self.sources = Mutex(sources)
    }

    /// The host begins to register its jobs: a stop signal from now on drains it.
    func hostRegisters() {
        registering.set()
    }
}

/// A flag set once, read from a signal handler's queue.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

/// A signal source, held only to keep it alive (a released source stops watching).
private struct SignalSourceBox: @unchecked Sendable {
    let source: any DispatchSourceSignal
}
