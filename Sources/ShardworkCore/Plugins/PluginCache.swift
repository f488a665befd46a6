// `timespec` and `stat`: a release build finds them through the support module's header.
import CShardworkSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The content-named copies that hot-loads load.
///
/// `dlopen` of a path that is already loaded returns the old image, even when the file was replaced
/// (and overwriting a loaded file in place crashes the process), so a hot-load never loads the file
/// it is given: it copies its bytes to `{directory}/{stem}-{first 16 hex digits of SHA-256}.so`
/// and loads that. The directory is made 0700 and every copy 0755, owned by the host's user, so that
/// the loader's permission checks hold for them. Copies that no process maps any more are removed
/// once they are old (``removeUnused(minimumAge:)``).
struct PluginCache: Sendable {
    let directory: String

    struct Failure: Error {
        let description: String
    }

    /// The cache path for `file`'s content.
    func path(for file: String, sha256: String) -> String {
        var stem = PluginFile.fileName(of: file)
        if stem.hasSuffix(".so") { stem.removeLast(3) }
        if stem.isEmpty { stem = "plugin" }
        return directory + "/" + stem + "-" + String(sha256.prefix(16)) + ".so"
    }

    /// Writes `bytes` at their cache path, unless a file with that content is there already
    /// (written atomically: a temporary file renamed into place), and returns the path.
    func store(_ bytes: [UInt8], of file: String, sha256: String) throws(Failure) -> String {
        try makeDirectory()
        let target = path(for: file, sha256: sha256)
        if case .success(let existing) = PluginFile.read(target), PluginDigest.sha256(existing) == sha256 {
            // Touched: a copy in use again is young again, and no cleanup takes it meanwhile.
            utimensat(AT_FDCWD, target, nil, 0)
            return target
        }
        let temporary = directory + "/." + PluginFile.fileName(of: target) + ".\(getpid()).tmp"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Failure(description: "cannot create \(temporary): \(PluginFile.errorText())") }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in write(descriptor, buffer.baseAddress! + written, buffer.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                let problem = PluginFile.errorText()
                close(descriptor)
                unlink(temporary)
                throw Failure(description: "cannot write \(temporary): \(problem)")
            }
            written += count
        }
        // The mode is set explicitly: the umask must not decide whether the loader accepts it.
        guard fchmod(descriptor, 0o755) == 0, fsync(descriptor) == 0 else {
            let problem = PluginFile.errorText()
            close(descriptor)
            unlink(temporary)
            throw Failure(description: "cannot finish \(temporary): \(problem)")
        }
        close(descriptor)
        guard rename(temporary, target) == 0 else {
            let problem = PluginFile.errorText()
            unlink(temporary)
            throw Failure(description: "cannot rename \(temporary) to \(target): \(problem)")
        }
        return target
    }

    /// Removes the copies that no process has mapped (no host of this user runs them, nor any of
    /// their workers) and that were stored or used last more than `minimumAge` seconds ago, and
    /// temporary files left as old by a copy that did not finish. Other files are left alone.
    /// Returns the paths removed.
    ///
    /// A host that needs a removed copy again writes it again. The age keeps a copy that a host
    /// has just stored, and is about to load, from being taken.
    func removeUnused(minimumAge: Int = 600) -> [String] {
        guard let stream = opendir(directory) else { return [] }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if Self.isCopy(name) || Self.isTemporary(name), isOld(directory + "/" + name, minimumAge: minimumAge) {
                names.append(name)
            }
        }
        closedir(stream)
        // Only old copies make it worth reading every process's maps.
        guard !names.isEmpty else { return [] }
        let mapped = Self.mappedFiles()
        let resolved = Self.resolve(directory)
        var removed: [String] = []
        for name in names.sorted() {
            let path = directory + "/" + name
            // Checked again right before the unlink: a host that touched it meanwhile keeps it.
            guard isOld(path, minimumAge: minimumAge), !mapped.contains(resolved + "/" + name), !mapped.contains(path),
                  isOld(path, minimumAge: minimumAge), unlink(path) == 0
            else { continue }
            removed.append(path)
        }
        return removed
    }

    /// `{stem}-{16 hex digits}.so`, the name ``path(for:sha256:)`` gives.
    static func isCopy(_ name: String) -> Bool {
        guard name.hasSuffix(".so") else { return false }
        let base = name.dropLast(3)
        guard let dash = base.lastIndex(of: "-") else { return false }
        let digest = base[base.index(after: dash)...]
        return digest.count == 16 && digest.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    /// `.{copy name}.{pid}.tmp`, the temporary file ``store(_:of:sha256:)`` writes.
    static func isTemporary(_ name: String) -> Bool {
        name.hasPrefix(".") && name.hasSuffix(".tmp")
    }

    private func isOld(_ path: String, minimumAge: Int) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return false }
        return Int(time(nil)) - Int(info.st_mtim.tv_sec) >= minimumAge
    }

    /// Every file mapped by a process this user may look at, from `/proc/{pid}/maps`.
    private static func mappedFiles() -> Set<String> {
        var files = Set<String>()
        guard let proc = opendir("/proc") else { return files }
        defer { closedir(proc) }
        while let entry = readdir(proc) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard !name.isEmpty, name.allSatisfy(\.isNumber), let bytes = readStream("/proc/\(name)/maps") else { continue }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                // address perms offset dev inode path: the path starts at the first "/".
                guard let slash = line.firstIndex(of: "/") else { continue }
                var path = String(line[slash...])
                if path.hasSuffix(" (deleted)") { path.removeLast(10) }
                files.insert(path)
            }
        }
        return files
    }

    /// Reads a file to its end, whatever size it reports (`/proc` files report none); `nil` when it
    /// cannot be opened (a process of another user, or one that has just ended).
    private static func readStream(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { return bytes }
            bytes += chunk.prefix(count)
        }
    }

    /// The directory's real path (maps name files by theirs).
    private static func resolve(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }

    /// Creates the directory (and its parents) when missing; a new directory is 0700.
    private func makeDirectory() throws(Failure) {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw Failure(description: "cannot create the plugin cache directory \(prefix): \(PluginFile.errorText())")
            }
        }
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw Failure(description: "the plugin cache \(directory) is not a directory")
        }
    }
}
