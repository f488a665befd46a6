import CShardworkPlugin
import ShardworkSDK

/// The host's side of `shardwork_plugin.h`: the version it speaks, the struct sizes each minor
/// version defines, and the checks of a descriptor against them.
enum PluginABI {
    static let entrySymbol = SHARDWORK_PLUGIN_ENTRY_SYMBOL
    static let magic: UInt64 = SHARDWORK_PLUGIN_MAGIC
    static let major = UInt16(SHARDWORK_ABI_MAJOR)
    static let minor = UInt16(SHARDWORK_ABI_MINOR)

    /// The host's own build: its toolchain and SDK, computed exactly as a Swift plugin computes its own.
    static let hostBuild = PluginBuildInfo.current

    /// Struct sizes per minor version of the current major. A new minor appends an entry.
    struct Sizes: Equatable {
        var descriptor: Int
        var provider: Int
        var vtables: [ProviderKind: Int]
    }

    static let sizesByMinor: [UInt16: Sizes] = [
        0: Sizes(
            descriptor: MemoryLayout<shardwork_plugin_descriptor>.size,
            provider: MemoryLayout<shardwork_provider>.size,
            vtables: [
                .jobType: MemoryLayout<shardwork_job_type_vtable>.size,
                .shardingStrategy: MemoryLayout<shardwork_sharding_strategy_vtable>.size,
                .executorStrategy: MemoryLayout<shardwork_executor_strategy_vtable>.size,
                .errorHandler: MemoryLayout<shardwork_error_handler_vtable>.size,
                .jobListener: MemoryLayout<shardwork_job_listener_vtable>.size,
            ]
        ),
    ]

    static var version: String { "\(major).\(minor)" }

    /// One provider as read from a checked descriptor.
    struct ProviderRecord {
        var kind: ProviderKind
        var name: String
        var aliases: [String]
        var table: ProviderTable
    }

