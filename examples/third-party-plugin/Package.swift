// swift-tools-version:6.1
//
// A third-party Shardwork plugin: its own package, depending on the SDK's dynamic product.
// Build it with `swift build -c release` and copy `.build/release/libAcmePlugins.so` (alone) into a
// plugin directory of the host. A real plugin would depend on the SDK by URL and version; this one
// uses the SDK in this repository by path.
//
// Version 2.0.0 of the same plugin (for trying hot-loads, docs/hot-loading.md) is built with a
// compile-time flag, into a scratch path of its own so that both builds stay:
//   swift build -Xswiftc -DACME_V2 --scratch-path .build-v2
// and is then `.build-v2/debug/libAcmePlugins.so`.
import PackageDescription

let package = Package(
    name: "AcmePlugins",
    products: [
        // A plugin is a dynamic library.
        .library(name: "AcmePlugins", type: .dynamic, targets: ["AcmePlugins"]),
    ],
    dependencies: [
        .package(path: "../../SDK"),
    ],
    targets: [
        .target(
            name: "AcmePlugins",
            // Depend on the SDK *product* (dynamic); never copy its sources or link it statically.
            dependencies: [.product(name: "ShardworkSDK", package: "SDK")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
