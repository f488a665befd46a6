import Foundation
package import Logging
import Synchronization

/// Tries jobs' providers in a separate process before the host makes them in its own.
///
/// Making a job's providers runs plugin code (each provider's `create`, the executor's thread
/// count, and `destroy`), which may crash or hang. A host that did it first in its own process
/// would die, and with a job adopted by every host of a cluster, every host would. So the host runs
/// `shardwork worker --trial`, which loads the job's plugins and makes every provider of each job,
/// reporting as it goes; a job whose trial crashes or hangs the process is set aside (the process is
/// killed with its whole group at the limit), and the trial goes on with the jobs after it in a new
/// process. Verdicts are kept by the job's fingerprint (its configuration and plugin files), so an
/// unchanged job is tried once.
package final class JobTrials: Sendable {
    package enum Verdict: Sendable, Equatable {
        case passed
        /// A provider refused the configuration: the error the host would have got itself.
        case refused(field: String, message: String)
        /// The trial process died or hung while making the job's providers: the host must not make
        /// them. The reason says which and how.
        case failed(String)
    }

    let executable: String
    let children: ChildProcessSet
    /// How long a trial process may go without reporting before it is killed.
    let limit: Duration
    let logger: Logger
    private let known = Mutex<[String: Verdict]>([:])
    private let unavailableReported = Mutex(false)

    /// The most verdicts kept; beyond it the oldest are forgotten (they are tried again if needed).
    static let keptVerdicts = 10_000

    package init(executable: String, children: ChildProcessSet, limit: Duration = .seconds(30), logger: Logger) {
        self.executable = executable
        self.children = children
        self.limit = limit
        self.logger = logger
    }

    /// The verdict for every plan, by fingerprint, trying those not tried before (blocking the
    /// calling thread while it does). A plan without a verdict could not be tried: the trial
    /// process could not run at all (the host is stopping, or its binary cannot be started), which
    /// the caller treats as it sees fit.
    package func verdicts(for plans: [JobPlan], processorCount: Int) -> [String: Verdict] {
        var verdicts: [String: Verdict] = [:]
        var remaining: [JobPlan] = []
        let cached = known.withLock { $0 }
        var seen = Set<String>()
        for plan in plans where seen.insert(plan.fingerprint).inserted {
            if let verdict = cached[plan.fingerprint] { verdicts[plan.fingerprint] = verdict } else { remaining.append(plan) }
        }
        while !remaining.isEmpty {
            guard let (decided, rest) = trial(remaining, processorCount: processorCount) else { break }
            for (fingerprint, verdict) in decided { verdicts[fingerprint] = verdict }
            known.withLock { known in
                if known.count > Self.keptVerdicts { known.removeAll() }
                known.merge(decided) { $1 }
            }
            remaining = rest
        }
        return verdicts
    }

    /// One trial process over `plans`: the verdicts it reached, and the plans left for another
    /// process (those after one that crashed or hung it). `nil` when it could not run at all.
    private func trial(_ plans: [JobPlan], processorCount: Int) -> ([String: Verdict], [JobPlan])? {
        var files: [String] = []
        for plan in plans { for file in plan.pluginFiles where !files.contains(file) { files.append(file) } }
        let request = TrialRequest(processorCount: processorCount, plugins: files, jobs: plans.map(\.configuration))
        let outcome: ChildProcess.Outcome
        do {
            outcome = try ChildProcess.run(
                executable, ["worker", "--trial"], environment: ChildProcess.pluginChildEnvironment,
                input: try JSONEncoder().encode(request), idleTimeout: limit, set: children)
        } catch {
            reportUnavailable("cannot start \(executable) to try jobs in a separate process: \(error)")
            return nil
        }
        if outcome.stopped { return nil }
        var ready = false
        var started: String?
        var decided: [String: Verdict] = [:]
        let byName = Dictionary(plans.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { first, _ in first })
        for line in outcome.standardOutput.split(separator: 0x0A) {
            guard let event = try? JSONDecoder().decode(TrialEvent.self, from: line) else { continue }
            switch event.event {
            case "ready": ready = true
            case "start": started = event.job
            case "passed":
                if let job = event.job, let fingerprint = byName[job] { decided[fingerprint] = .passed }
                started = nil
            case "refused":
                if let job = event.job, let fingerprint = byName[job] {
                    decided[fingerprint] = .refused(field: event.field ?? "", message: event.message ?? "refused")
                }
                started = nil
            default: continue
            }
        }
        let ending: String
        if outcome.timedOut {
            ending = "did not finish within \(limit) in a separate trial process, which was killed with everything it started"
        } else if let signal = outcome.signalName {
            ending = "crashed a separate trial process (\(signal), signal \(outcome.status))"
        } else {
            ending = "ended a separate trial process with status \(outcome.status)"
        }
        guard ready else {
            // The plugins themselves did not load in the trial (they loaded in the host, so this is
            // the trial's own trouble): the jobs are prepared without it.
            let detail = String(decoding: outcome.standardError.suffix(400), as: UTF8.self)
            reportUnavailable("the trial process could not load the jobs' plugins: it \(ending)" + (detail.isEmpty ? "" : ": \(LogText.escaped(detail))"))
            return nil
        }
        if let job = started, let fingerprint = byName[job] {
            decided[fingerprint] = .failed("making its providers \(ending); the host did not make them")
        }
        let rest = plans.filter { decided[$0.fingerprint] == nil }
        if rest.count == plans.count {
            // No progress (the process ended before it started any job): not tried again in a loop.
            for plan in rest { decided[plan.fingerprint] = .failed("trying its providers \(ending)") }
            return (decided, [])
        }
        return (decided, rest)
    }

    private func reportUnavailable(_ message: String) {
        let reported = unavailableReported.withLock { reported in
            defer { reported = true }
            return reported
        }
        guard !reported else { return }
        logger.warning("jobs: cannot try jobs in a separate process; jobs are prepared in this process without a trial", metadata: ["reason": "\(message)"])
    }
}