    /// Runs the descriptor checks (magic through providers) on what the entry returned, recording
    /// each verdict in `inspection`. Returns the providers when every check passed.
    ///
    /// Later checks read fields whose position depends on earlier ones, so the first failure stops
    /// the reading: a descriptor with a bad magic number is not read any further.
    static func check(
        descriptor raw: UnsafeRawPointer, into inspection: inout PluginInspection
    ) -> [ProviderRecord]? {
        let magic = raw.loadUnaligned(as: UInt64.self)
        let abiMajor = raw.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
        let abiMinor = raw.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        let descriptorSize = raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        var summary = PluginInspection.Descriptor(
            magic: "0x" + String(magic, radix: 16, uppercase: true), abiMajor: Int(abiMajor), abiMinor: Int(abiMinor),
            descriptorSize: Int(descriptorSize), providerSize: 0, providers: [])
        defer { inspection.descriptor = summary }

        guard magic == Self.magic else {
            inspection.fail("magic", [
                "bad magic number \(summary.magic), expected 0x\(String(Self.magic, radix: 16, uppercase: true)) "
                    + "(\"SHARDWK!\"): the entry did not return a Shardwork plugin descriptor",
            ])
            return nil
        }
        inspection.pass("magic")

        guard abiMajor == major else {
            inspection.fail("abi-version", [
                "built for ABI \(abiMajor).\(abiMinor), but this host speaks ABI \(version); "
                    + "the major versions differ, so rebuild the plugin against this host's shardwork_plugin.h",
            ])
            return nil
        }
        guard abiMinor <= minor, let expected = sizesByMinor[abiMinor] else {
            inspection.fail("abi-version", [
                "built for ABI \(abiMajor).\(abiMinor), newer than this host's ABI \(version); "
                    + "upgrade the host or rebuild the plugin against this host's shardwork_plugin.h",
            ])
            return nil
        }
        inspection.pass("abi-version", ["ABI \(abiMajor).\(abiMinor) (host \(version))"])

        let descriptor = raw.assumingMemoryBound(to: shardwork_plugin_descriptor.self).pointee
        summary.providerSize = Int(descriptor.provider_size)
        var sizeProblems: [String] = []
        if Int(descriptorSize) != expected.descriptor {
            sizeProblems.append(
                "the descriptor is \(descriptorSize) bytes, but ABI \(abiMajor).\(abiMinor) defines it as \(expected.descriptor)")
        }
        if Int(descriptor.provider_size) != expected.provider {
            sizeProblems.append(
                "a provider entry is \(descriptor.provider_size) bytes, but ABI \(abiMajor).\(abiMinor) defines it as \(expected.provider)")
        }
        guard sizeProblems.isEmpty else {
            inspection.fail("struct-sizes", sizeProblems + ["the plugin was compiled against a different shardwork_plugin.h"])
            return nil
        }

        summary.name = descriptor.name.map { String(cString: $0) }
        summary.version = descriptor.version.map { String(cString: $0) }
        summary.toolchain = descriptor.toolchain.map { String(cString: $0) }
        summary.sdkVersion = descriptor.sdk_version.map { String(cString: $0) }

        // Provider entries: read what they claim, then check each vtable's size.
        var records: [ProviderRecord] = []
        var providerProblems: [String] = []
        let count = Int(descriptor.provider_count)
        if count > 0 && descriptor.providers == nil {
            providerProblems.append("the descriptor lists \(count) providers but its provider table is NULL")
        } else if count > 4096 {
            providerProblems.append("the descriptor lists \(count) providers; at most 4096 are allowed")
        } else if let providers = descriptor.providers {
            for index in 0..<count {
                let entry = providers[index]
                let name = entry.name.map { String(cString: $0) } ?? ""
                var aliases: [String] = []
                if entry.alias_count > 256 {
                    providerProblems.append("provider '\(name)' lists \(entry.alias_count) aliases; at most 256 are allowed")
                } else if entry.alias_count > 0, let aliasTable = entry.aliases {
                    aliases = (0..<Int(entry.alias_count)).map { aliasTable[$0].map { String(cString: $0) } ?? "" }
                } else if entry.alias_count > 0 {
                    providerProblems.append("provider '\(name)' lists \(entry.alias_count) aliases but its alias table is NULL")
                }
                guard let kind = ProviderKind(rawValue: entry.kind) else {
                    summary.providers.append(.init(kind: "unknown kind \(entry.kind)", name: name, aliases: aliases))
                    providerProblems.append(
                        "provider '\(name)' has kind \(entry.kind), which ABI \(version) does not define (1 to 5)")
                    continue
                }
                summary.providers.append(.init(kind: kind.description, name: name, aliases: aliases))
                guard let vtable = entry.vtable else {
                    providerProblems.append("\(kind) '\(name)' has no function table")
                    continue
                }
                let vtableSize = Int(vtable.loadUnaligned(as: UInt32.self))
                let expectedSize = expected.vtables[kind] ?? 0
                if vtableSize != expectedSize {
                    sizeProblems.append(
                        "the function table of \(kind) '\(name)' is \(vtableSize) bytes, "
                            + "but ABI \(abiMajor).\(abiMinor) defines it as \(expectedSize)")
                    continue
                }
                records.append(ProviderRecord(
                    kind: kind, name: name, aliases: aliases,
                    table: ProviderTable(vtable: vtable, context: entry.context, release: entry.release)))
            }
        }
        guard sizeProblems.isEmpty else {
            inspection.fail("struct-sizes", sizeProblems + ["the plugin was compiled against a different shardwork_plugin.h"])
            return nil
        }
        inspection.pass("struct-sizes", [
            "descriptor \(descriptorSize) bytes, provider \(descriptor.provider_size) bytes, every function table as the host expects",
        ])

        let toolchainProblems = checkToolchain(summary.toolchain, sdkVersion: summary.sdkVersion)
        guard toolchainProblems.isEmpty else {
            inspection.fail("toolchain", toolchainProblems)
            return nil
        }
        inspection.pass("toolchain", [summary.toolchain.map { $0 == "c" ? "c (speaks the C ABI only)" : $0 } ?? ""])

        providerProblems += checkMetadata(name: summary.name, version: summary.version)
        providerProblems += records.flatMap(checkFunctions)
        providerProblems += duplicateNames(records)
        guard providerProblems.isEmpty else {
            inspection.fail("providers", providerProblems)
            return nil
        }
        inspection.pass("providers", ["\(records.count) provider\(records.count == 1 ? "" : "s")"])
        return records
    }

    /// A C plugin may be built by any compiler. A Swift plugin binds to the host's Swift runtime and
    /// SDK, and Swift has no stable ABI on Linux: it must come from the same toolchain and SDK.
    static func checkToolchain(_ toolchain: String?, sdkVersion: String?) -> [String] {
        guard let toolchain, !toolchain.isEmpty else {
            return ["the descriptor names no toolchain; it must be \"c\" or the Swift toolchain that built the plugin"]
        }
        if toolchain == SHARDWORK_TOOLCHAIN_C { return [] }
        var problems: [String] = []
        if toolchain != hostBuild.toolchain {
            problems.append(
                "built by \(toolchain), but this host was built by \(hostBuild.toolchain); Swift has no stable ABI on Linux, "
                    + "so rebuild the plugin with the host's toolchain (or write it against the C header)")
        }
        if sdkVersion != hostBuild.sdkVersion {
            problems.append(
                "built against ShardworkSDK \(sdkVersion ?? "(none)"), but this host carries ShardworkSDK \(hostBuild.sdkVersion); "
                    + "rebuild the plugin against the host's SDK")
        }
        return problems
    }

