import Foundation
import Logging
import Synchronization

/// Follows the host's registry session and fences its items when the registry falls silent.
///
/// One task for the whole host follows the session: while the connection is down no new fire
/// starts; after an expiry the host registers every job again on the new session (its ephemeral
/// nodes and watches died with the old one) and goes on firing. An expiry is never a shutdown.
///
/// Fencing: when the registry has not been heard from for the configured fraction of the session
/// timeout, running items are asked to stop and no new one starts, before the session can expire
/// and another host be handed them. Measured on the monotonic clock, from the last answer the
/// registry gave, so that a host that was paused (SIGSTOP) fences the moment it runs again.
final class SessionSupervisor: Sendable {
    let context: HostContext

    init(context: HostContext) {
        self.context = context
    }

    /// Starts following the session and, with a ZooKeeper registry, watching for silence, as tasks
    /// of the host's background (they end when it stops). `renewed` runs after an expiry, once the
    /// new session is up: it registers the host's jobs again.
    func start(renewed: @escaping @Sendable () async -> Void) {
        let states = context.registry.sessionStates()
        let initial = context.registry.sessionID
        context.background.spawn("registry session") { [self] in await follow(states, from: initial, renewed: renewed) }
        if case .zookeeper(let zookeeper) = context.configuration.registry, context.registry.sessionTimeout != nil {
            let fraction = zookeeper.cancelItemsAtSessionFraction
            context.background.spawn("fencing watchdog") { [self] in await watchForSilence(fraction: fraction) }
        }
    }

    private func follow(_ states: AsyncStream<SessionState>, from initial: Int64?, renewed: @Sendable () async -> Void) async {
        let services = context.services
        let logger = context.logger
        var current = initial
        for await state in states {
            switch state {
            case .connected(let id):
                let isRenewal = current != nil && id != current
                current = id
                let restored = !isRenewal && !services.registryConnected.load(ordering: .acquiring)
                let session: Logger.Metadata = ["session": "\(String(id, radix: 16))"]
                if isRenewal {
                    logger.notice("registry: new session; registering every job again", metadata: session)
                    await renewed()
                } else if restored {
                    logger.notice("registry: connection restored", metadata: session)
                }
                services.registryConnected.store(true, ordering: .releasing)
                services.fenced.store(false, ordering: .releasing)
                // Once items may start again: a reader of the event may count on it.
                if isRenewal {
                    services.events.publish(.registry(.sessionRenewed(session: id)))
                } else if restored {
                    services.events.publish(.registry(.connectionRestored(session: id)))
                }
                for runtime in context.runtimes.values { context.requestSync(runtime) }
            case .disconnected:
                services.registryConnected.store(false, ordering: .releasing)
                services.events.publish(.registry(.connectionLost))
                logger.warning("registry: connection lost; no new item starts until it is back")
            case .expired:
                services.registryConnected.store(false, ordering: .releasing)
                services.events.publish(.registry(.sessionExpired))
                fence("the registry session expired")
                for runtime in context.runtimes.values { runtime.coordinator.invalidateCache(watchesLost: true) }
                logger.warning("registry: session expired; its ephemeral nodes are gone; waiting for a new session")
            case .closed:
                return
            }
        }
    }

    /// Checks the registry's last answer against the fencing limit, often enough to fence within a
    /// fiftieth of the session timeout (every 20 to 250 ms), until the host stops.
    private func watchForSilence(fraction: Double) async {
        let registry = context.registry
        let services = context.services
        let clock = services.clock
        while !Task.isCancelled, !context.isStopped {
            guard let timeout = registry.sessionTimeout else { return }
            if let last = registry.lastContact {
                let silence = clock.monotonicNow() - last
                if silence > timeout * fraction {
                    fence("the registry has not answered for over the fencing fraction of the session timeout", metadata: [
                        "silence": "\(silence)", "fraction": "\(fraction)", "session.timeout": "\(timeout)",
                    ])
                } else if services.fenced.load(ordering: .acquiring) {
                    services.fenced.store(false, ordering: .releasing)
                    services.events.publish(.registry(.heardAgain))
                    context.logger.notice("registry: heard from again; items may start")
                }
            }
            try? await clock.sleep(for: min(max(timeout / 50, .milliseconds(20)), .milliseconds(250)))
        }
    }

    /// Asks every running item to stop (their epochs stop being current) and starts none until
    /// the registry is heard from again.
    func fence(_ reason: String, metadata: Logger.Metadata = [:]) {
        let services = context.services
        guard !services.fenced.exchange(true, ordering: .acquiringAndReleasing) else { return }
        services.fencingGeneration.add(1, ordering: .acquiringAndReleasing)
        services.cancellation.cancelRunning()
        services.events.publish(.registry(.fenced(reason: reason)))
        var metadata = metadata
        metadata["reason"] = "\(reason)"
        context.logger.warning(
            "registry: fenced; running items are asked to stop and none starts, before another host can be handed them", metadata: metadata)
    }
}
