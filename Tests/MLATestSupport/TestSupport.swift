import Foundation
import Testing

/// Deterministic SplitMix64 stream for synthetic test data (no global state); shared by every test target.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    public mutating func float(_ scale: Float) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }

    public mutating func floats(_ count: Int, scale: Float) -> [Float] { (0..<count).map { _ in float(scale) } }
}

/// The sample model and corpus fetched by `scripts/setup`: `$MLA_CACHE`, else `<repo>/.cache`.
/// With `CI=true` missing data is a test failure; elsewhere real-data tests are skipped.
public enum SampleData {
    public static let cache: String = {
        if let env = ProcessInfo.processInfo.environment["MLA_CACHE"], !env.isEmpty { return env }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/.cache"
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
