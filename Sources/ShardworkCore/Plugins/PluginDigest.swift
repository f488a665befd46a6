import CCrypto

/// SHA-256 of a plugin's bytes, through OpenSSL's libcrypto: what names a file in the plugin cache
/// and tells a hot-load that the same content is already loaded.
enum PluginDigest {
    /// The digest as 64 lowercase hexadecimal digits.
    static func sha256(_ bytes: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let status = bytes.withUnsafeBytes { input in
            digest.withUnsafeMutableBufferPointer { output in
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, EVP_sha256(), nil)
            }
        }
        // EVP_Digest fails only when libcrypto cannot allocate a context: nothing here can go on.
        precondition(status == 1 && length == 32, "OpenSSL's EVP_Digest(SHA-256) failed")
        return digest.prefix(Int(length)).map { byte in
            let text = String(byte, radix: 16)
            return byte < 16 ? "0" + text : text
        }.joined()
    }
}
