import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where the control API of a running host is, and its token: the options every command that
/// speaks to a host takes.
struct ControlOptions: ParsableArguments {
    @Option(name: .customLong("host"), help: ArgumentHelp(
        "The control API of a running host (default: SHARDWORK_HOST, else http://127.0.0.1:8470).", valueName: "url"))
    var host: String?

    @Option(name: .customLong("token"), help: ArgumentHelp(
        "The host's api.token (default: SHARDWORK_TOKEN).", valueName: "token"))
    var token: String?

    @Flag(help: "Print the host's JSON answer as it came.")
    var json = false

    func client() throws -> ControlClient { try Self.client(host: host, token: token) }

    /// Sends an operation that changes something and prints what the host answered.
    func change(
        _ method: String, _ path: String, query: [String: String?] = [:], body: Data? = nil, contentType: String? = nil,
        headers: [String: String] = [:]
    ) async throws {
        let client = try client()
        let answer = try await client.send(method, path, query: query, body: body, contentType: contentType, headers: headers)
        try client.decode(DoneAnswer.self, from: answer).print(json: json, answer)
    }

    static func client(host: String?, token: String?) throws -> ControlClient {
        let environment = ProcessInfo.processInfo.environment
        let base = host ?? environment["SHARDWORK_HOST"] ?? "http://127.0.0.1:8470"
        guard let url = URL(string: base), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
            throw CLIFailure.badInput("--host \(base): not an http:// or https:// URL such as http://127.0.0.1:8470")
        }
        guard let token = token ?? environment["SHARDWORK_TOKEN"], !token.isEmpty else {
            throw CLIFailure.badInput("no token: give --token or set SHARDWORK_TOKEN to the host's api.token")
        }
        return ControlClient(base: url, token: token)
    }
}

/// A client of the control API (docs/operations.md). A 4xx answer is bad input (exit 2) with the
/// host's message; a 5xx answer or no answer fails (exit 1).
struct ControlClient: Sendable {
    let base: URL
    let token: String

    struct Answer {
        var status: Int
        var data: Data
        var text: String { String(decoding: data, as: UTF8.self) }
    }

    /// Sends a request; throws ``CLIFailure`` for anything but a 2xx answer.
    func send(
        _ method: String, _ path: String, query: [String: String?] = [:], body: Data? = nil, contentType: String? = nil,
        headers: [String: String] = [:]
    ) async throws -> Answer {
        var components = URLComponents(url: base.appendingPathComponent("v1").appendingPathComponent(path), resolvingAgainstBaseURL: false)!
        let items = query.compactMap { key, value in value.map { URLQueryItem(name: key, value: $0) } }
        if !items.isEmpty { components.queryItems = items.sorted { $0.name < $1.name } }
        guard let url = components.url else { throw CLIFailure.badInput("cannot make a URL of \(path)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 600
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = body
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw CLIFailure.failed("no answer from the control API at \(base.absoluteString): \(error.localizedDescription) (is the host running with an api: section?)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let answer = Answer(status: status, data: data)
        guard (200..<300).contains(status) else {
            let message = Self.errorMessage(answer)
            if status == 401 { throw CLIFailure.badInput("the control API refused the token (401): \(message)") }
            if (400..<500).contains(status) { throw CLIFailure.badInput("\(message) (\(status))") }
            throw CLIFailure.failed("the control API failed (\(status)): \(message)")
        }
        return answer
    }

    /// `job 'x': field: message` from an error answer, or the body as it came.
    static func errorMessage(_ answer: Answer) -> String {
        struct ErrorBody: Decodable {
            struct Detail: Decodable {
                var message: String
                var job: String?
                var field: String?
            }
            var error: Detail
        }
        guard let body = try? JSONDecoder().decode(ErrorBody.self, from: answer.data) else {
            return answer.text.isEmpty ? "no message" : answer.text
        }
        var text = ""
        if let job = body.error.job { text += "job '\(job)': " }
        if let field = body.error.field { text += "\(field): " }
        return text + body.error.message
    }

    func decode<Value: Decodable>(_ type: Value.Type, from answer: Answer) throws -> Value {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(type, from: answer.data)
        } catch {
            throw CLIFailure.failed("the control API's answer does not read as \(type): \(error)")
        }
    }
}

/// What every changing operation answers.
struct DoneAnswer: Decodable {
    var message: String
    var instances: [String]?
    var warning: String?
    var version: Int32?

    func print(json: Bool, _ answer: ControlClient.Answer) {
        if json {
            Swift.print(answer.text, terminator: answer.text.hasSuffix("\n") ? "" : "\n")
            return
        }
        Swift.print(message)
        if let instances, !instances.isEmpty { Swift.print("instances: " + instances.joined(separator: ", ")) }
        if let warning { Swift.print("warning: \(warning)") }
    }
}
