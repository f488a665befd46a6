import CShardworkSupport
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a provider call of a job was doing.
public enum CrashPhase: Int32, Sendable, CustomStringConvertible {
    case creating = 1, sizing, sharding, running, handling, listening, destroying

    public var description: String {
        switch self {
        case .creating: "creating its providers"
        case .sizing: "asking its executor strategy for a thread count"
        case .sharding: "sharding it"
        case .running: "running one of its items"
        case .handling: "handing one of its failures to its error handler"
        case .listening: "calling its listeners"
        case .destroying: "destroying its providers"
        }
    }
}

/// Which job a provider call belongs to, as the crash journal writes it: the job's name and
/// fingerprint, in C memory that lives as long as the job's preparation.
public final class CrashContext: @unchecked Sendable {
    // Written once in init, freed once in deinit; the signal handler only reads it.
    private let bytes: UnsafeMutablePointer<CChar>
    private let length: Int
    public let job: String
    public let fingerprint: String

    public init(job: String, fingerprint: String) {
        self.job = job
        self.fingerprint = fingerprint
        let text = Array("\(job)\t\(fingerprint)".utf8CString)
        length = text.count - 1
        bytes = .allocate(capacity: text.count)
        bytes.initialize(from: text, count: text.count)
    }

    deinit {
        bytes.deallocate()
    }

    /// Runs `body` with this thread's crash context set to this job and `phase`: if the process dies
    /// of a fatal signal meanwhile, the journal records it. Costs two thread-local stores.
    @inline(__always)
    func during<Value, Failure: Error>(_ phase: CrashPhase, _ body: () throws(Failure) -> Value) throws(Failure) -> Value {
        try withExtendedLifetime(self) { () throws(Failure) -> Value in try mark.during(phase, body) }
    }

    /// The context's C memory, for a caller that keeps it next to other hot data and holds the
    /// context (or what owns it) meanwhile: an armed fire, whose start must not read more objects.
    var mark: Mark { Mark(bytes: bytes, length: length) }

    struct Mark: @unchecked Sendable {
        // Valid while the context lives.
        let bytes: UnsafeMutablePointer<CChar>
        let length: Int

        @inline(__always)
        func during<Value, Failure: Error>(_ phase: CrashPhase, _ body: () throws(Failure) -> Value) throws(Failure) -> Value {
            var previous: UnsafePointer<CChar>?
            var previousLength = 0
            var previousPhase: Int32 = 0
            shardwork_crash_context_swap(bytes, length, phase.rawValue, &previous, &previousLength, &previousPhase)
            defer { shardwork_crash_context_swap(previous, previousLength, previousPhase, nil, nil, nil) }
            return try body()
        }
    }
}

extension Optional where Wrapped == CrashContext {
    /// ``CrashContext/during(_:_:)`` when there is a context; `body` alone otherwise.
    @inline(__always)
    func during<Value, Failure: Error>(_ phase: CrashPhase, _ body: () throws(Failure) -> Value) throws(Failure) -> Value {
        guard let context = self else { return try body() }
        return try context.during(phase, body)
    }
}

/// The host's memory of the jobs it died for.
///
/// A fatal signal (a segmentation fault, a trap, an abort) while a thread is inside one of a job's
/// provider calls appends one line to the journal, naming the job, its fingerprint (its
/// configuration and the plugin files it uses), the signal and what the call was doing, before the
/// process dies as it would have. At the next start the host reads the journal and refuses that job
/// while its fingerprint is the same: it sets the job aside (the rest of the host runs) and takes it
/// up again once its configuration or a plugin it uses changes. A job that kills its host therefore
/// costs one crash, not a crash loop.
public final class CrashJournal: Sendable {
    /// One crash, as the journal recorded it.
    public struct Entry: Sendable, Equatable {
        public var signal: Int32
        public var phase: CrashPhase?
        public var job: String
        public var fingerprint: String

        /// `Segmentation fault (signal 11)`.
        public var signalDescription: String {
            "\(strsignal(signal).map { String(cString: $0) } ?? "signal") (signal \(signal))"
        }

        /// Why the job is set aside: what killed the host and how to take the job up again.
        public var reason: String {
            "this host died of \(signalDescription) while \(phase?.description ?? "calling one of its providers") "
                + "(crash journal); it refuses the job until the job's configuration or a plugin it uses changes"
        }
    }

    public let path: String
    /// The crashes recorded by earlier runs, oldest first (at most ``keptEntries``).
    public let entries: [Entry]

    /// How many entries the journal keeps.
    static let keptEntries = 200

    private init(path: String, entries: [Entry]) {
        self.path = path
        self.entries = entries
    }

    /// The latest crash recorded for `job` with this fingerprint, if any.
    public func crash(of job: String, fingerprint: String) -> Entry? {
        entries.last { $0.job == job && $0.fingerprint == fingerprint }
    }

    /// Opens the journal at `path` (creating its directory, mode 0700), reads what earlier runs
    /// recorded, keeps the latest entries, and installs the signal handler that writes to it. One
    /// journal serves a process: opening another moves the handler to it.
    public static func open(path: String) throws -> CrashJournal {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let entries = Array(text.split(separator: "\n").compactMap(parse).suffix(keptEntries))
        // Rewritten whole, so that it stays small; then appended to by the handler.
        let kept = entries.map { "crash\t\($0.signal)\t\($0.phase?.rawValue ?? 0)\t\($0.job)\t\($0.fingerprint)\n" }.joined()
        try kept.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSLocalizedDescriptionKey: String(cString: strerror(errno))])
        }
        shardwork_crash_journal_install(fd)
        return CrashJournal(path: path, entries: entries)
    }

    private static func parse(_ line: Substring) -> Entry? {
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0] == "crash", let signal = Int32(fields[1]), let phase = Int32(fields[2]) else { return nil }
        return Entry(signal: signal, phase: CrashPhase(rawValue: phase), job: String(fields[3]), fingerprint: String(fields[4]))
    }
}
