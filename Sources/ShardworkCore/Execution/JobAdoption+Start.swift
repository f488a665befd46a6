import Logging
import Synchronization

// The registration of the host's own jobs when it starts, riding out a lost connection and an
// expired session.

extension JobAdoption {
    /// How many session expiries during the start's registration a host rides out (registering
    /// again on each new session) before the start fails.
    static let expiriesAtStart = 3

    /// Registers every job of the host's file, in one registry session: a session that expires
    /// meanwhile took the instance nodes made so far with it, so once the registry has opened a
    /// new one (it does by itself), every job is registered again (each step writes what is
    /// missing). A host paused or cut off for longer than its session while it starts thus
    /// starts rather than exits; after ``expiriesAtStart`` expiries, or when no new session comes
    /// within the connection timeout, the start fails.
    func registerAtStart(setAside setAsideAtStart: [(job: JobConfiguration, reason: String)]) async throws {
        var adopted: Set<String> = []
        var expiries = 0
        while true {
            let session = registry.sessionID
            do {
                for runtime in runtimes.values.sorted(by: { $0.name < $1.name }) {
                    do {
                        try await retryingUncertain("register the job", job: runtime.name) { try await register(runtime) }
                        if adopted.insert(runtime.name).inserted { services.events.publish(.jobAdopted(job: runtime.name)) }
                    } catch let error as JobRegistrationError where error.setsAside {
                        await setAside(runtime, reason: error.message)
                    }
                }
                for (job, reason) in setAsideAtStart {
                    await setAsideBeforeRegistration(job, reason: reason)
                }
                let namespace = try await retryingUncertain("read the namespace") { try await registry.exists("/", watch: nil) }
                namespaceCreated.withLock { $0 = namespace?.createdTransaction }
                // Done in one session: the nodes made are all there.
                if registry.sessionID == session { return }
            } catch let error as RegistryError where error.code == .sessionExpired || error.code.isUncertain {
                // Uncertain here means no answer for twice the session timeout (``retryingUncertain``):
                // the server has expired the session by then; the client learns it on reconnecting.
                guard expiries < Self.expiriesAtStart, await awaitSession(after: session) else { throw error }
                expiries += 1
                logRegisteringAgain(expiries)
                continue
            }
            // The session changed between two steps, with no error seen: the same.
            guard expiries < Self.expiriesAtStart else { throw RegistryError(.sessionExpired) }
            expiries += 1
            logRegisteringAgain(expiries)
        }
    }

    private func logRegisteringAgain(_ expiries: Int) {
        logger.warning(
            "registry: the session expired during the start; registering every job again on the new one", metadata: ["expiries": "\(expiries)"])
    }

    /// Returns true once the registry has a session other than `old` (the registry opens one by
    /// itself after an expiry); false when the registry closes, or none comes within the time the
    /// start gives a connection.
    private func awaitSession(after old: Int64?) async -> Bool {
        let states = registry.sessionStates()
        let limit: Duration = if case .zookeeper(let zookeeper) = configuration.registry {
            .milliseconds(zookeeper.connectionTimeoutMilliseconds)
        } else {
            .seconds(15)
        }
        let renewed = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await state in states {
                    switch state {
                    case .connected(let id) where id != old: return true
                    case .closed: return false
                    default: continue
                    }
                }
                return false
            }
            group.addTask { [clock = services.clock] in
                try? await clock.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !renewed {
            logger.error("registry: no new session during the start", metadata: ["waited": "\(limit)"])
        }
        return renewed
    }

    /// Runs a registry step of the start again while its outcome is uncertain (the connection to
    /// ZooKeeper was lost, or a request went unanswered for a session timeout), for up to twice
    /// the session timeout: a host whose connection comes back within its session starts, rather
    /// than exiting on a blip. The steps of a registration are safe to repeat: they write what is
    /// missing, and the same values again. A session that expires meanwhile is left to
    /// ``registerAtStart(setAside:)``; any other error ends the start.
    private func retryingUncertain<Result>(
        _ step: String, job: String? = nil, _ body: () async throws -> Result
    ) async throws -> Result {
        let clock = services.clock
        let deadline = clock.monotonicNow() + (registry.sessionTimeout ?? .zero) * 2
        var pause = Duration.milliseconds(50)
        while true {
            do {
                return try await body()
            } catch let error as RegistryError where error.code.isUncertain && clock.monotonicNow() + pause < deadline {
                var metadata: Logger.Metadata = ["step": "\(step)", "error": "\(LogText.escaped(error.description))", "retry.in": "\(pause)"]
                if let job { metadata["job"] = "\(LogText.escaped(job))" }
                logger.warning("registry: no certain answer during the start; trying again", metadata: metadata)
                try await clock.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
            }
        }
    }
}
