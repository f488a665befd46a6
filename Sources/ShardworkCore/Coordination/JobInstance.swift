import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Who this host is in the registry: ElasticJob's instance id `{IPv4}@-@{pid}` and its server IP.
public struct JobInstance: Sendable, Equatable, Hashable {
    public let id: String
    public let serverIP: String

    public init(id: String, serverIP: String) {
        self.id = id
        self.serverIP = serverIP
    }

    /// This process: the first IPv4 address of an interface that is up and not loopback (as
    /// ElasticJob's `IpUtils` picks it; `127.0.0.1` when there is none), and the process id.
    public static func local(ip configured: String? = nil) -> JobInstance {
        let ip = configured ?? preferredIPv4() ?? "127.0.0.1"
        return JobInstance(id: "\(ip)@-@\(getpid())", serverIP: ip)
    }

    /// The process id in the instance id (`ip@-@pid`), or `nil` when the id has none.
    public var pid: Int32? {
        guard let range = id.range(of: "@-@") else { return nil }
        return Int32(id[range.upperBound...])
    }

    /// The instance node's value, as ElasticJob marshals `JobInstance` (labels are null, so left out).
    public var yaml: String {
        "jobInstanceId: \(id)\nserverIp: \(serverIP)\n"
    }

    /// Reads an instance node's value; `nil` when it is empty or not an instance.
    public static func parse(_ yaml: String) -> JobInstance? {
        var id: String?
        var ip: String?
        for line in yaml.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let value = parts[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            switch parts[0].trimmingCharacters(in: .whitespaces) {
            case "jobInstanceId": id = value
            case "serverIp": ip = value
            default: continue
            }
        }
        guard let id, !id.isEmpty else { return nil }
        return JobInstance(id: id, serverIP: ip ?? String(id.split(separator: "@").first ?? ""))
    }

    static func preferredIPv4() -> String? {
        var addresses: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&addresses) == 0, let first = addresses else { return nil }
        defer { freeifaddrs(addresses) }
        var candidates: [(name: String, ip: String)] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            let flags = Int32(entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0,
                  let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET)
            else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var inAddress = inet.pointee.sin_addr
                _ = inet_ntop(AF_INET, &inAddress, &text, socklen_t(INET_ADDRSTRLEN))
            }
            let ip = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            candidates.append((String(cString: entry.pointee.ifa_name), ip))
        }
        return candidates.first?.ip
    }
}
