import Foundation
import MLATensor
import Testing
@testable import MLACheckpoint

/// A fresh temporary directory per call, removed by the caller with `cleanup`.
func temporaryDirectory(_ label: String = #function) -> String {
    let safe = label.filter { $0.isLetter || $0.isNumber }
    let path = NSTemporaryDirectory() + "mla-tests-\(safe)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func cleanup(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

func fixturePath(_ relative: String) -> String {
    Bundle.module.path(forResource: "Fixtures", ofType: nil)! + "/" + relative
}

/// Deterministic pseudo-random numbers for tests (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A tensor of `dtype` with random bytes (any bit pattern is a valid value for round trips).
func randomTensor(_ dtype: DType, _ shape: [Int], seed: UInt64) -> Tensor {
    var g = SeededGenerator(seed: seed)
    let count = Tensor.byteCount(dtype: dtype, shape: shape)!
    return Tensor(dtype: dtype, shape: shape, storage: .owned((0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }))
}

func bytes(of tensor: Tensor) -> [UInt8] { tensor.withRawBytes { Array($0) } }

/// Writes a safetensors file from a raw header string and data bytes (for crafted bad inputs).
func writeRawSafetensors(_ path: String, header: String, data: [UInt8], claimedLength: UInt64? = nil) {
    var out = [UInt8]()
    let h = Array(header.utf8)
    var n = (claimedLength ?? UInt64(h.count)).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    out += h + data
    FileManager.default.createFile(atPath: path, contents: Data(out))
}

/// The sample model fetched by scripts/setup (`$MLA_CACHE`, else `<repo>/.cache`); nil (and a
/// recorded failure when `CI=true`) if it is missing.
func sampleModelPath() -> String? {
    let env = ProcessInfo.processInfo.environment
    let cache = env["MLA_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path + "/.cache"
    let path = cache + "/sample.gguf"
    if FileManager.default.fileExists(atPath: path) { return path }
    if env["CI"] == "true" { Issue.record("sample model missing at \(path): run scripts/setup") }
    return nil
}
