// swift-tools-version:6.1
import PackageDescription

import class Foundation.ProcessInfo

/// swift-log's upcoming-feature set, short of NonisolatedNonsendingByDefault (it would move where
/// nonisolated async functions run, which the host's thread rules were not written for).
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// A built-in plugin: a `.dynamic` product under Plugins/ that depends on the public SDK only (plus,
/// for the ecosystem plugins, the helpers and C libraries of `pluginSupport`, linked into it).
/// The host finds it beside the `shardwork` binary; nothing links it.
func plugin(_ name: String, _ dependencies: [Target.Dependency] = []) -> (product: Product, target: Target) {
    (
        .library(name: "Shardwork\(name)", type: .dynamic, targets: [name]),
        .target(
            name: name,
            dependencies: [.product(name: "ShardworkSDK", package: "SDK")] + dependencies,
            path: "Plugins/\(name)",
            swiftSettings: strictSettings
        )
    )
}

/// What the ecosystem plugins share. None is a product: each plugin links its own copy of the
/// helpers it uses (they hold no state that two copies could disagree on), and the C libraries are
/// Debian's (scripts/install-dependencies).
let pluginSupport: [Target] = [
    // libcurl (HTTP job, webhook and email handlers), with wrappers for its variadic calls.
    .systemLibrary(name: "CCurl", path: "Plugins/System/CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),
    // OpenSSL's libcrypto, for the webhook's HMAC-SHA256 signatures (and the host's plugin cache).
    .systemLibrary(name: "CCrypto", path: "Plugins/System/CCrypto", providers: [.apt(["libssl-dev"])]),
    // Blocking work off Swift's cooperative threads, background delivery, ElasticJob's context JSON.
    .target(
        name: "PluginSupport",
        dependencies: [.product(name: "ShardworkSDK", package: "SDK")],
        path: "Plugins/Support/PluginSupport",
        swiftSettings: strictSettings
    ),
    // libffi, through which the native job calls C functions.
    .systemLibrary(name: "CFFI", path: "Plugins/System/CFFI", providers: [.apt(["libffi-dev"])]),
    // HTTP and SMTP transfers over libcurl.
    .target(
        name: "CurlSupport",
        dependencies: ["CCurl", "PluginSupport", .product(name: "ShardworkSDK", package: "SDK")],
        path: "Plugins/Support/CurlSupport",
        swiftSettings: strictSettings
    ),
]

let builtInPlugins = [
    plugin("StandardSharding"),
    plugin("StandardExecutors"),
    plugin("StandardErrorHandlers"),
    // The job types of the quick start (examples/quickstart.yaml).
    plugin("ExampleJobs", ["PluginSupport"]),
    // The ecosystem plugins (docs/ecosystem-plugins.md).
    plugin("ScriptJob", ["PluginSupport"]),
    plugin("WebhookErrorHandler", ["PluginSupport", "CurlSupport", "CCrypto"]),
    plugin("HTTPJob", ["PluginSupport", "CurlSupport"]),
    plugin("NativeJob", ["PluginSupport", "CFFI"]),
    plugin("EmailErrorHandler", ["PluginSupport", "CurlSupport"]),
]

/// The benchmarks (Benchmarks/, ordo-one/benchmark) join the package only when
/// SHARDWORK_BENCHMARKS is set, so that building and testing never fetch or compile the benchmark
/// tooling. scripts/benchmark sets it; see docs/performance.md.
let withBenchmarks = ProcessInfo.processInfo.environment["SHARDWORK_BENCHMARKS"] != nil

let package = Package(
    name: "Shardwork",
    products: [
        .executable(name: "shardwork", targets: ["shardwork"]),
        .library(name: "ShardworkCore", targets: ["ShardworkCore"]),
        .library(name: "ZooKeeper", targets: ["ZooKeeper"]),
    ] + builtInPlugins.map(\.product),
    dependencies: [
        .package(path: "SDK"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        // The control API's HTTP server (without its swift-configuration and full-Foundation traits).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        // Execution history: SQLite (Debian's libsqlite3-dev) and PostgreSQL.
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // The ZooKeeper C client, Debian's libzookeeper-mt-dev (it ships no pkg-config file).
        .systemLibrary(name: "CZooKeeper", providers: [.apt(["libzookeeper-mt-dev"])]),
        // A Swift client over it: async operations, watches, session events, multi, digest auth.
        .target(
            name: "ZooKeeper",
            dependencies: ["CZooKeeper", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        // C helpers for the firing path (a cache prefetch).
        .target(name: "CShardworkSupport"),
        .target(
            name: "ShardworkCore",
            dependencies: [
                "ZooKeeper",
                "CShardworkSupport",
                // OpenSSL's libcrypto: SHA-256 names hot-loaded plugins in the plugin cache.
                "CCrypto",
                .product(name: "ShardworkSDK", package: "SDK"),
                .product(name: "CShardworkPlugin", package: "SDK"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // Metrics through swift-metrics' API: the embedding process picks the back end.
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // Execution history: the host's events written to ElasticJob's trace tables, on SQLite or
        // PostgreSQL, off the fire path (docs/history.md).
        .target(
            name: "ShardworkHistory",
            dependencies: [
                "ShardworkCore",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's own C interface, as GRDB links it: the writer binds rows with it.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // The control API: JSON over HTTP, served by a running host (docs/operations.md).
        .target(
            name: "ShardworkControl",
            dependencies: [
                "ShardworkCore",
                "ShardworkHistory",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                // The Prometheus exposition of `shardwork run`'s metrics endpoint (docs/metrics.md).
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "shardwork",
            dependencies: [
                "ShardworkCore",
                "ShardworkControl",
                "ShardworkHistory",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        // Tests never depend on plugin targets (that would link them statically and duplicate the
        // SDK); they dlopen the built .so files from the build directory instead.
        .target(
            name: "ShardworkTestSupport",
            dependencies: ["ShardworkCore", "CShardworkSupport"],
            path: "Tests/TestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ShardworkCoreTests",
            dependencies: [
                "ShardworkCore", "ShardworkTestSupport", "ZooKeeper", .product(name: "ShardworkSDK", package: "SDK"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // Pure tests: no plugin, registry server, host or child process; they run in seconds
        // (`swift test --filter ShardworkUnitTests`).
        .testTarget(
            name: "ShardworkUnitTests",
            dependencies: ["ShardworkCore", "ShardworkTestSupport", .product(name: "ShardworkSDK", package: "SDK")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ShardworkHistoryTests",
            dependencies: [
                "ShardworkHistory", "ShardworkCore", "ShardworkTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ShardworkCLITests",
            dependencies: ["ShardworkTestSupport", "ShardworkCore", "ShardworkHistory", "ZooKeeper", "CShardworkSupport"],
            swiftSettings: strictSettings
        ),
    ] + builtInPlugins.map(\.target) + pluginSupport,
    swiftLanguageModes: [.v6]
)

if withBenchmarks {
    package.dependencies.append(
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]))
    package.targets.append(
        .executableTarget(
            name: "ShardworkBenchmarks",
            dependencies: [
                "ShardworkCore",
                .product(name: "ShardworkSDK", package: "SDK"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/Shardwork",
            swiftSettings: strictSettings,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ))
    // Trigger lag needs a host running for seconds, not iterations: a plain executable.
    package.targets.append(
        .executableTarget(
            name: "TriggerLagBenchmark",
            dependencies: [
                "ShardworkCore", "ShardworkHistory", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Benchmarks/TriggerLag",
            exclude: ["lag_probe.c"],
            swiftSettings: strictSettings
        ))
    // History rows written per second into SQLite and a real PostgreSQL.
    package.targets.append(
        .executableTarget(
            name: "HistoryBenchmark",
            dependencies: ["ShardworkCore", "ShardworkHistory", "ShardworkTestSupport", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/History",
            swiftSettings: strictSettings
        ))
    // Failover latency with real processes: kill -9 to the item's start elsewhere.
    package.targets.append(
        .executableTarget(
            name: "FailoverBenchmark",
            dependencies: ["ShardworkCore", "ShardworkTestSupport"],
            path: "Benchmarks/Failover",
            swiftSettings: strictSettings
        ))
    // ZooKeeper writes per fire and the time to a new assignment, on a real server.
    package.targets.append(
        .executableTarget(
            name: "ZooKeeperBenchmark",
            dependencies: [
                "ShardworkCore", "ShardworkTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "ShardworkSDK", package: "SDK"),
            ],
            path: "Benchmarks/ZooKeeper",
            swiftSettings: strictSettings
        ))
}
