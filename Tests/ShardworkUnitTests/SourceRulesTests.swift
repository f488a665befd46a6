import Foundation
import Testing

/// Rules about the sources that a compiler does not check.
@Suite("Source rules")
struct SourceRulesTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")

    @Test("no closure is the generic value of a Mutex or Atomic: each access would wrap it in one more thunk (see Callback)")
    func noClosureInALock() throws {
        // A host that kept its sync handler so went through one more pair of thunks at every sync
        // request: after a few minutes at 10,000 jobs, every sync walked tens of thousands of them.
        let pattern = try Regex(#"(Mutex|Atomic)<\(*\s*(@Sendable\s*|@escaping\s*)*\([^)]*\)\s*(async\s*)?(throws\s*)?->"#)
        var offenders: [String] = []
        let files = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)
        while let file = files?.nextObject() as? URL {
            guard file.pathExtension == "swift" else { continue }
            let text = try String(contentsOf: file, encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).hasPrefix("///") && line.contains(pattern) {
                offenders.append("\(file.lastPathComponent):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(offenders.isEmpty, "keep closures in a class (Callback, AsyncCallback): \(offenders)")
    }
}
