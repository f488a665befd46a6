import Synchronization

extension ShardworkHost {
    /// Whether the host should be sent work now, and why not (docs/metrics.md, `GET /readyz`):
    /// started with every job registered, not stopping, its registry session up and the host not
    /// fenced. Cheap: flags only, no registry request.
    public func readiness() -> HostReadiness {
        let (registered, stopped) = context.lifecycle.withLock { ($0.registered, $0.stopped) }
        let connected = services.registryConnected.load(ordering: .acquiring)
        let fenced = services.fenced.load(ordering: .acquiring)
        var reasons: [String] = []
        if stopped {
            reasons.append("the host is stopping")
        } else if !registered {
            reasons.append("the host has not registered its jobs yet")
        }
        if !connected { reasons.append("the registry session is down") }
        if fenced { reasons.append("the host is fenced: the registry has not answered within the fencing fraction of the session timeout") }
        return HostReadiness(
            registered: registered, stopping: stopped, registryConnected: connected, fenced: fenced, jobs: runtimes.count,
            jobsSetAside: adoption.incapable.withLock { $0.count }, reasons: reasons)
    }
}

/// A host's readiness for work (``ShardworkHost/readiness()``), as `GET /readyz` answers it.
public struct HostReadiness: Sendable, Equatable, Codable {
    /// Ready when nothing is in ``reasons``.
    public var ready: Bool { reasons.isEmpty }
    /// Every job of the host's start is registered (or set aside).
    public var registered: Bool
    public var stopping: Bool
    public var registryConnected: Bool
    public var fenced: Bool
    /// Jobs that run here, and jobs the host cannot run (set aside: not a reason to be unready).
    public var jobs: Int
    public var jobsSetAside: Int
    /// Why the host is not ready, in words; empty when it is.
    public var reasons: [String]

    private enum CodingKeys: String, CodingKey {
        case ready, registered, stopping, registryConnected, fenced, jobs, jobsSetAside, reasons
    }

    public init(registered: Bool, stopping: Bool, registryConnected: Bool, fenced: Bool, jobs: Int, jobsSetAside: Int, reasons: [String]) {
        self.registered = registered
        self.stopping = stopping
        self.registryConnected = registryConnected
        self.fenced = fenced
        self.jobs = jobs
        self.jobsSetAside = jobsSetAside
        self.reasons = reasons
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        registered = try container.decode(Bool.self, forKey: .registered)
        stopping = try container.decode(Bool.self, forKey: .stopping)
        registryConnected = try container.decode(Bool.self, forKey: .registryConnected)
        fenced = try container.decode(Bool.self, forKey: .fenced)
        jobs = try container.decode(Int.self, forKey: .jobs)
        jobsSetAside = try container.decode(Int.self, forKey: .jobsSetAside)
        reasons = try container.decode([String].self, forKey: .reasons)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(ready, forKey: .ready)
        try container.encode(registered, forKey: .registered)
        try container.encode(stopping, forKey: .stopping)
        try container.encode(registryConnected, forKey: .registryConnected)
        try container.encode(fenced, forKey: .fenced)
        try container.encode(jobs, forKey: .jobs)
        try container.encode(jobsSetAside, forKey: .jobsSetAside)
        try container.encode(reasons, forKey: .reasons)
    }
}
