import CZooKeeper
import Logging
import Synchronization

/// A watcher: called once, on the client library's completion thread, with the change it was set
/// for. It must return quickly and must not block (yield into a stream, start a task).
public typealias ZooKeeperWatcher = @Sendable (ZooKeeperWatchEvent) -> Void

/// A `zhandle_t *` that may cross threads: the C client is thread-safe.
struct Handle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// The state that the C client's threads reach through the handle's context pointer. It is
/// retained for the handle's whole life (from `zookeeper_init` until `zookeeper_close` returns),
/// because the handshake may finish, and the session watcher run, before `zookeeper_init` has even
/// returned the handle.
final class ClientCore: Sendable {
    struct Watch {
        let fire: ZooKeeperWatcher
        /// Called instead of `fire` when the watch can no longer fire (the session expired or the
        /// client closed), so that a sequence waiting on it ends.
        let abandon: (@Sendable () -> Void)?
    }

    struct State {
        var handle: Handle?
        var closing = false
        var sessionID: Int64?
        var timeout: Duration?
        var lastEvent: ZooKeeperSessionEvent?
        var watches: [UInt: Watch] = [:]
        var nextToken: UInt = 1
    }

    let state = Mutex(State())
    let events: AsyncStream<ZooKeeperSessionEvent>.Continuation
    let logger: Logger

    init(events: AsyncStream<ZooKeeperSessionEvent>.Continuation, logger: Logger) {
        self.events = events
        self.logger = logger
    }

    /// Runs `body` with the handle while no `close()` can free it; `nil` once closing has begun.
    func withHandle<R>(_ body: (Handle?) -> R) -> R {
        state.withLock { state in body(state.closing ? nil : state.handle) }
    }

    func register(_ watch: Watch) -> UInt {
        state.withLock { state in
            let token = state.nextToken
            state.nextToken &+= 1
            state.watches[token] = watch
            return token
        }
    }

    func unregister(_ token: UInt) {
        _ = state.withLock { $0.watches.removeValue(forKey: token) }
    }

    /// A per-path watch fired: each token fires at most once.
    func fire(_ token: UInt, type: Int32, path: String) {
        guard let watch = state.withLock({ $0.watches.removeValue(forKey: token) }) else { return }
        let kind: ZooKeeperWatchEvent.Kind
        switch type {
        case ZOO_CREATED_EVENT: kind = .created
        case ZOO_DELETED_EVENT: kind = .deleted
        case ZOO_CHANGED_EVENT: kind = .dataChanged
        case ZOO_CHILD_EVENT: kind = .childrenChanged
        default:
            // ZOO_NOTWATCHING_EVENT: the server dropped the watch; it will not fire.
            watch.abandon?()
            return
        }
        watch.fire(ZooKeeperWatchEvent(kind, path))
    }

    /// The session watcher: a state change of the handle.
    func sessionChanged(_ zh: OpaquePointer, state newState: Int32) {
        let event: ZooKeeperSessionEvent
        var abandoned: [Watch] = []
        switch newState {
        case ZOO_CONNECTED_STATE:
            let id = zoo_client_id(zh).pointee.client_id
            let timeout = Duration.milliseconds(Int64(zoo_recv_timeout(zh)))
            state.withLock { state in
                state.sessionID = id
                state.timeout = timeout
            }
            event = .connected(sessionID: id, timeout: timeout)
        case ZOO_CONNECTING_STATE, ZOO_ASSOCIATING_STATE:
            event = .connecting
        case ZOO_EXPIRED_SESSION_STATE:
            abandoned = state.withLock { state in
                state.sessionID = nil
                defer { state.watches.removeAll() }
                return Array(state.watches.values)
            }
            event = .expired
        case ZOO_AUTH_FAILED_STATE:
            event = .authenticationFailed
        default:
            return
        }
        let repeated = state.withLock { state in
            defer { state.lastEvent = event }
            return state.lastEvent == event
        }
        for watch in abandoned { watch.abandon?() }
        if !repeated { events.yield(event) }
    }

    /// Takes the handle away from new requests; `nil` when closing has already begun.
    func beginClose() -> Handle? {
        state.withLock { state in
            guard !state.closing else { return nil }
            state.closing = true
            return state.handle
        }
    }

    /// After `zookeeper_close` returned: no callback runs any more.
    func finishClose() {
        let abandoned = state.withLock { state in
            state.sessionID = nil
            state.handle = nil
            defer { state.watches.removeAll() }
            return Array(state.watches.values)
        }
        for watch in abandoned { watch.abandon?() }
        events.yield(.closed)
        events.finish()
    }
}

// MARK: C callbacks (run on the C client's completion thread)

/// The handle's own watcher: session events. Its context is the core.
let sessionWatcher: watcher_fn = { zh, type, state, _, context in
    guard type == ZOO_SESSION_EVENT, let zh, let context else { return }
    Unmanaged<ClientCore>.fromOpaque(context).takeUnretainedValue().sessionChanged(zh, state: state)
}

/// Per-path watches: the context is an integer token, not an owned pointer, because the C client
/// also delivers session events to every registered watcher (which are ignored here).
let pathWatcher: watcher_fn = { zh, type, _, path, context in
    guard type != ZOO_SESSION_EVENT, let zh, let core = zoo_get_context(zh) else { return }
    let token = UInt(bitPattern: context)
    let path = path.map { String(cString: $0) } ?? ""
    Unmanaged<ClientCore>.fromOpaque(core).takeUnretainedValue().fire(token, type: type, path: path)
}

/// The C client's own log lines, routed to swift-log. The C API gives the callback no context, so
/// one process-wide logger receives them.
let clientLog = Mutex<Logger?>(nil)

let logCallback: log_callback_fn = { message in
    guard let message, let logger = clientLog.withLock({ $0 }) else { return }
    logger.debug("\(String(cString: message))")
}
