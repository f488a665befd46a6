/// The idioms coordination code needs over and over: create unless present, delete if present,
/// read if present, create-or-replace, create with ancestors.
extension RegistryCenter {
    /// Creates a node; returns `false` (and changes nothing) when it exists already.
    @discardableResult
    public func createIfAbsent(_ path: String, data: [UInt8] = [], mode: CreateMode = .persistent) async throws(RegistryError) -> Bool {
        do {
            _ = try await create(path, data: data, mode: mode)
            return true
        } catch {
            if error.code == .nodeExists { return false }
            throw error
        }
    }

    /// Deletes a node; returns `false` when it was not there.
    @discardableResult
    public func deleteIfPresent(_ path: String) async throws(RegistryError) -> Bool {
        do {
            try await delete(path, version: nil)
            return true
        } catch {
            if error.code == .noNode { return false }
            throw error
        }
    }

    /// A node's children, or none when the node does not exist.
    public func childrenIfPresent(_ path: String) async throws(RegistryError) -> [String] {
        do {
            return try await children(path, watch: nil)
        } catch {
            if error.code == .noNode { return [] }
            throw error
        }
    }

    /// A node's data as text and its stat, or `nil` when it does not exist.
    public func textIfPresent(_ path: String) async throws(RegistryError) -> (text: String, stat: NodeStat)? {
        do {
            let (bytes, stat) = try await data(path, watch: nil)
            return (String(decoding: bytes, as: UTF8.self), stat)
        } catch {
            if error.code == .noNode { return nil }
            throw error
        }
    }

    /// Creates a persistent node holding `value`, or replaces the value of an existing one.
    public func put(_ path: String, _ value: String) async throws(RegistryError) {
        let bytes = [UInt8](utf8: value)
        if try await createIfAbsent(path, data: bytes) { return }
        try await setData(path, data: bytes, version: nil)
    }

    /// Creates a persistent, empty node and any missing ancestors.
    public func ensurePath(_ path: String) async throws(RegistryError) {
        var prefix = ""
        for segment in path.split(separator: "/") {
            prefix += "/" + segment
            try await createIfAbsent(prefix)
        }
    }

    /// Deletes a node and everything under it; nothing happens when it does not exist.
    public func deleteRecursively(_ path: String) async throws(RegistryError) {
        for child in try await childrenIfPresent(path) {
            try await deleteRecursively(path == "/" ? "/" + child : path + "/" + child)
        }
        try await deleteIfPresent(path)
    }
}
