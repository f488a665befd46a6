// swift-tools-version:6.1
//
// ShardworkSDK: what plugin authors depend on. It is its own package so that every client links
// the one shared library (`libShardworkSDK.so`) instead of a static copy: two copies of the SDK in
// one process would break casts, errors and globals (see docs/plugin-guide.md).
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "ShardworkSDK",
    products: [
        // The only Swift product, and it is dynamic: never link the SDK statically.
        .library(name: "ShardworkSDK", type: .dynamic, targets: ["ShardworkSDK"]),
        // The C contract alone (header only), for hosts and C-speaking tools.
        .library(name: "CShardworkPlugin", targets: ["CShardworkPlugin"]),
    ],
    targets: [
        .target(name: "CShardworkPlugin"),
        .target(
            name: "ShardworkSDK",
            dependencies: ["CShardworkPlugin"],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
