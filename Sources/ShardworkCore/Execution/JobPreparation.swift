import Foundation

/// How a host prepares a job, so that no job can take the host down while it does: the checks that
/// run no plugin code first (``JobCatalog/plan(_:providers:workerExecutable:locate:file:)``); then
/// the crash journal (a job this host died for, with the same fingerprint, is refused); then a trial
/// of the job's providers in a separate process (``JobTrials``); only then its providers are made
/// in the host.
struct JobPreparation: Sendable {
    let providers: ProviderRegistry
    let processorCount: Int
    let workerExecutable: String?
    let trials: JobTrials?
    let journal: CrashJournal?

    /// One job to prepare, with where its fields were written (for a host's own file).
    struct Request: Sendable {
        var job: JobConfiguration
        var locate: @Sendable (String) -> FilePosition? = { _ in nil }
        var file: String?
    }

    enum Outcome: Sendable {
        /// Made here; `nil` when it was only checked (``check(_:)``), and tried in a separate process.
        case prepared(PreparedJob?)
        /// The configuration is wrong for these plugins (a name, a property they refuse): the
        /// located error a host's file or the control API reports.
        case refused(HostConfigurationError)
        /// The job's providers cannot be made in this host without risking it: they crashed or hung
        /// a trial, or the host died making or running them before. The reason says which.
        case setAside(String)
    }

    /// Prepares `requests` in order (blocking: a trial runs a process, and making providers runs
    /// plugin code). With `registry`, the providers are resolved there instead (a hot-load's
    /// proposed registry).
    func prepare(_ requests: [Request], in registry: ProviderRegistry? = nil, makeHere: Bool = true) -> [Outcome] {
        var plans: [(plan: JobPlan, request: Request)] = []
        var outcomes: [Int: Outcome] = [:]
        for (index, request) in requests.enumerated() {
            do {
                let plan = try JobCatalog.plan(
                    request.job, providers: registry ?? providers, workerExecutable: workerExecutable, locate: request.locate,
                    file: request.file)
                if let crash = journal?.crash(of: plan.name, fingerprint: plan.fingerprint) {
                    outcomes[index] = .setAside(crash.reason)
                } else {
                    plans.append((plan, request))
                }
            } catch {
                outcomes[index] = .refused(error)
            }
        }
        let verdicts = trials?.verdicts(for: plans.map(\.plan), processorCount: processorCount) ?? [:]
        var next = plans.makeIterator()
        for index in requests.indices where outcomes[index] == nil {
            guard let (plan, request) = next.next() else { break }
            switch verdicts[plan.fingerprint] {
            case .refused(let field, let message)?:
                outcomes[index] = .refused(JobCatalog.failure(request.job, field, message, locate: request.locate, file: request.file))
            case .failed(let reason)?:
                outcomes[index] = .setAside(reason)
            case .passed? where !makeHere:
                outcomes[index] = .prepared(nil)
            case .passed?, nil:
                do {
                    outcomes[index] = .prepared(try JobCatalog.instantiate(
                        plan, processorCount: processorCount, locate: request.locate, file: request.file))
                } catch {
                    outcomes[index] = .refused(error)
                }
            }
        }
        return requests.indices.map { outcomes[$0] ?? .setAside("it was not prepared") }
    }

    /// The outcome of preparing one job.
    enum Prepared: Sendable {
        case prepared(PreparedJob)
        case refused(HostConfigurationError)
        case setAside(String)
    }

    /// Prepares one job on a thread of its own, never holding one of Swift's cooperative threads
    /// while a trial process runs.
    func prepare(_ job: JobConfiguration) async -> Prepared {
        switch await outcome(job, makeHere: true) {
        case .prepared(let prepared?): .prepared(prepared)
        case .prepared(nil): .setAside("it was not prepared")
        case .refused(let error): .refused(error)
        case .setAside(let reason): .setAside(reason)
        }
    }

    /// Checks one job as ``prepare(_:)`` does, without making its providers here when a trial
    /// process found them sound: `nil` when it would prepare.
    func check(_ job: JobConfiguration) async -> Outcome? {
        let outcome = await outcome(job, makeHere: false)
        if case .prepared = outcome { return nil }
        return outcome
    }

    private func outcome(_ job: JobConfiguration, makeHere: Bool) async -> Outcome {
        let preparation = self
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: preparation.prepare([Request(job: job)], makeHere: makeHere)[0])
            }
        }
    }
}
