#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// File-system facts about a plugin file, read before anything is loaded.
enum PluginFile {
    /// The largest file the loader reads (plugins are a few MB; anything this big is not one).
    static let maximumSize = 512 * 1024 * 1024

    /// The canonical path (symlinks resolved), or `nil` when the file does not exist.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func fileName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Reads a whole regular file; the error says why it cannot.
    static func read(_ path: String) -> Result<[UInt8], FileProblem> {
        var info = stat()
        guard stat(path, &info) == 0 else { return .failure(FileProblem("cannot read its status: \(errorText())")) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            return .failure(FileProblem("not a regular file (it is \(fileTypeName(info.st_mode)))"))
        }
        guard Int(info.st_size) <= maximumSize else {
            return .failure(FileProblem("\(info.st_size) bytes, larger than any plugin (limit \(maximumSize) bytes)"))
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(FileProblem("cannot open it: \(errorText())")) }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress! + filled, buffer.count - filled)
            }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(FileProblem("cannot read it: \(errorText())"))
            }
            if count == 0 { break }
            filled += count
        }
        return .success(Array(bytes.prefix(filled)))
    }

    struct FileProblem: Error {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Whether someone other than the host's user (or root) could change the code the host is about
    /// to run: the file, or a directory whose entries decide which file that is.
    static func securityProblems(file: String, directories: [String]) -> [String] {
        var problems: [String] = []
        problems += writableByOthers(file, what: "the file")
        var seen = Set<String>()
        for directory in directories where seen.insert(directory).inserted {
            problems += writableByOthers(directory, what: "its directory \(directory)")
        }
        return problems
    }

    private static func writableByOthers(_ path: String, what: String) -> [String] {
        var info = stat()
        guard stat(path, &info) == 0 else { return ["cannot read the status of \(path): \(errorText())"] }
        var problems: [String] = []
        let mode = String(info.st_mode & 0o7777, radix: 8)
        if info.st_mode & S_IWOTH != 0 {
            problems.append(
                "\(what) is writable by every user (mode \(mode)), so anyone could put code into this host; fix: chmod o-w \(path)")
        }
        if info.st_mode & S_IWGRP != 0 {
            problems.append(
                "\(what) is writable by its group (gid \(info.st_gid), mode \(mode)), so other users could put code into this host; fix: chmod g-w \(path)")
        }
        if info.st_uid != 0 && info.st_uid != geteuid() {
            problems.append(
                "\(what) belongs to user \(info.st_uid), neither root nor this host's user (\(geteuid())), who could change it; fix: chown it")
        }
        return problems
    }

    private static func fileTypeName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR, S_IFBLK: "a device"
        default: "not a regular file"
        }
    }

    static func errorText() -> String {
        String(cString: strerror(errno))
    }
}
