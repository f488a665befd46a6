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
/// the loader's permission checks hold for them.
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
