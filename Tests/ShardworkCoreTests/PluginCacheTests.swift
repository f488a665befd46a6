import Foundation
@testable import ShardworkCore
import ShardworkTestSupport
import Testing

@Suite("Plugin cache")
struct PluginCacheTests {
    /// Stores `fill` bytes under a made-up digest and returns the copy's path.
    static func store(_ cache: PluginCache, _ stem: String, digest: Character, fill: UInt8) throws -> String {
        try cache.store(Array(repeating: fill, count: 4096), of: "/plugins/\(stem).so", sha256: String(repeating: digest, count: 64))
    }

    /// Sets a file's modification time `seconds` into the past.
    static func age(_ path: String, by seconds: Int) {
        let then = timespec(tv_sec: time(nil) - seconds, tv_nsec: 0)
        let times = [then, then]
        _ = times.withUnsafeBufferPointer { utimensat(AT_FDCWD, path, $0.baseAddress, 0) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    @Test("cleaning removes the cache's own copies that no process maps and that are old; mapped, recent and other files stay")
    func removeUnused() throws {
        let directory = try TemporaryDirectory()
        let cache = PluginCache(directory: directory.path + "/cache")
        let unused = try Self.store(cache, "unused", digest: "a", fill: 1)
        let mapped = try Self.store(cache, "mapped", digest: "b", fill: 2)
        let recent = try Self.store(cache, "recent", digest: "c", fill: 3)
        let reused = try Self.store(cache, "reused", digest: "d", fill: 4)
        let leftover = cache.directory + "/.unused-aaaaaaaaaaaaaaaa.so.4242.tmp"
        let other = cache.directory + "/notes.txt"
        #expect(FileManager.default.createFile(atPath: leftover, contents: Data([0])))
        #expect(FileManager.default.createFile(atPath: other, contents: Data([0])))
        for path in [unused, mapped, reused, leftover, other] { Self.age(path, by: 7200) }
        #expect(PluginCache.isCopy("unused-aaaaaaaaaaaaaaaa.so") && !PluginCache.isCopy("notes.txt"))

        // A running process maps one (as a host maps what it loaded); one is stored again, which
        // makes it young again.
        let descriptor = open(mapped, O_RDONLY)
        #expect(descriptor >= 0)
        let mapping = mmap(nil, 4096, PROT_READ, MAP_PRIVATE, descriptor, 0)
        #expect(mapping != MAP_FAILED)
        defer {
            munmap(mapping, 4096)
            close(descriptor)
        }
        #expect(try Self.store(cache, "reused", digest: "d", fill: 4) == reused)

        let removed = cache.removeUnused(minimumAge: 60)
        #expect(Set(removed) == [unused, leftover])
        #expect(!Self.exists(unused) && !Self.exists(leftover))
        #expect(Self.exists(mapped) && Self.exists(recent) && Self.exists(reused) && Self.exists(other))
        // Nothing left to remove the second time.
        #expect(cache.removeUnused(minimumAge: 60).isEmpty)
    }
}
