/// Deterministic SplitMix64 stream (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, and
/// `split` gives independent streams for blocks computed in any order or on any thread. Used for the
/// random test matrices of the randomized factorizations, synthetic checkpoints and test data.
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

    /// A generator for sub-stream `index` of this one's seed (for example one per block of rows),
    /// independent of how many values this generator has produced.
    public func split(_ index: UInt64) -> SplitMix64 {
        var g = SplitMix64(seed: state ^ (index &* 0xD1B5_4A32_D192_ED03))
        return SplitMix64(seed: g.next())
    }

    /// Uniform in [-scale, scale).
    public mutating func float(_ scale: Float) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }

    public mutating func floats(_ count: Int, scale: Float) -> [Float] { (0..<count).map { _ in float(scale) } }

    /// Fills `buffer` with values uniform in [-scale, scale) (variance scale²/3), two 32-bit draws per
    /// 64-bit step (about 1 ns per value): the fast path for large random matrices.
    public mutating func fill(_ buffer: UnsafeMutableBufferPointer<Float>, scale: Float) {
        let unit = scale / 2_147_483_648
        var i = 0
        while i + 1 < buffer.count {
            let x = next()
            buffer[i] = Float(Int32(truncatingIfNeeded: x)) * unit
            buffer[i + 1] = Float(Int32(truncatingIfNeeded: x >> 32)) * unit
            i += 2
        }
        if i < buffer.count { buffer[i] = Float(Int32(truncatingIfNeeded: next())) * unit }
    }
}
