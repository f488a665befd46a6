import Foundation
import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("Plugin loader")
struct PluginLoaderTests {
    /// Expects the inspection to fail at `checkID` only: every earlier check passed, every later
    /// one skipped, and the failure explained with `phrase`.
    func expectRefused(_ inspection: PluginInspection, at checkID: String, saying phrase: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let ids = inspection.checks.map(\.id)
        guard let index = ids.firstIndex(of: checkID) else {
            Issue.record("no check \(checkID)", sourceLocation: sourceLocation)
            return
        }
        #expect(!inspection.accepted, sourceLocation: sourceLocation)
        #expect(inspection.checks[..<index].allSatisfy { $0.status == .passed },
                "checks before \(checkID): \(inspection.checks[..<index].map { "\($0.id)=\($0.status)" })",
                sourceLocation: sourceLocation)
        #expect(inspection.checks[index].status == .failed, sourceLocation: sourceLocation)
        #expect(inspection.checks[(index + 1)...].allSatisfy { $0.status == .skipped }, sourceLocation: sourceLocation)
        #expect(inspection.reasons.contains { $0.contains(phrase) },
                "reasons: \(inspection.reasons)", sourceLocation: sourceLocation)
    }

    func inspect(_ file: String) -> PluginInspection {
        PluginLoader(logger: CapturedLog().logger()).inspect(file).0
    }

    @Test("a sound C plugin passes every check and shows its descriptor")
    func soundPlugin() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path)
        let log = CapturedLog()
        let (inspection, plugin) = PluginLoader(logger: log.logger()).inspect(file)
        #expect(inspection.accepted, "\(inspection.reasons)")
        let info = try #require(plugin).info
        #expect(info.name == "c-test")
        #expect(info.version == "1.0.0")
        #expect(info.toolchain == "c")
        #expect(info.sdkVersion == nil)
        let descriptor = try #require(inspection.descriptor)
        #expect(descriptor.magic == "0x5348415244574B21")
        #expect(descriptor.abiMajor == 1 && descriptor.abiMinor == 0)
        #expect(descriptor.providers.map(\.name) == ["c-modulo", "c-threads", "c-recorder", "c-listener", "c-echo", "c-countdown", "c-wait", "c-crash"])
        #expect(descriptor.providers.first?.aliases == ["C_MODULO"])
        // The host gave the entry its log function.
        #expect(log.contains("c-test plugin entry called"))
    }

    @Test("a Swift plugin (a built-in) passes every check and reports its toolchain and SDK")
    func swiftPlugin() throws {
        let (inspection, plugin) = PluginLoader(logger: CapturedLog().logger())
            .inspect(try TestPaths.builtInPlugin("ShardworkStandardSharding"))
        #expect(inspection.accepted, "\(inspection.reasons)")
        let info = try #require(plugin).info
        #expect(info.toolchain.hasPrefix("swift-"))
        #expect(info.sdkVersion == PluginBuildInfo.current.sdkVersion)
        #expect(info.toolchain == PluginBuildInfo.current.toolchain)
    }

    struct Variant: Sendable, CustomTestStringConvertible {
        var define: String
        var check: String
        var phrase: String
        var testDescription: String { define }
    }

    static let descriptorVariants: [Variant] = [
        Variant(define: "VARIANT_NO_ENTRY", check: "entry-symbol",
                phrase: "not a Shardwork plugin: it does not define shardwork_plugin_entry"),
        Variant(define: "VARIANT_UNDEFINED_SYMBOL", check: "load",
                phrase: "undefined symbol: shardwork_test_symbol_that_does_not_exist"),
        Variant(define: "VARIANT_NULL_ENTRY", check: "descriptor", phrase: "the entry returned NULL"),
        Variant(define: "VARIANT_BAD_MAGIC", check: "magic", phrase: "bad magic number 0x123456789ABCDEF"),
        Variant(define: "VARIANT_ABI_MAJOR", check: "abi-version",
                phrase: "built for ABI 2.0, but this host speaks ABI 1.0; the major versions differ"),
        Variant(define: "VARIANT_ABI_MINOR", check: "abi-version",
                phrase: "built for ABI 1.1, newer than this host's ABI 1.0"),
        Variant(define: "VARIANT_DESCRIPTOR_SIZE", check: "struct-sizes",
                phrase: "the descriptor is 56 bytes, but ABI 1.0 defines it as 64"),
        Variant(define: "VARIANT_VTABLE_SIZE", check: "struct-sizes",
                phrase: "the function table of sharding strategy 'c-modulo' is 40 bytes, but ABI 1.0 defines it as 32"),
        Variant(define: "VARIANT_SWIFT_TOOLCHAIN", check: "toolchain",
                phrase: "built by swift-5.10.1, but this host was built by \(PluginBuildInfo.current.toolchain)"),
        Variant(define: "VARIANT_NULL_FUNCTION", check: "providers",
                phrase: "sharding strategy 'c-modulo' leaves required functions NULL: shard"),
        Variant(define: "VARIANT_BAD_NAME", check: "providers", phrase: "the name 'bad name!' is not"),
    ]

    @Test("each refusal names the failed check and explains it", arguments: descriptorVariants)
    func refusal(variant: Variant) async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: [variant.define])
        let inspection = inspect(file)
        expectRefused(inspection, at: variant.check, saying: variant.phrase)
        let refusal = PluginLoader(logger: CapturedLog().logger()).load(file)
        guard case .failure(let error) = refusal else {
            Issue.record("\(variant.define) loaded")
            return
        }
        #expect(error.description.hasPrefix("refused plugin \(file): "))
    }

    @Test("a Swift plugin from another toolchain is also told its SDK differs")
    func toolchainAndSDK() async throws {
        let directory = try TemporaryDirectory()
        let inspection = inspect(try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_SWIFT_TOOLCHAIN"]))
        #expect(inspection.reasons.contains { $0.contains("built against ShardworkSDK 0.0.9") })
    }

    // MARK: The file itself

    @Test("a missing file")
    func missingFile() throws {
        expectRefused(inspect("/nonexistent/libnothing.so"), at: "file", saying: "does not exist")
    }

    @Test("a directory named like a plugin")
    func directory() throws {
        let directory = try TemporaryDirectory()
        expectRefused(inspect(try directory.subdirectory("libdir.so")), at: "file", saying: "not a regular file (it is a directory)")
    }

    @Test("a text file is not an ELF file")
    func notELF() throws {
        let directory = try TemporaryDirectory()
        let file = directory.file("libtext.so")
        try "#!/bin/sh\necho hello\n".write(toFile: file, atomically: true, encoding: .utf8)
        expectRefused(inspect(file), at: "elf", saying: "not an ELF file: it starts with \"#!/b\"")
    }

    @Test("an empty file")
    func emptyFile() throws {
        let directory = try TemporaryDirectory()
        let file = directory.file("libempty.so")
        _ = FileManager.default.createFile(atPath: file, contents: Data())
        expectRefused(inspect(file), at: "elf", saying: "the file is empty")
    }

    @Test("a truncated plugin is refused before it is loaded", arguments: [0.5, 0.9, 0.999])
    func truncated(fraction: Double) async throws {
        let directory = try TemporaryDirectory()
        let good = try await CPluginBuilder.testPlugin(in: directory.path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let file = directory.file("libtruncated.so")
        try bytes.prefix(Int(Double(bytes.count) * fraction)).write(to: URL(fileURLWithPath: file))
        expectRefused(inspect(file), at: "elf", saying: "truncated or damaged")
    }

    @Test("a file cut inside the ELF header")
    func truncatedHeader() async throws {
        let directory = try TemporaryDirectory()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: try await CPluginBuilder.testPlugin(in: directory.path)))
        let file = directory.file("libhead.so")
        try bytes.prefix(40).write(to: URL(fileURLWithPath: file))
        expectRefused(inspect(file), at: "elf", saying: "shorter than an ELF header")
    }

    /// A copy of a sound plugin with one header byte changed.
    func patched(_ offset: Int, _ values: [UInt8], in directory: TemporaryDirectory) async throws -> String {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try await CPluginBuilder.testPlugin(in: directory.path))))
        bytes.replaceSubrange(offset..<(offset + values.count), with: values)
        let file = directory.file("libpatched.so")
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    @Test("a plugin built for another machine")
    func wrongMachine() async throws {
        let directory = try TemporaryDirectory()
        expectRefused(inspect(try await patched(18, [183, 0], in: directory)), at: "elf", saying: "built for aarch64, but this host is x86_64")
    }

    @Test("a 32-bit ELF file")
    func thirtyTwoBit() async throws {
        let directory = try TemporaryDirectory()
        expectRefused(inspect(try await patched(4, [1], in: directory)), at: "elf", saying: "a 32-bit ELF file")
    }

    @Test("an object file is not a shared object")
    func objectFile() async throws {
        let directory = try TemporaryDirectory()
        let file = directory.file("libobject.so")
        let outcome = try await Subprocess.run(
            Subprocess.which("cc") ?? "/usr/bin/cc",
            ["-c", "-fPIC", "-I", TestPaths.sdkInclude, "-o", file, TestPaths.fixture("c-plugins/test_plugin.c")])
        #expect(outcome.succeeded, "\(outcome.standardError)")
        expectRefused(inspect(file), at: "elf", saying: "an ELF relocatable object (.o), not a shared object")
    }

    @Test("a plugin writable by every user is a code-injection risk")
    func worldWritableFile() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path)
        chmod(file, 0o757)
        expectRefused(inspect(file), at: "permissions", saying: "the file is writable by every user (mode 757)")
    }

    @Test("a plugin writable by its group")
    func groupWritableFile() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path)
        chmod(file, 0o775)
        expectRefused(inspect(file), at: "permissions", saying: "the file is writable by its group")
    }

    @Test("a plugin in a directory that every user may write to")
    func worldWritableDirectory() async throws {
        let directory = try TemporaryDirectory()
        let plugins = try directory.subdirectory("plugins")
        let file = try await CPluginBuilder.testPlugin(in: plugins)
        chmod(plugins, 0o777)
        expectRefused(inspect(file), at: "permissions", saying: "its directory \(plugins) is writable by every user")
    }

    @Test("a symbolic link to a plugin: the target and both directories are checked")
    func symlink() async throws {
        let directory = try TemporaryDirectory()
        let real = try await CPluginBuilder.testPlugin(in: try directory.subdirectory("real"))
        let links = try directory.subdirectory("links")
        try FileManager.default.createSymbolicLink(atPath: links + "/libc_test.so", withDestinationPath: real)
        #expect(inspect(links + "/libc_test.so").accepted)
        chmod(links, 0o777)
        expectRefused(inspect(links + "/libc_test.so"), at: "permissions", saying: "its directory \(links) is writable by every user")
    }

    // MARK: Many plugins

    @Test("refused plugins never stop the others: a directory of good, bad and non-plugin files")
    func mixedDirectory() async throws {
        let directory = try TemporaryDirectory()
        let plugins = try directory.subdirectory("plugins")
        try await CPluginBuilder.testPlugin(in: plugins, named: "libgood.so")
        try await CPluginBuilder.testPlugin(in: plugins, named: "libbadmagic.so", defines: ["VARIANT_BAD_MAGIC", "NAME_PREFIX=\"m\""])
        try await CPluginBuilder.testPlugin(in: plugins, named: "libunresolved.so", defines: ["VARIANT_UNDEFINED_SYMBOL", "NAME_PREFIX=\"u\""])
        try await CPluginBuilder.testPlugin(in: plugins, named: "libhelper.so", defines: ["VARIANT_NO_ENTRY"])
        try "not a plugin".write(toFile: plugins + "/libjunk.so", atomically: true, encoding: .utf8)
        try "ignored: not named *.so".write(toFile: plugins + "/README.txt", atomically: true, encoding: .utf8)

        let registry = ProviderRegistry()
        let log = CapturedLog()
        let report = PluginLoader(logger: log.logger())
            .loadAll(PluginSearchPath(directories: [plugins], includeBuiltIn: false), into: registry)
        #expect(report.loaded.map(\.file) == [plugins + "/libgood.so"])
        #expect(report.refused.map(\.file).sorted() == [plugins + "/libbadmagic.so", plugins + "/libjunk.so", plugins + "/libunresolved.so"])
        #expect(report.unusableDirectories.isEmpty)
        // A library without the entry is left alone, quietly.
        #expect(!report.refused.contains { $0.file.hasSuffix("libhelper.so") })
        #expect(try registry.resolve(.shardingStrategy, "c-modulo").plugin.file == plugins + "/libgood.so")
        #expect(log.contains("error: refused a plugin file=\(plugins)/libbadmagic.so reasons=bad magic number"), "\(log.messages)")
    }

    @Test("the built-in directory is the running binary's, and holds the standard plugins")
    func builtInDirectory() throws {
        #expect(PluginSearchPath.builtInDirectory == canonicalPath(TestPaths.buildDirectory))
        let registry = try TestPlugins.standardRegistry()
        #expect(registry.plugins.map(\.name).sorted() == BuiltInPlugins.pluginNames)
    }

    @Test("a configured directory that does not exist is reported")
    func missingDirectory() throws {
        let report = PluginLoader(logger: CapturedLog().logger())
            .loadAll(PluginSearchPath(directories: ["/nonexistent/plugins"], includeBuiltIn: false), into: ProviderRegistry())
        #expect(report.unusableDirectories.count == 1)
        #expect(report.unusableDirectories.first?.hasPrefix("/nonexistent/plugins: No such file or directory") == true)
    }

    @Test("an explicitly listed file without the entry is refused, not skipped")
    func listedLibrary() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_NO_ENTRY"])
        let report = PluginLoader(logger: CapturedLog().logger())
            .loadAll(PluginSearchPath(files: [file], includeBuiltIn: false), into: ProviderRegistry())
        #expect(report.refused.map(\.file) == [file])
        #expect(report.refused.first?.reasons.first?.contains("not a Shardwork plugin") == true)
    }

    // MARK: Trial loading in a separate process

    @Test("a plugin that crashes while loading is refused by the trial process; the host lives")
    func crashingPlugin() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_CRASH"])
        let loader = PluginLoader(logger: CapturedLog().logger(), preflight: .shardwork(executable: try TestPaths.shardworkBinary))
        let (inspection, plugin) = loader.inspect(file)
        #expect(plugin == nil)
        expectRefused(inspection, at: "load", saying: "it crashed (Segmentation fault, signal 11) while a separate trial process loaded it")
    }

    @Test("a plugin that hangs while loading is killed after the trial timeout")
    func hangingPlugin() async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: ["VARIANT_HANG"])
        var preflight = PluginPreflight.shardwork(executable: try TestPaths.shardworkBinary)
        preflight.timeout = .seconds(1)
        let (inspection, _) = PluginLoader(logger: CapturedLog().logger(), preflight: preflight).inspect(file)
        expectRefused(inspection, at: "load", saying: "did not finish within 1.0 seconds")
    }

    @Test("a plugin that leaves a process behind while loading (forked, or a daemon in a session of its own) does not hold the trial; nothing it started outlives it",
          .timeLimit(.minutes(3)), arguments: ["VARIANT_FORK_ON_LOAD", "VARIANT_DAEMON_ON_LOAD"])
    func forkingPlugin(variant: String) async throws {
        let directory = try TemporaryDirectory()
        let file = try await CPluginBuilder.testPlugin(in: directory.path, defines: [variant])
        let loader = PluginLoader(logger: CapturedLog().logger(), preflight: .shardwork(executable: try TestPaths.shardworkBinary))
        // The fork sleeps ten minutes holding the trial's output; the trial ends without waiting for it.
        let (inspection, plugin) = try await onDedicatedThread { loader.inspect(file) }
        #expect(inspection.accepted && plugin != nil, "\(inspection)")
        let pids = try String(contentsOfFile: file + ".pids", encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(!pids.isEmpty)
        for pid in pids {
            #expect(await eventually { !ChildProcessTests.alive(pid) }, "process \(pid), left by the plugin, outlived the trial")
        }
    }

    @Test("with a trial process, a sound plugin loads and a refused one keeps the child's reasons")
    func preflightVerdicts() async throws {
        let directory = try TemporaryDirectory()
        let loader = PluginLoader(logger: CapturedLog().logger(), preflight: .shardwork(executable: try TestPaths.shardworkBinary))
        let (good, plugin) = loader.inspect(try await CPluginBuilder.testPlugin(in: directory.path))
        #expect(good.accepted)
        #expect(plugin?.info.name == "c-test")
        let bad = try await CPluginBuilder.testPlugin(in: directory.path, named: "libbad.so", defines: ["VARIANT_ABI_MAJOR"])
        let (refused, _) = loader.inspect(bad)
        expectRefused(refused, at: "abi-version", saying: "built for ABI 2.0")
        #expect(refused.file == bad)
    }
}
