public import Foundation
import CShardworkSupport
import ShardworkCore
import Synchronization

/// Real ZooKeeper servers from Debian's `zookeeper` package, for the tests: one standalone server or
/// an ensemble, on 127.0.0.1, on free ports, each with its own data directory, stopped by PID.
///
/// When the package or a Java runtime is missing, `start` throws an error that says how to install
/// them: tests that need ZooKeeper fail, they are never skipped.
public final class ZooKeeperEnsemble: @unchecked Sendable {
    public struct Member: Sendable {
        public let id: Int
        public let clientPort: Int
        let quorumPort: Int
        let electionPort: Int
        let configFile: String
        let logFile: String
    }

    public static let jar = "/usr/share/java/zookeeper.jar"
    /// The server's tick, in ms. Sessions expire in buckets of ticks, and a session's timeout is
    /// at least two ticks; a short tick keeps expiry tests short.
    public static let tickMilliseconds = 250

    public let members: [Member]
    public let directory: TemporaryDirectory
    private let lock = NSLock()
    private var running: [Int: Server] = [:]

    /// A running member: java, our own child, and a guard shell that kills it by PID when its
    /// pipe from this process closes without a goodbye: a test process that dies (crash, kill)
    /// leaves no server behind.
    private struct Server {
        let java: SpawnedProcess
        let guardian: ChildGuard
    }


    /// `host:port,host:port,...` of every member.
    public var connectString: String { members.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",") }

    /// Starts `size` servers (1: standalone) and waits until every one of them serves requests.
    public static func start(size: Int = 1) async throws -> ZooKeeperEnsemble {
        guard FileManager.default.fileExists(atPath: jar) else {
            throw TestSetupError("""
                ZooKeeper is not installed (no \(jar)): these tests need a real ZooKeeper server. \
                Install it with `scripts/install-dependencies test` (Debian's zookeeper and default-jre-headless), \
                or run the whole suite with scripts/test, which does.
                """)
        }
        guard Subprocess.which("java") != nil else {
            throw TestSetupError("no `java` on PATH: ZooKeeper needs a Java runtime; install it with `scripts/install-dependencies test`")
        }
        let directory = try TemporaryDirectory("shardwork-zk")
        let ports = try FreePorts.take(3 * size)
        var members: [Member] = []
        for index in 0..<size {
            let id = index + 1
            members.append(Member(
                id: id, clientPort: ports[3 * index], quorumPort: ports[3 * index + 1], electionPort: ports[3 * index + 2],
                configFile: directory.file("zoo\(id).cfg"), logFile: directory.file("zookeeper\(id).log")))
        }
        for member in members {
            let data = try directory.subdirectory("data\(member.id)")
            var lines = [
                "tickTime=\(tickMilliseconds)",
                "initLimit=20",
                "syncLimit=10",
                "dataDir=\(data)",
                "clientPort=\(member.clientPort)",
                "clientPortAddress=127.0.0.1",
                "admin.enableServer=false",
                "minSessionTimeout=\(2 * tickMilliseconds)",
                "maxSessionTimeout=60000",
                "4lw.commands.whitelist=ruok,stat,srvr,mntr,cons,dump,wchs",
                "maxClientCnxns=0",
            ]
            if size > 1 {
                try "\(member.id)\n".write(toFile: data + "/myid", atomically: true, encoding: .utf8)
                for other in members {
                    lines.append("server.\(other.id)=127.0.0.1:\(other.quorumPort):\(other.electionPort)")
                }
            }
            try (lines.joined(separator: "\n") + "\n").write(toFile: member.configFile, atomically: true, encoding: .utf8)
        }
        let ensemble = ZooKeeperEnsemble(members: members, directory: directory)
        do {
            for member in members {
                let id = member.id
                try await onOwnThread { try ensemble.launch(id) }
            }
            for member in members { try await ensemble.waitUntilServing(member.id) }
        } catch {
            ensemble.stopAll()
            throw error
        }
        return ensemble
    }

    private init(members: [Member], directory: TemporaryDirectory) {
        self.members = members
        self.directory = directory
    }

    deinit { stopAll() }

    public func member(_ id: Int) -> Member { members[id - 1] }

    /// The java process of a running member.
    public func pid(_ id: Int) -> Int32? {
        lock.withLock { running[id]?.java.pid }
    }

    private func launch(_ id: Int) throws {
        let member = member(id)
        guard let javaPath = Subprocess.which("java") else { throw TestSetupError("no `java` on PATH") }
        var classPath = Self.jar
        if FileManager.default.fileExists(atPath: "/usr/share/java/slf4j-simple.jar") {
            classPath += ":/usr/share/java/slf4j-simple.jar"
        }
        let java = try SpawnedProcess(javaPath, [
            "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classPath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", member.configFile,
        ], log: member.logFile)
        let guardian = try ChildGuard(java.pid)
        lock.withLock { running[id] = Server(java: java, guardian: guardian) }
    }

    /// Sends a signal to a running member's java process (SIGSTOP and SIGCONT to freeze it).
    public func signal(_ id: Int, _ signal: Int32) {
        lock.withLock { running[id]?.java }?.signal(signal)
    }

    /// Waits until the member answers `srvr` with its mode (standalone, leader or follower): it
    /// then serves clients.
    public func waitUntilServing(_ id: Int, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let answer = try? await command("srvr", member: id), answer.contains("Mode:") { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        let log = (try? String(contentsOfFile: member(id).logFile, encoding: .utf8)) ?? ""
        throw TestSetupError("ZooKeeper server \(id) on 127.0.0.1:\(member(id).clientPort) did not start serving within \(timeout); its log:\n\(log.suffix(3000))")
    }

    /// Stops a member with SIGTERM (or `signal`, SIGKILL for a crash) and waits for its exit.
    public func stop(_ id: Int, signal: Int32 = SIGTERM) async {
        _ = try? await onOwnThread { self.stopNow(id, signal: signal) }
    }

    private func stopNow(_ id: Int, signal: Int32) {
        guard let server = lock.withLock({ running.removeValue(forKey: id) }) else { return }
        server.java.signal(signal)
        server.java.signal(SIGCONT)
        server.java.waitForExitBlocking()
        server.guardian.release()
    }

    /// Starts a stopped member again on the same ports and data, and waits until it serves.
    public func restart(_ id: Int) async throws {
        await stop(id)
        try await onOwnThread { try self.launch(id) }
        try await waitUntilServing(id)
    }

    public func stopAll() {
        for member in members { stopNow(member.id, signal: SIGKILL) }
    }

    /// A four-letter-word command (`mntr`, `srvr`, `dump`, ...) and the server's answer.
    public func command(_ word: String, member id: Int = 1) async throws -> String {
        let port = member(id).clientPort
        return try await onOwnThread { try FourLetterWord.ask(word, port: port) }
    }

    /// The server's last committed transaction id, from `srvr`: every write (one per request, one
    /// per multi, and the opening and closing of sessions) raises it by one.
    public func lastZxid(member id: Int = 1) async throws -> Int64 {
        let answer = try await command("srvr", member: id)
        guard let line = answer.split(separator: "\n").first(where: { $0.hasPrefix("Zxid:") }),
              let value = Int64(line.dropFirst("Zxid: 0x".count), radix: 16)
        else { throw TestSetupError("no Zxid in srvr's answer: \(answer)") }
        return value
    }

    /// `mntr` as key → value.
    public func monitor(member id: Int = 1) async throws -> [String: String] {
        var values: [String: String] = [:]
        for line in try await command("mntr", member: id).split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        return values
    }
}

