import ShardworkCore
import ShardworkSDK
import ShardworkTestSupport
import Testing

@Suite("SPI registry")
struct ProviderRegistryTests {
    @Test("ElasticJob's type names are aliases, matched without regard to case", arguments: [
        (ProviderKind.shardingStrategy, "AVG_ALLOCATION", "average"),
        (.shardingStrategy, "avg_allocation", "average"),
        (.shardingStrategy, "Average", "average"),
        (.shardingStrategy, "ODEVITY", "odd-even"),
        (.shardingStrategy, "odevity", "odd-even"),
        (.shardingStrategy, "ROUND_ROBIN", "round-robin"),
        (.shardingStrategy, "Round-Robin", "round-robin"),
        (.executorStrategy, "CPU", "cpu"),
        (.executorStrategy, "SINGLE_THREAD", "single-thread"),
        (.executorStrategy, "Fixed", "fixed"),
        (.errorHandler, "LOG", "log"),
        (.errorHandler, "THROW", "throw"),
        (.errorHandler, "Ignore", "ignore"),
    ])
    func aliases(kind: ProviderKind, requested: String, expected: String) throws {
        let registry = try TestPlugins.standardRegistry()
        #expect(try registry.resolve(kind, requested).name == expected)
    }

    @Test("no name selects ElasticJob's defaults: average, cpu, log")
    func defaults() throws {
        let registry = try TestPlugins.standardRegistry()
        #expect(try registry.resolve(.shardingStrategy, nil).name == "average")
        #expect(try registry.resolve(.executorStrategy, "").name == "cpu")
        #expect(try registry.resolve(.errorHandler, "  ").name == "log")
        #expect(ProviderRegistry.defaultNames == [.shardingStrategy: "average", .executorStrategy: "cpu", .errorHandler: "log"])
    }

