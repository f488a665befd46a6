public import ShardworkSDK

/// Helpers for reading props beyond the SDK's.
extension JobProperties {
    /// The value of `key`, required and not blank.
    public func requiredNonEmpty(_ key: String, _ what: String) throws(ConfigurationError) -> String {
        let value = try required(key)
        guard !value.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }) else {
            throw ConfigurationError(field: key, message: "The property `\(key)` is empty; give \(what).")
        }
        return value
    }
}