/// Kills a child process by PID if this process dies first (a crash, a kill, a test run cut
/// short), so that no server or host outlives the tests that started it. A small shell reads a pipe
/// from this process: when the pipe closes without a goodbye, it kills the child.
public final class ChildGuard: Sendable {
    private let shell: SpawnedProcess
    /// Our end of the guard's pipe; -1 once closed.
    private let control: Mutex<Int32>

    static let script = #"""
        while read -r line; do
            if [ "$line" = EXIT ]; then exit 0; fi
        done
        kill -9 "$1" 2>/dev/null
        """#

    public init(_ pid: Int32) throws {
        // Both ends close on exec: ours must not leak into other children (the next server, say),
        // as the guard sees its pipe close only when every copy of the write end is gone; the
        // guard's end becomes its standard input.
        var ends: [Int32] = [-1, -1]
        guard shardwork_pipe(&ends) == 0 else { throw TestSetupError("pipe(): \(String(cString: strerror(errno)))") }
        defer { close(ends[0]) }
        do {
            shell = try SpawnedProcess("/bin/sh", ["-c", Self.script, "shardwork-test-guard", String(pid)], input: ends[0])
        } catch {
            close(ends[1])
            throw error
        }
        control = Mutex(ends[1])
    }

    /// Dropped without a release: the pipe closes and the guard kills the child.
    deinit {
        let fd = control.withLock { $0 }
        if fd >= 0 { close(fd) }
    }

    /// The child has ended (or is ending) on purpose: the guard leaves without killing anything.
    public func release() {
        let fd = control.withLock { fd -> Int32 in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { return }
        let goodbye = Array("EXIT\n".utf8)
        _ = goodbye.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        // Reaped once it has gone, so that it leaves no zombie behind.
        let shell = shell
        Task.detached { await shell.waitForExit() }
    }
}

/// One standalone server shared by the tests of a test process that only need a server (each
/// uses its own namespace). Its guard stops it when the test process exits.
public enum SharedZooKeeper {
    private static let server = Task { try await ZooKeeperEnsemble.start() }

    public static func ensemble() async throws -> ZooKeeperEnsemble { try await server.value }

    /// A port on 127.0.0.1 that nothing listens on (for tests of an unreachable server).
    public static func unusedPort() async throws -> Int { try FreePorts.take(1)[0] }
}

/// Free TCP ports on 127.0.0.1 for the test servers, each checked by binding it.
///
/// Taken below Linux's ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by default),
/// never from it: a port the kernel hands out for port 0 comes from that range, and between the
/// check and the server's bind any outgoing connection of the machine may take it as its source
/// port (seen once under the full suite: a ZooKeeper server failed with "Address already in
/// use"). No port is handed out twice in one test process.
public enum FreePorts {
    /// Below the ephemeral range, above the well-known and most registered services' ports.
    static let range = 20_000...32_767
    private static let handedOut = Mutex<Set<Int>>([])

    public static func take(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts <= 10_000 else { throw TestSetupError("no free port in \(range) after \(attempts - 1) attempts") }
            let port = Int.random(in: range)
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TestSetupError("socket(): errno \(errno)") }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            // Kept bound until every port is found, so that one call never gets a port twice.
            sockets.append(fd)
            if bound { ports.append(port) }
        }
        return ports
    }
}

/// ZooKeeper's four-letter-word commands over a plain TCP connection (blocking: call it on its own
/// thread).
public enum FourLetterWord {
    public static func ask(_ word: String, port: Int) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket(): errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw TestSetupError("connect(127.0.0.1:\(port)): errno \(errno)") }
        _ = word.withCString { write(fd, $0, strlen($0)) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            answer.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: answer, as: UTF8.self)
    }
}
