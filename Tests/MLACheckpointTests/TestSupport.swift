import Foundation
import MLATensor
import Testing
import MLATestSupport
@testable import MLACheckpoint

/// A fresh temporary directory per call, removed by the caller with `cleanup`.
func temporaryDirectory(_ label: String = #function) -> String {
    let safe = label.filter { $0.isLetter || $0.isNumber }
    let path = NSTemporaryDirectory() + "mla-tests-\(safe)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func cleanup(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// A tensor of `dtype` with random bytes (any bit pattern is a valid value for round trips).
func randomTensor(_ dtype: DType, _ shape: [Int], seed: UInt64) -> Tensor {
    var g = SplitMix64(seed: seed)
    let count = Tensor.byteCount(dtype: dtype, shape: shape)!
    return Tensor(dtype: dtype, shape: shape, storage: .owned((0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }))
}

/// `randomTensor` with every float value finite: the top exponent bit (0x40 of each value's last,
/// most significant byte in F64, F32, F16 and BF16) is cleared, since writers refuse the infinities
/// and NaNs random bits hold (`TensorPayload.checkFinite`). Other dtypes are unchanged.
func finiteRandomTensor(_ dtype: DType, _ shape: [Int], seed: UInt64) -> Tensor {
    var raw = bytes(of: randomTensor(dtype, shape, seed: seed))
    if dtype.isComputeFloat {
        for end in stride(from: dtype.byteSize - 1, to: raw.count, by: dtype.byteSize) { raw[end] &= ~0x40 }
    }
    return Tensor(dtype: dtype, shape: shape, storage: .owned(raw))
}

func bytes(of tensor: Tensor) -> [UInt8] { tensor.withRawBytes { Array($0) } }

/// Writes a safetensors file from a raw header string and data bytes (for crafted bad inputs).
func writeRawSafetensors(_ path: String, header: String, data: [UInt8], claimedLength: UInt64? = nil) {
    var out = [UInt8]()
    let h = Array(header.utf8)
    var n = (claimedLength ?? UInt64(h.count)).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    out += h + data
    _ = FileManager.default.createFile(atPath: path, contents: Data(out))
}
