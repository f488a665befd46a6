import Foundation
import ShardworkCore
import ShardworkTestSupport
import Synchronization

/// A real Prometheus server from Debian's `prometheus` package, for the tests: its own temporary
/// configuration and data directory, listening on 127.0.0.1 on a free port, scraping the given
/// targets every second, stopped by PID.
///
/// When Prometheus is not installed, `start` throws an error that says how to install it: tests
/// that need it fail, they are never skipped.
final class PrometheusServer: Sendable {
    static let binary = "/usr/bin/prometheus"

    let port: Int
    let directory: TemporaryDirectory
    var logFile: String { directory.file("prometheus.log") }
    private let running: Mutex<(process: SpawnedProcess, guardian: ChildGuard)?>

    /// Starts a server that scrapes `targets` (`host:port` of metrics endpoints) every `interval`
    /// seconds as the scrape job `shardwork`, with `bearerToken` when given, and waits until it is
    /// ready.
    static func start(targets: [String], interval: Int = 1, bearerToken: String? = nil) async throws -> PrometheusServer {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSetupError("""
                Prometheus is not installed (no \(binary)): these tests have a real Prometheus scrape the host. \
                Install it with `scripts/install-dependencies test` (Debian's prometheus), or run the whole suite with scripts/test, which does.
                """)
        }
        let directory = try TemporaryDirectory("shardwork-prometheus")
        let port = try FreePorts.take(1)[0]
        var scrape = """
            global:
              scrape_interval: \(interval)s
              scrape_timeout: \(interval)s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: shardwork
                static_configs:
                  - targets: [\(targets.map { "\"\($0)\"" }.joined(separator: ", "))]

            """
        if let bearerToken {
            let tokenFile = directory.file("token")
            try bearerToken.write(toFile: tokenFile, atomically: true, encoding: .utf8)
            scrape += "    authorization:\n      credentials_file: \(tokenFile)\n"
        }
        let config = directory.file("prometheus.yml")
        try scrape.write(toFile: config, atomically: true, encoding: .utf8)
        let data = try directory.subdirectory("data")
        let process = try SpawnedProcess(binary, [
            "--config.file=\(config)", "--storage.tsdb.path=\(data)", "--web.listen-address=127.0.0.1:\(port)",
            "--storage.tsdb.retention.time=1h", "--log.level=warn",
        ], log: directory.file("prometheus.log"))
        let guardian = try ChildGuard(process.pid)
        let server = PrometheusServer(port: port, directory: directory, running: (process, guardian))
        do {
            try await server.waitUntilReady()
        } catch {
            await server.stop()
            throw error
        }
        return server
    }

    private init(port: Int, directory: TemporaryDirectory, running: (SpawnedProcess, ChildGuard)) {
        self.port = port
        self.directory = directory
        self.running = Mutex(running)
    }

    deinit {
        if let (process, guardian) = running.withLock({ $0 }) {
            process.signal(SIGKILL)
            guardian.release()
        }
    }

    private func waitUntilReady(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let answer = try? await HTTP.request("GET", "http://127.0.0.1:\(port)/-/ready", token: nil), answer.status == 200 { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        throw TestSetupError("Prometheus on 127.0.0.1:\(port) was not ready within \(timeout); its log:\n\(log.suffix(3000))")
    }

    func stop() async {
        guard let (process, guardian) = running.withLock({ state in defer { state = nil }; return state }) else { return }
        process.signal(SIGTERM)
        _ = await process.waitForExit()
        guardian.release()
    }

    /// One sample of an instant query's result: the series' labels and its value.
    struct Sample: Sendable {
        let labels: [String: String]
        let value: Double
    }

    /// An instant query (`/api/v1/query`): its samples. Throws with Prometheus's error when the
    /// query fails.
    func query(_ promQL: String) async throws -> [Sample] {
        var components = URLComponents(string: "http://127.0.0.1:\(port)/api/v1/query")!
        components.queryItems = [URLQueryItem(name: "query", value: promQL)]
        let answer = try await HTTP.request("GET", components.url!.absoluteString, token: nil)
        guard let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any] else {
            throw TestSetupError("Prometheus answered \(answer.status) with no JSON to \(promQL)")
        }
        guard json["status"] as? String == "success", let data = json["data"] as? [String: Any] else {
            throw TestSetupError("Prometheus refused \(promQL): \(json["error"] ?? answer.status)")
        }
        switch data["resultType"] as? String {
        case "vector":
            return (data["result"] as? [[String: Any]] ?? []).compactMap { entry in
                guard let labels = entry["metric"] as? [String: String], let value = entry["value"] as? [Any],
                      let text = value.last as? String, let number = Double(text) else { return nil }
                return Sample(labels: labels, value: number)
            }
        case "scalar":
            guard let value = data["result"] as? [Any], let text = value.last as? String, let number = Double(text) else { return [] }
            return [Sample(labels: [:], value: number)]
        default:
            return []
        }
    }

    /// The single value of a query that yields one sample; `nil` when it yields none.
    func value(_ promQL: String) async throws -> Double? {
        try await query(promQL).first?.value
    }

    /// The series that match `selector` (`/api/v1/series`): each one's labels, `__name__` included.
    func series(_ selector: String) async throws -> [[String: String]] {
        var components = URLComponents(string: "http://127.0.0.1:\(port)/api/v1/series")!
        components.queryItems = [URLQueryItem(name: "match[]", value: selector)]
        let answer = try await HTTP.request("GET", components.url!.absoluteString, token: nil)
        let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        return json?["data"] as? [[String: String]] ?? []
    }

    /// The targets' scrape health (`/api/v1/targets`): each target's `health` and `lastError`.
    func targetHealth() async throws -> [(health: String, lastError: String)] {
        let answer = try await HTTP.request("GET", "http://127.0.0.1:\(port)/api/v1/targets", token: nil)
        let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        let active = (json?["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]] ?? []
        return active.map { ($0["health"] as? String ?? "", $0["lastError"] as? String ?? "") }
    }
}
