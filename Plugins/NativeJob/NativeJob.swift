import CFFI
import PluginSupport
import ShardworkSDK

#if canImport(Glibc)
import Glibc
#endif

/// `native`: each item calls a C function of a shared library through libffi, with context values
/// as its arguments. A non-zero return fails the item (the value is the item's code). Library,
/// symbol, signature and arguments are checked when the job is registered.
struct NativeJob: SimpleJob {
    let function: NativeFunction
    let arguments: [ContextValue]

    init(_ setup: ProviderSetup) throws {
        let properties = setup.properties
        let library = try properties.requiredNonEmpty("native.library", "the shared library's path, for example `/opt/jobs/libexport.so`")
        let symbol = try properties.requiredNonEmpty("native.symbol", "the name of the function each item calls")
        let signature = try NativeSignature.parse(try properties.required(NativeSignature.key))
        arguments = try ContextValue.parseList(properties[ContextValue.key], for: signature)
        function = try NativeFunction(library: library, symbol: symbol, signature: signature)
    }

    func execute(_ context: ShardingContext) async throws {
        let values = arguments.map { NativeArgument($0, context) }
        let function = self.function
        let result = try await BlockingWork.run("shardwork-native") { function.call(values) }
        if result != 0 {
            throw JobError("native job: \(function.symbol) returned \(result)", code: Int32(truncatingIfNeeded: result))
        }
    }
}

/// One argument's value for one call.
enum NativeArgument: Sendable {
    case integer(Int64)
    case string(String)

    init(_ value: ContextValue, _ context: ShardingContext) {
        switch value {
        case .item: self = .integer(Int64(context.shardingItem))
        case .total: self = .integer(Int64(context.shardingTotalCount))
        case .fireTime: self = .integer(context.fireTimeMilliseconds)
        case .itemParameter: self = .string(context.shardingParameter ?? "")
        case .jobParameter: self = .string(context.jobParameter)
        case .jobName: self = .string(context.jobName)
        case .taskId: self = .string(context.taskID)
        }
    }
}

/// A C function resolved with `dlopen` and `dlsym`, and its libffi call interface, prepared once.
/// The library is never closed: a job's function may run until the process ends.
final class NativeFunction: @unchecked Sendable {
    // @unchecked: every stored property is set in init and never changed; libffi only reads the
    // call interface during ffi_call, so calls from several threads at once are safe.
    let symbol: String
    let signature: NativeSignature
    private let entry: @convention(c) () -> Void
    private let cif: UnsafeMutablePointer<ffi_cif>
    private let argumentTypes: UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>

    init(library: String, symbol: String, signature: NativeSignature) throws(ConfigurationError) {
        self.symbol = symbol
        self.signature = signature
        dlerror()
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw ConfigurationError(field: "native.library", message: "The property `native.library`: cannot load '\(library)': \(reason).")
        }
        dlerror()
        guard let address = dlsym(handle, symbol) else {
            let reason = dlerror().map { String(cString: $0) } ?? "not found"
            throw ConfigurationError(
                field: "native.symbol",
                message: "The property `native.symbol`: '\(symbol)' is not in '\(library)': \(reason). Is it exported (not static, default visibility)?")
        }
        entry = unsafeBitCast(address, to: (@convention(c) () -> Void).self)

        let count = signature.parameters.count
        argumentTypes = .allocate(capacity: max(count, 1))
        for (index, type) in signature.parameters.enumerated() {
            argumentTypes[index] = switch type {
            case .i32: shardwork_ffi_sint32()
            case .i64: shardwork_ffi_sint64()
            case .str: shardwork_ffi_pointer()
            }
        }
        let returnType = switch signature.returnType {
        case .i32: shardwork_ffi_sint32()
        case .i64: shardwork_ffi_sint64()
        case .void: shardwork_ffi_void()
        }
        cif = .allocate(capacity: 1)
        let status = ffi_prep_cif(cif, FFI_DEFAULT_ABI, UInt32(count), returnType, argumentTypes)
        guard status == FFI_OK else {
            throw ConfigurationError(field: NativeSignature.key, message: "The property `\(NativeSignature.key)`: libffi cannot call this signature (status \(status.rawValue)).")
        }
    }

    /// Calls the function with `values` (one per parameter, of matching kinds) and returns its
    /// result widened to 64 bits (0 for `void`). Blocks for as long as the function runs.
    func call(_ values: [NativeArgument]) -> Int64 {
        let count = values.count
        // Storage for each argument's value; libffi reads through pointers to them.
        let integers = UnsafeMutablePointer<Int64>.allocate(capacity: max(count, 1))
        let int32s = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
        let strings = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: max(count, 1))
        let pointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(count, 1))
        strings.initialize(repeating: nil, count: max(count, 1))
        defer {
            for index in 0..<count { free(strings[index]) }
            integers.deallocate()
            int32s.deallocate()
            strings.deallocate()
            pointers.deallocate()
        }
        for (index, value) in values.enumerated() {
            switch (value, signature.parameters[index]) {
            case (.integer(let number), .i32):
                int32s[index] = Int32(truncatingIfNeeded: number)
                pointers[index] = UnsafeMutableRawPointer(int32s + index)
            case (.integer(let number), _):
                integers[index] = number
                pointers[index] = UnsafeMutableRawPointer(integers + index)
            case (.string(let text), _):
                strings[index] = strdup(text)
                pointers[index] = UnsafeMutableRawPointer(strings + index)
            }
        }
        // libffi widens integer results to a full register (ffi_arg, 8 bytes here).
        var result: Int64 = 0
        ffi_call(cif, entry, &result, pointers)
        switch signature.returnType {
        case .i32: return Int64(Int32(truncatingIfNeeded: result))
        case .i64: return result
        case .void: return 0
        }
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "native-job", version: "0.1.0", providers: [
        .simpleJob(name: "native", aliases: ["NATIVE"]) { setup in try NativeJob(setup) },
    ])
}
