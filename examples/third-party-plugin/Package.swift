// swift-tools-version:6.1
//
// A third-party Shardwork plugin: its own package, depending on the SDK's dynamic product.
// Build it with `swift build -c release` and copy `.build/release/libAcmePlugins.so` (alone) into a
// plugin directory of the host. A real plugin would depend on the SDK by URL and version; this one
// uses the SDK in this repository by path.
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
