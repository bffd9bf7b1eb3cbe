import MLATensor

/// Block encoders for the ggml types this toolkit writes: Q8_0 only, bit for bit as ggml's reference
/// `quantize_row_q8_0_ref` (which `llama-quantize` uses): per block of 32 consecutive values along a row,
/// d = amax / 127 in F32, stored as F16 (round to nearest even), and q = round(x · (1/d)) with the F32
/// reciprocal of the unrounded d, halves away from zero (C `roundf`); an all-zero block has d = 0, q = 0.
public enum GGMLQuantize {
    /// Values per Q8_0 block.
    public static let q8_0BlockValues = 32
    /// Bytes per Q8_0 block: an F16 scale and 32 signed bytes.
    public static let q8_0BlockBytes = 34

    /// The Q8_0 blocks of `values` (finite, a whole number of blocks), appended to `out`; or, appending
    /// nothing, the index of the first block whose scale overflows F16 (amax ≥ 127 · 65520).
    public static func q8_0(_ values: UnsafeBufferPointer<Float>, into out: inout [UInt8]) -> Int? {
        precondition(values.count % q8_0BlockValues == 0, "GGMLQuantize.q8_0: \(values.count) values is not a whole number of blocks")
        let blocks = values.count / q8_0BlockValues
        var scales = [Float](repeating: 0, count: blocks), halves = [UInt16](repeating: 0, count: blocks)
        for b in 0..<blocks {
            var amax: Float = 0
            for j in 0..<q8_0BlockValues { amax = max(amax, abs(values[b * q8_0BlockValues + j])) }
            scales[b] = amax / 127
        }
        scales.withUnsafeBufferPointer { s in halves.withUnsafeMutableBufferPointer { FloatConversion.floatToHalf(s, into: $0) } }
        if let overflow = halves.firstIndex(where: { $0 & 0x7c00 == 0x7c00 }) { return overflow }
        let start = out.count
        out += [UInt8](repeating: 0, count: blocks * q8_0BlockBytes)
        out.withUnsafeMutableBytes { raw in
            for b in 0..<blocks {
                let p = raw.baseAddress! + start + b * q8_0BlockBytes
                p.storeBytes(of: halves[b].littleEndian, as: UInt16.self)
                let id: Float = scales[b] != 0 ? 1 / scales[b] : 0
                for j in 0..<q8_0BlockValues {
                    let q = Int8((values[b * q8_0BlockValues + j] * id).rounded(.toNearestOrAwayFromZero))
                    p.storeBytes(of: q, toByteOffset: 2 + j, as: Int8.self)
                }
            }
        }
        return nil
    }
}
