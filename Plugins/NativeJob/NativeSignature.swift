import ShardworkSDK

/// A C function's signature as the native job's props give it: `i32(i32,str,str)`.
struct NativeSignature: Equatable {
    enum ValueType: String, CaseIterable {
        case i32, i64, str
    }

    enum ReturnType: String, CaseIterable {
        case i32, i64, void
    }

    var returnType: ReturnType
    var parameters: [ValueType]

    static let key = "native.signature"

    /// Parses `ret(arg,arg,…)`: the return type `i32`, `i64` or `void`, and argument types `i32`,
    /// `i64` or `str` (a NUL-terminated UTF-8 string, `const char *`). Spaces are allowed.
    static func parse(_ text: String) throws(ConfigurationError) -> NativeSignature {
        let compact = text.filter { $0 != " " && $0 != "\t" }
        func fail(_ why: String) -> ConfigurationError {
            ConfigurationError(
                field: key,
                message: "The property `\(key)` is not a signature like `i32(i32,str,str)`: \(why) (got '\(text)'). "
                    + "Return types: i32, i64, void; argument types: i32, i64, str.")
        }
        guard let open = compact.firstIndex(of: "("), compact.last == ")" else {
            throw fail("it needs a return type and the argument types in parentheses")
        }
        let returnName = String(compact[..<open])
        guard let returnType = ReturnType(rawValue: returnName.lowercased()) else {
            throw fail("unknown return type '\(returnName)'")
        }
        let inside = compact[compact.index(after: open)..<compact.index(before: compact.endIndex)]
        var parameters: [ValueType] = []
        if !inside.isEmpty && inside.lowercased() != "void" {
            for name in inside.split(separator: ",", omittingEmptySubsequences: false) {
                guard let type = ValueType(rawValue: name.lowercased()) else {
                    throw fail(name.isEmpty ? "an argument type is missing" : "unknown argument type '\(name)'")
                }
                parameters.append(type)
            }
        }
        return NativeSignature(returnType: returnType, parameters: parameters)
    }
}

/// The context values that fill a native function's arguments, named in `native.arguments`.
enum ContextValue: String, CaseIterable {
    case item
    case itemParameter
    case jobParameter
    case jobName
    case taskId
    case total
    case fireTime

    static let key = "native.arguments"

    /// The argument types that can take this value.
    var types: Set<NativeSignature.ValueType> {
        switch self {
        case .item, .total: [.i32, .i64]
        case .fireTime: [.i64]
        case .itemParameter, .jobParameter, .jobName, .taskId: [.str]
        }
    }

    /// Parses `native.arguments` (comma-separated names) against the signature's parameters.
    static func parseList(_ text: String?, for signature: NativeSignature) throws(ConfigurationError) -> [ContextValue] {
        let names = (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: [" ", "\t"]) }.filter { !$0.isEmpty }
        let known = allCases.map(\.rawValue).joined(separator: ", ")
        guard names.count == signature.parameters.count else {
            throw ConfigurationError(
                field: key,
                message: "The property `\(key)` names \(names.count) value\(names.count == 1 ? "" : "s") but `\(NativeSignature.key)` "
                    + "has \(signature.parameters.count) argument\(signature.parameters.count == 1 ? "" : "s"); name one of \(known) per argument, in order.")
        }
        var values: [ContextValue] = []
        for (index, name) in names.enumerated() {
            guard let value = allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
                throw ConfigurationError(field: key, message: "The property `\(key)`: unknown context value '\(name)'; use one of \(known).")
            }
            let type = signature.parameters[index]
            guard value.types.contains(type) else {
                let allowed = value.types.map(\.rawValue).sorted().joined(separator: " or ")
                throw ConfigurationError(
                    field: key,
                    message: "The property `\(key)`: argument \(index + 1) is \(type.rawValue) in `\(NativeSignature.key)`, "
                        + "but \(value.rawValue) needs \(allowed).")
            }
            values.append(value)
        }
        return values
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        var text = self
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
