import CShardworkPlugin

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The registration call of a Swift plugin.
///
/// A plugin defines the C entry that the host looks up, and returns what ``export(host:name:version:providers:)``
/// builds:
///
/// ```swift
/// import ShardworkSDK
///
/// @c(shardwork_plugin_entry)
/// public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
///     ShardworkPlugin.export(host: host, name: "acme", version: "1.0.0", providers: [
///         .simpleJob(name: "acme-report") { setup in AcmeReport(setup) },
///     ])
/// }
/// ```
public enum ShardworkPlugin {
    /// Builds the plugin's descriptor: the providers bridged to the C tables of
    /// `shardwork_plugin.h`, with the ABI version, struct sizes, toolchain and SDK version of the
    /// plugin's own build. The descriptor lives as long as the process.
    @_alwaysEmitIntoClient
    public static func export(
        host: UnsafeRawPointer?, name: String, version: String, providers: [Provider]
    ) -> UnsafeRawPointer? {
        _makeDescriptor(build: .current, host: host, name: name, version: version, providers: providers)
    }

    /// The part of ``export(host:name:version:providers:)`` that runs in the host's copy of the SDK.
    /// Not for direct use: the build information must come from the plugin's compilation.
    public static func _makeDescriptor(
        build: PluginBuildInfo, host: UnsafeRawPointer?, name: String, version: String, providers: [Provider]
    ) -> UnsafeRawPointer? {
        let logger = HostLog(host?.assumingMemoryBound(to: shardwork_host_api.self)).logger

        let table = UnsafeMutablePointer<shardwork_provider>.allocate(capacity: max(providers.count, 1))
        for (index, provider) in providers.enumerated() {
            let aliases = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(provider.aliases.count, 1))
            for (aliasIndex, alias) in provider.aliases.enumerated() {
                aliases[aliasIndex] = UnsafePointer(strdup(alias))
            }
            let box = ProviderBox(factory: provider.factory, logger: logger)
            (table + index).initialize(to: shardwork_provider(
                kind: provider.kind.rawValue,
                alias_count: UInt32(provider.aliases.count),
                name: UnsafePointer(strdup(provider.name)),
                aliases: UnsafePointer(aliases),
                vtable: UnsafeRawPointer(Bridge.vtable(for: provider.factory)),
                context: Unmanaged.passRetained(box).toOpaque(),
                release: { context in
                    guard let context else { return }
                    Unmanaged<ProviderBox>.fromOpaque(context).release()
                }
            ))
        }

        let descriptor = UnsafeMutablePointer<shardwork_plugin_descriptor>.allocate(capacity: 1)
        descriptor.initialize(to: shardwork_plugin_descriptor(
            magic: SHARDWORK_PLUGIN_MAGIC,
            abi_major: build.abiMajor,
            abi_minor: build.abiMinor,
            descriptor_size: build.descriptorSize,
            provider_size: build.providerSize,
            provider_count: UInt32(providers.count),
            name: UnsafePointer(strdup(name)),
            version: UnsafePointer(strdup(version)),
            toolchain: UnsafePointer(strdup(build.toolchain)),
            sdk_version: UnsafePointer(strdup(build.sdkVersion)),
            providers: UnsafePointer(table)
        ))
        return UnsafeRawPointer(descriptor)
    }
}

/// The host's log function, given to the entry. The host keeps it valid and thread-safe for the
/// life of the process, which is why the raw pointers may be shared.
struct HostLog: @unchecked Sendable {
    let function: (@convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?) -> Void)?
    let context: UnsafeMutableRawPointer?

    init(_ api: UnsafePointer<shardwork_host_api>?) {
        if let api, api.pointee.struct_size >= UInt32(MemoryLayout<shardwork_host_api>.size) {
            function = api.pointee.log
            context = api.pointee.host_context
        } else {
            function = nil
            context = nil
        }
    }

    var logger: PluginLogger {
        guard function != nil else { return .discarding }
        return PluginLogger { level, message in
            self.function?(self.context, level.rawValue, message)
        }
    }
}

/// The provider's side of the C `context`: its factory and the plugin's logger.
final class ProviderBox: Sendable {
    let factory: Provider.Factory
    let logger: PluginLogger

    init(factory: Provider.Factory, logger: PluginLogger) {
        self.factory = factory
        self.logger = logger
    }
}

/// One instance made by a provider for one job; the C `instance` pointer.
final class InstanceBox<Value: Sendable>: Sendable {
    let value: Value

    init(_ value: Value) { self.value = value }
}
