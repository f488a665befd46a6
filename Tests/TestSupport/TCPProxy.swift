import Foundation

/// A TCP proxy on 127.0.0.1 in front of one upstream port, that a test can cut: a network
/// partition between a client and its server, without stopping either. While cut, every open
/// connection is dropped and new ones are closed at once.
public final class TCPProxy: @unchecked Sendable {
    public let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var isCut = false
    private var isClosed = false
    private var open: Set<Int32> = []

    public init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ready = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && getsockname(listener, pointer, &length) == 0 && listen(listener, 64) == 0
            }
        }
        guard ready else { throw TestSetupError("TCPProxy: cannot listen on 127.0.0.1: errno \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { close() }

    /// Drops every connection and refuses new ones until `restore()`.
    public func cut() {
        let sockets = lock.withLock { () -> Set<Int32> in
            isCut = true
            defer { open.removeAll() }
            return open
        }
        for socket in sockets { shutdown(socket, Int32(SHUT_RDWR)) }
    }

    public func restore() {
        lock.withLock { isCut = false }
    }

    public func close() {
        let sockets = lock.withLock { () -> Set<Int32>? in
            guard !isClosed else { return nil }
            isClosed = true
            isCut = true
            defer { open.removeAll() }
            return open
        }
        guard let sockets else { return }
        for socket in sockets { shutdown(socket, Int32(SHUT_RDWR)) }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if lock.withLock({ isClosed }) { return }
                continue
            }
            guard !lock.withLock({ isCut }) else {
                Glibc.close(client)
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else {
                Glibc.close(client)
                Glibc.close(upstream)
                continue
            }
            // Bytes go on as they come: with Nagle's algorithm each small request or answer of a
            // relayed protocol waited for the peer's delayed acknowledgement (about 40 ms).
            var noDelay: Int32 = 1
            for socket in [client, upstream] {
                setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
            }
            lock.withLock {
                open.insert(client)
                open.insert(upstream)
            }
            let pair = Pair()
            Thread.detachNewThread { [self] in pump(from: client, to: upstream, pair) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client, pair) }
        }
    }

    /// Copies bytes one way until either side ends, then ends both.
    /// The two pumps of one connection: the second to finish closes both sockets.
    private final class Pair: @unchecked Sendable {
        var running = 2
    }

    private func pump(from source: Int32, to destination: Int32, _ pair: Pair) {
        var buffer = [UInt8](repeating: 0, count: 16384)
        loop: while true {
            let count = read(source, &buffer, buffer.count)
            if count <= 0 { break }
            var sent = 0
            while sent < count {
                let written = buffer[sent..<count].withUnsafeBytes { write(destination, $0.baseAddress!, $0.count) }
                if written <= 0 { break loop }
                sent += written
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
        let last = lock.withLock { () -> Bool in
            pair.running -= 1
            guard pair.running == 0 else { return false }
            open.remove(source)
            open.remove(destination)
            return true
        }
        if last {
            Glibc.close(source)
            Glibc.close(destination)
        }
    }
}