    /// Names are what job configurations refer to: keep them to a safe, printable alphabet.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 64 else { return false }
        let isAlphanumeric: (Unicode.Scalar) -> Bool = { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)) }
        return isAlphanumeric(first) && name.unicodeScalars.allSatisfy { isAlphanumeric($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    static let nameRule = "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"

    private static func checkMetadata(name: String?, version: String?) -> [String] {
        var problems: [String] = []
        if let name {
            if !isValidName(name) { problems.append("the plugin name '\(name)' is not \(nameRule)") }
        } else {
            problems.append("the descriptor has no plugin name")
        }
        if let version {
            if version.isEmpty || version.utf8.count > 64 { problems.append("the plugin version must be 1 to 64 characters") }
        } else {
            problems.append("the descriptor has no plugin version")
        }
        return problems
    }

    private static func checkFunctions(_ record: ProviderRecord) -> [String] {
        var problems: [String] = []
        let label = "\(record.kind) '\(record.name)'"
        for name in [record.name] + record.aliases where !isValidName(name) {
            problems.append("\(label): the name '\(name)' is not \(nameRule)")
        }
        var missing: [String] = []
        let vtable = record.table.vtable
        switch record.kind {
        case .jobType:
            let table = vtable.assumingMemoryBound(to: shardwork_job_type_vtable.self).pointee
            if table.create == nil { missing.append("create") }
            if table.destroy == nil { missing.append("destroy") }
            switch table.shape {
            case UInt32(SHARDWORK_JOB_SHAPE_SIMPLE):
                if table.execute == nil { missing.append("execute") }
            case UInt32(SHARDWORK_JOB_SHAPE_DATAFLOW):
                if table.fetch == nil { missing.append("fetch") }
                if table.process == nil { missing.append("process") }
                if table.release_batch == nil { missing.append("release_batch") }
            default:
                problems.append("\(label) has shape \(table.shape); it must be 1 (simple) or 2 (dataflow)")
            }
        case .shardingStrategy:
            let table = vtable.assumingMemoryBound(to: shardwork_sharding_strategy_vtable.self).pointee
            if table.create == nil { missing.append("create") }
            if table.destroy == nil { missing.append("destroy") }
            if table.shard == nil { missing.append("shard") }
        case .executorStrategy:
            let table = vtable.assumingMemoryBound(to: shardwork_executor_strategy_vtable.self).pointee
            if table.create == nil { missing.append("create") }
            if table.destroy == nil { missing.append("destroy") }
            if table.thread_count == nil { missing.append("thread_count") }
        case .errorHandler:
            let table = vtable.assumingMemoryBound(to: shardwork_error_handler_vtable.self).pointee
            if table.create == nil { missing.append("create") }
            if table.destroy == nil { missing.append("destroy") }
            if table.handle == nil { missing.append("handle") }
        case .jobListener:
            let table = vtable.assumingMemoryBound(to: shardwork_job_listener_vtable.self).pointee
            if table.create == nil { missing.append("create") }
            if table.destroy == nil { missing.append("destroy") }
            if table.order == nil { missing.append("order") }
            if table.before_fire == nil { missing.append("before_fire") }
            if table.after_fire == nil { missing.append("after_fire") }
        }
        if !missing.isEmpty {
            problems.append("\(label) leaves required functions NULL: \(missing.joined(separator: ", "))")
        }
        return problems
    }

    private static func duplicateNames(_ records: [ProviderRecord]) -> [String] {
        var owners: [ProviderKind: [String: Int]] = [:]
        var problems: [String] = []
        for (index, record) in records.enumerated() {
            for name in [record.name] + record.aliases {
                let key = name.lowercased()
                // A provider may repeat its own name in another case (`log` and `LOG`); two
                // providers of one kind may not share a name.
                if let owner = owners[record.kind]?[key], owner != index {
                    problems.append(
                        "the plugin offers the \(record.kind) name '\(name)' twice: on '\(records[owner].name)' and on '\(record.name)'")
                } else {
                    owners[record.kind, default: [:]][key] = index
                }
            }
        }
        return problems
    }
}

/// A provider's C function table and context. The pointers lead into a plugin image that is never
/// unloaded and are not written after loading, so sharing them between threads is safe.
struct ProviderTable: @unchecked Sendable {
    let vtable: UnsafeRawPointer
    let context: UnsafeMutableRawPointer?
    let release: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?
}
