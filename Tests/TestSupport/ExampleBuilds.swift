import Foundation

/// The Acme example plugin (examples/third-party-plugin), built the way its Package.swift says, once
/// per test run for every test that needs it.
public enum ExampleBuilds {
    /// Version 1.0.0: `swift build --product AcmePlugins`.
    public static let acmeV1 = Task<String, any Error> {
        try await build(scratch: nil, flags: [])
    }

    /// Version 2.0.0 (`-DACME_V2`), in a scratch path of its own, after version 1 (one build at a
    /// time on a small machine).
    public static let acmeV2 = Task<String, any Error> {
        _ = try await acmeV1.value
        return try await build(scratch: TestPaths.repositoryRoot + "/examples/third-party-plugin/.build-v2", flags: ["-Xswiftc", "-DACME_V2"])
    }

    private static func build(scratch: String?, flags: [String]) async throws -> String {
        let package = TestPaths.repositoryRoot + "/examples/third-party-plugin"
        guard let swift = Subprocess.which("swift") else { throw TestSetupError("swift is not on the PATH") }
        let arguments = ["--package-path", package] + (scratch.map { ["--scratch-path", $0] } ?? []) + flags
        let build = try await Subprocess.run(swift, ["build"] + arguments + ["--product", "AcmePlugins"])
        guard build.succeeded else {
            throw TestSetupError("swift build \(flags.joined(separator: " ")) of \(package) failed:\n\(build.standardOutput)\n\(build.standardError)")
        }
        let binPath = try await Subprocess.run(swift, ["build"] + arguments + ["--show-bin-path"])
        return binPath.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) + "/libAcmePlugins.so"
    }
}