    @Test("job types have no default")
    func noDefaultJobType() throws {
        let registry = try TestPlugins.standardRegistry()
        #expect {
            try registry.resolve(.jobType, nil)
        } throws: { error in
            "\(error)".hasPrefix("no job type is named and job types have no default")
        }
    }

    @Test("an unknown name lists the names registered for that kind, and suggests the nearest")
    func unknownName() throws {
        let registry = try TestPlugins.standardRegistry()
        do {
            _ = try registry.resolve(.shardingStrategy, "avrage")
            Issue.record("resolved an unknown name")
        } catch {
            #expect(error.requested == "avrage")
            #expect(error.suggestion == "average")
            #expect(error.description == "unknown sharding strategy 'avrage'; did you mean 'average'?; registered sharding strategies: "
                + "average (AVG_ALLOCATION), odd-even (ODEVITY), round-robin (ROUND_ROBIN)")
        }
        do {
            _ = try registry.resolve(.errorHandler, "pagerduty")
            Issue.record("resolved an unregistered handler")
        } catch {
            #expect(error.suggestion == nil)
            #expect(error.description.contains("registered error handlers: "))
            #expect(error.description.contains("ignore (IGNORE), log (LOG), throw (THROW)"))
        }
    }

    @Test("an unknown name of a kind nobody provides says so")
    func nothingRegistered() throws {
        let registry = ProviderRegistry()
        #expect {
            try registry.resolve(.jobListener, "audit")
        } throws: { error in
            "\(error)".contains("no job listener is registered")
        }
    }

    @Test("ElasticJob's names written with '-' for '_' are suggested")
    func suggestionAcrossSeparators() {
        #expect(NameSuggestion.nearest("round_robin", among: ["average", "round-robin"]) == "round-robin")
        #expect(NameSuggestion.nearest("zzz", among: ["average"]) == nil)
    }

    @Test("two plugins offering one name: the second is refused, naming both files")
    func duplicateNames() async throws {
        let directory = try TemporaryDirectory()
        let first = try await CPluginBuilder.testPlugin(in: directory.path, named: "libfirst.so", defines: ["PLUGIN_NAME=\"first\""])
        let second = try await CPluginBuilder.testPlugin(in: directory.path, named: "libsecond.so", defines: ["PLUGIN_NAME=\"second\""])
        let registry = ProviderRegistry()
        try TestPlugins.load(first, into: registry)
        do {
            try TestPlugins.load(second, into: registry)
            Issue.record("the second plugin was registered")
        } catch let refusal as PluginRefusal {
            #expect(refusal.file == second)
            #expect(refusal.reasons.contains(
                "the sharding strategy name 'c-modulo' is already provided by 'c-modulo' of plugin 'first' (\(first)); "
                    + "two plugins may not offer one name"))
            #expect(refusal.reasons.contains { $0.contains("the job type name 'c-echo'") })
        }
        #expect(try registry.resolve(.shardingStrategy, "c-modulo").plugin.name == "first")
    }

    @Test("a plugin is registered whole or not at all: one taken alias refuses all its providers")
    func wholeOrNothing() async throws {
        let directory = try TemporaryDirectory()
        let first = try await CPluginBuilder.testPlugin(in: directory.path, named: "libfirst.so", defines: ["PLUGIN_NAME=\"first\""])
        // Prefix "d": every name differs from the first plugin's but the alias C_MODULO.
        let second = try await CPluginBuilder.testPlugin(
            in: directory.path, named: "libsecond.so", defines: ["PLUGIN_NAME=\"second\"", "NAME_PREFIX=\"d\""])
        let registry = ProviderRegistry()
        try TestPlugins.load(first, into: registry)
        #expect(throws: PluginRefusal.self) { try TestPlugins.load(second, into: registry) }
        #expect(throws: ProviderLookupError.self) { try registry.resolve(.executorStrategy, "d-threads") }
        #expect(registry.plugins.map(\.name) == ["first"])
    }

    @Test("the same plugin name from two files: the second is refused")
    func duplicatePluginName() async throws {
        let directory = try TemporaryDirectory()
        let first = try await CPluginBuilder.testPlugin(in: directory.path, named: "liba.so")
        let second = try await CPluginBuilder.testPlugin(in: try directory.subdirectory("other"), named: "liba.so", defines: ["NAME_PREFIX=\"e\""])
        let registry = ProviderRegistry()
        try TestPlugins.load(first, into: registry)
        do {
            try TestPlugins.load(second, into: registry)
            Issue.record("registered twice")
        } catch let refusal as PluginRefusal {
            #expect(refusal.reasons.first == "a plugin named 'c-test' (version 1.0.0) is already loaded from \(first)")
        }
    }

    @Test("a new generation of a plugin takes over its names only when adopted; the old one stays listed")
    func generations() async throws {
        let directory = try TemporaryDirectory()
        let loader = PluginLoader(logger: CapturedLog().logger())
        let first = try loader.load(try await CPluginBuilder.testPlugin(in: directory.path, named: "liba.so")).get()
        // The same plugin name; its providers are named e-… and no longer c-….
        let second = try loader.load(try await CPluginBuilder.testPlugin(
            in: try directory.subdirectory("v2"), named: "liba.so", defines: ["NAME_PREFIX=\"e\"", "MODULO_ALIAS=\"E_MODULO\""])).get()
        let registry = ProviderRegistry()
        try registry.register(first)
        #expect(try registry.resolve(.jobType, "c-echo").plugin.generation == 1)

        let proposal = try registry.propose(second)
        #expect(proposal.info.generation == 2 && proposal.superseding?.generation == 1)
        // Nothing changed yet; the proposal resolves as the registry will.
        #expect(try registry.resolve(.jobType, "c-echo").plugin.generation == 1)
        #expect(throws: ProviderLookupError.self) { try registry.resolve(.jobType, "e-echo") }
        #expect(try proposal.registry.resolve(.jobType, "e-echo").plugin.generation == 2)
        #expect(throws: ProviderLookupError.self) { try proposal.registry.resolve(.jobType, "c-echo") }

        // A proposal made before another change is not adopted over it.
        let stale = try registry.propose(first)
        try registry.adopt(proposal)
        #expect(throws: PluginRefusal.self) { try registry.adopt(stale) }

        #expect(try registry.resolve(.shardingStrategy, "E_MODULO").plugin.generation == 2)
        #expect(throws: ProviderLookupError.self) { try registry.resolve(.jobType, "c-echo") }
        #expect(registry.generations.map(\.info.generation) == [1, 2])
        #expect(registry.generations.map(\.isCurrent) == [false, true])
        #expect(registry.generations[0].providers.contains { $0.name == "c-echo" })
        #expect(registry.plugins.map(\.generation) == [2])
        #expect(registry.providers().allSatisfy { $0.plugin.generation == 2 })

        // Another plugin's names still conflict, naming both files; nothing is registered.
        let other = try loader.load(try await CPluginBuilder.testPlugin(
            in: directory.path, named: "libother.so", defines: ["PLUGIN_NAME=\"other\"", "NAME_PREFIX=\"e\"", "MODULO_ALIAS=\"O_MODULO\""])).get()
        do {
            _ = try registry.propose(other)
            Issue.record("another plugin took over e-echo")
        } catch {
            #expect(error.file == other.info.file)
            #expect(error.reasons.contains { $0.contains("'e-echo'") && $0.contains(second.info.file) })
        }
        #expect(registry.generations.count == 2)
    }

    @Test("listing: by kind, then name, with the plugin each comes from")
    func listing() throws {
        let registry = try TestPlugins.standardRegistry()
        let providers = registry.providers()
        #expect(providers.map(\.name) == BuiltInPlugins.providerNames)
        #expect(registry.providers(of: .executorStrategy).allSatisfy { $0.plugin.name == "standard-executors" })
        #expect(providers.first { $0.name == "average" }?.label == "average (AVG_ALLOCATION)")
    }
}
