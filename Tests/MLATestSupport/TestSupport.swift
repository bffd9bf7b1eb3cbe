import Foundation
import MLALinalg
import Testing

/// The library's seeded generator, under the name every test target already uses.
public typealias SplitMix64 = MLALinalg.SplitMix64

/// How many positions of `a` and `b` differ (a length difference counts as that many), for comparing
/// large arrays: on a failed `#expect(a == b)` Swift Testing diffs the two collections to describe the
/// failure, which took more than 15 minutes on one core for a model's tensors (a million values) instead
/// of failing. `#expect(differingCount(a, b) == 0)` fails at once and says how many differ.
public func differingCount<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
    zip(a, b).reduce(abs(a.count - b.count)) { $0 + ($1.0 == $1.1 ? 0 : 1) }
}

/// The package root, found from this file's path (`<root>/Tests/MLATestSupport/TestSupport.swift`).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The small committed test files under `<root>/fixtures` (each folder has the script that made them).
public enum Fixtures {
    public static let root = packageRoot + "/fixtures"

    /// `<root>/fixtures/<relative>`.
    public static func path(_ relative: String) -> String { root + "/" + relative }
}

/// The sample model and corpus fetched by `scripts/setup`: `$MLA_CACHE`, else `<repo>/.cache`
/// (docs/samples.md says what they are).
///
/// Tests that read them carry the `.needsSampleData` trait: without the data they are reported as
/// *skipped*, never as passed, and `scripts/test` fails under `CI=true` when any test was skipped.
public enum SampleData {
    public static let cache: String = {
        if let env = ProcessInfo.processInfo.environment["MLA_CACHE"], !env.isEmpty { return env }
        return packageRoot + "/.cache"
    }()

    public static var modelPath: String { cache + "/sample.gguf" }
    public static var corpus: String { cache + "/corpus" }

    /// True when the sample model, the corpus (its Hamlet text) and the other folders of the default
    /// calibration mix (docs/, code/) are in the cache.
    public static var isAvailable: Bool {
        FileManager.default.fileExists(atPath: modelPath) && FileManager.default.fileExists(atPath: corpus + "/hamlet_gut.txt")
            && ["docs", "code"].allSatisfy { FileManager.default.fileExists(atPath: cache + "/" + $0) }
    }

    /// Why a test needing the data was skipped, as `swift test` prints it.
    public static var missingReason: String {
        "sample data missing in \(cache) (sample.gguf, corpus/, docs/, code/): run scripts/setup or set MLA_CACHE"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test only when the sample model and corpus are present; otherwise `swift test` lists
    /// it as skipped with the reason (and `scripts/test` fails under `CI=true`).
    public static var needsSampleData: Self {
        .enabled(if: SampleData.isAvailable, Comment(rawValue: SampleData.missingReason))
    }
}
