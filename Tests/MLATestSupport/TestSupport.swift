import Foundation
import MLALinalg
import Testing

/// The library's seeded generator, under the name every test target already uses.
public typealias SplitMix64 = MLALinalg.SplitMix64

/// The package root, found from this file's path (`<root>/Tests/MLATestSupport/TestSupport.swift`).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The small committed test files under `<root>/fixtures` (each folder has the script that made them).
public enum Fixtures {
    public static let root = packageRoot + "/fixtures"

    /// `<root>/fixtures/<relative>`.
    public static func path(_ relative: String) -> String { root + "/" + relative }
}

/// The sample model and corpus fetched by `scripts/setup`: `$MLA_CACHE`, else `<repo>/.cache`.
/// With `CI=true` missing data is a test failure; elsewhere real-data tests are skipped.
public enum SampleData {
    public static let cache: String = {
        if let env = ProcessInfo.processInfo.environment["MLA_CACHE"], !env.isEmpty { return env }
        return packageRoot + "/.cache"
    }()

    public static var modelPath: String { cache + "/sample.gguf" }
    public static var corpus: String { cache + "/corpus" }

    /// True when the real-data tests should run; records a failure in CI when the data is missing.
    public static func require() -> Bool {
        if FileManager.default.fileExists(atPath: modelPath) { return true }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("sample model missing at \(modelPath): run scripts/setup")
        }
        return false
    }
}