/// What the host asks of `shardwork worker --trial` (on its standard input).
struct TrialRequest: Codable, Sendable {
    var processorCount: Int
    var plugins: [String]
    var jobs: [JobConfiguration]
}

/// One line of what `shardwork worker --trial` reports.
struct TrialEvent: Codable, Sendable {
    var event: String
    var job: String?
    var field: String?
    var message: String?
}

extension WorkerProcess {
    /// `shardwork worker --trial`: reads a ``TrialRequest`` from standard input, loads its plugins
    /// and makes every provider of each job (then destroys them), writing a line as it starts each
    /// job and one with its verdict. A crash or a hang leaves the started job without a verdict,
    /// which is how the host knows which job did it.
    package static func serveTrial() -> Int32 {
        let output = OutputLine()
        func write(_ event: TrialEvent) {
            output.writeRaw(WorkerMessage.line(event))
        }
        let input = FileHandle.standardInput.readToEndRetryingInterrupts()
        guard let request = try? JSONDecoder().decode(TrialRequest.self, from: input) else {
            write(TrialEvent(event: "failed", message: "the request was not a trial request"))
            return 2
        }
        var quiet = Logger(label: "shardwork.trial")
        quiet.logLevel = .critical
        let providers = ProviderRegistry()
        let loader = PluginLoader(logger: quiet)
        for file in request.plugins {
            do {
                try providers.register(try loader.load(file).get())
            } catch {
                write(TrialEvent(event: "failed", message: "\(file): \(error)"))
                return 1
            }
        }
        write(TrialEvent(event: "ready"))
        for job in request.jobs {
            write(TrialEvent(event: "start", job: job.jobName))
            do {
                let plan = try JobCatalog.plan(job, providers: providers, workerExecutable: "shardwork")
                // Made and dropped at once: `destroy` is tried too.
                _ = try JobCatalog.instantiate(plan, processorCount: request.processorCount, allProviders: true)
                write(TrialEvent(event: "passed", job: job.jobName))
            } catch {
                write(TrialEvent(event: "refused", job: job.jobName, field: error.field, message: error.message))
            }
        }
        return 0
    }
}
