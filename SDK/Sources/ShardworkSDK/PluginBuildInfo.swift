// Public: the build facts below are compiled into each plugin, and read the C header's constants.
public import CShardworkPlugin

/// What a plugin was compiled with: the ABI version and struct sizes of its copy of
/// `shardwork_plugin.h`, its Swift toolchain and the SDK version.
///
/// ``current`` is emitted into the code of whoever calls it, so a plugin reports the values of its
/// own build, not those of the host's `libShardworkSDK.so` that it binds to at run time. The host
/// computes the same values for itself and compares.
public struct PluginBuildInfo: Sendable, Equatable {
    public var abiMajor: UInt16
    public var abiMinor: UInt16
    public var descriptorSize: UInt32
    public var providerSize: UInt32
    /// `swift-X.Y.Z`, see ``swiftToolchainFingerprint``.
    public var toolchain: String
    public var sdkVersion: String

    public init(
        abiMajor: UInt16, abiMinor: UInt16, descriptorSize: UInt32, providerSize: UInt32,
        toolchain: String, sdkVersion: String
    ) {
        self.abiMajor = abiMajor
        self.abiMinor = abiMinor
        self.descriptorSize = descriptorSize
        self.providerSize = providerSize
        self.toolchain = toolchain
        self.sdkVersion = sdkVersion
    }

    /// The values of the build that compiles the call site.
    @_alwaysEmitIntoClient
    public static var current: PluginBuildInfo {
        PluginBuildInfo(
            abiMajor: UInt16(SHARDWORK_ABI_MAJOR),
            abiMinor: UInt16(SHARDWORK_ABI_MINOR),
            descriptorSize: UInt32(MemoryLayout<shardwork_plugin_descriptor>.size),
            providerSize: UInt32(MemoryLayout<shardwork_provider>.size),
            toolchain: swiftToolchainFingerprint,
            sdkVersion: sdkVersionOfCallSite
        )
    }

    /// The ShardworkSDK version, as compiled into the call site.
    @_alwaysEmitIntoClient
    public static var sdkVersionOfCallSite: String { "0.1.0" }

    /// The Swift compiler that compiled the call site, as `swift-MAJOR.MINOR.PATCH`.
    ///
    /// Swift has no stable ABI on Linux, so a Swift plugin must be built by the host's toolchain.
    /// The compiler has no version string a program can read, so this walks `#if compiler(...)`
    /// checks; a toolchain newer than the last one listed reports `swift-6.4-or-later`, and the
    /// list grows with each SDK release.
    @_alwaysEmitIntoClient
    public static var swiftToolchainFingerprint: String {
        #if compiler(>=6.4)
        return "swift-6.4-or-later"
        #elseif compiler(>=6.3.3)
        return "swift-6.3.3"
        #elseif compiler(>=6.3.2)
        return "swift-6.3.2"
        #elseif compiler(>=6.3.1)
        return "swift-6.3.1"
        #elseif compiler(>=6.3)
        return "swift-6.3.0"
        #elseif compiler(>=6.2.4)
        return "swift-6.2.4"
        #elseif compiler(>=6.2.3)
        return "swift-6.2.3"
        #elseif compiler(>=6.2.2)
        return "swift-6.2.2"
        #elseif compiler(>=6.2.1)
        return "swift-6.2.1"
        #elseif compiler(>=6.2)
        return "swift-6.2.0"
        #elseif compiler(>=6.1.3)
        return "swift-6.1.3"
        #elseif compiler(>=6.1.2)
        return "swift-6.1.2"
        #elseif compiler(>=6.1.1)
        return "swift-6.1.1"
        #else
        return "swift-6.1.0"
        #endif
    }
}
