import CF16

/// Conversions between F32 and the 16-bit float formats. All are exact when widening; narrowing
/// rounds to nearest even and keeps NaNs NaN. F16 uses the CPU's F16C instructions when present
/// (about 7 G elements/s against 0.3–0.8 for Swift's software `Float16` conversion on x86_64).
public enum FloatConversion {
    /// BF16 bit pattern → F32 (exact: the top 16 bits of the F32).
    @inlinable
    public static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// F32 → BF16 bit pattern, round to nearest even; NaN stays a quiet NaN.
    @inlinable
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let u = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: (u >> 16) | 0x0040) }
        return UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    /// F16 bit patterns → F32.
    public static func halfToFloat(_ src: UnsafeBufferPointer<UInt16>, into dst: UnsafeMutableBufferPointer<Float>) {
        precondition(dst.count >= src.count, "halfToFloat: destination too small")
        guard let s = src.baseAddress, let d = dst.baseAddress else { return }
        cf16_half_to_float(s, d, src.count)
    }

    /// F32 → F16 bit patterns (round to nearest even, overflow to infinity).
    public static func floatToHalf(_ src: UnsafeBufferPointer<Float>, into dst: UnsafeMutableBufferPointer<UInt16>) {
        precondition(dst.count >= src.count, "floatToHalf: destination too small")
        guard let s = src.baseAddress, let d = dst.baseAddress else { return }
        cf16_float_to_half(s, d, src.count)
    }

    /// The index of the first infinity or NaN among the little-endian values of `dtype` in `raw`, or
    /// nil when every value is finite or `dtype` is not a float type. F32, BF16 and F16 are checked
    /// in C on the bit patterns (vectorized; docs/performance.md has the cost), F64 here.
    public static func firstNonFinite(_ raw: UnsafeRawBufferPointer, dtype: DType) -> Int? {
        let n = raw.count / dtype.byteSize
        guard let base = raw.baseAddress, n > 0 else { return nil }
        let found: Int
        switch dtype {
        case .f32: found = cf16_first_nonfinite(base, n, 4, 0x7F80_0000)
        case .bf16: found = cf16_first_nonfinite(base, n, 2, 0x7F80)
        case .f16: found = cf16_first_nonfinite(base, n, 2, 0x7C00)
        case .f64: found = (0..<n).first { !raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self).isFinite } ?? n
        default: return nil
        }
        return found < n ? found : nil
    }

    /// Whether the F16C fast path is active on this CPU.
    public static var hasF16C: Bool { cf16_has_f16c() != 0 }

    /// Widens raw little-endian values of a float dtype into `out` (count = raw bytes / dtype size).
    public static func widen(_ raw: UnsafeRawBufferPointer, dtype: DType, into out: UnsafeMutableBufferPointer<Float>) {
        let n = raw.count / dtype.byteSize
        precondition(out.count >= n, "widen: destination too small")
        switch dtype {
        case .f32:
            if n > 0 { out.baseAddress!.update(from: raw.bindMemory(to: Float.self).baseAddress!, count: n) }
        case .f64:
            for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        case .bf16:
            if n > 0 { cf16_bf16_to_float(raw.baseAddress!, out.baseAddress!, n) }
        case .f16:
            if let base = raw.baseAddress, Int(bitPattern: base) % 2 == 0 {
                halfToFloat(UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt16.self), count: n), into: out)
            } else {
                let copy = (0..<n).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) }
                copy.withUnsafeBufferPointer { halfToFloat($0, into: out) }
            }
        default:
            preconditionFailure("widen: \(dtype) is not a float type")
        }
    }

    /// Narrows F32 values to the little-endian bytes of `dtype` (F32, F16, BF16 or F64).
    public static func narrow(_ values: [Float], to dtype: DType) -> [UInt8] {
        switch dtype {
        case .f32:
            return values.withUnsafeBytes { Array($0) }
        case .f64:
            return values.map(Double.init).withUnsafeBytes { Array($0) }
        case .bf16:
            return [UInt8](unsafeUninitializedCapacity: 2 * values.count) { bytes, count in
                values.withUnsafeBufferPointer { if let src = $0.baseAddress { cf16_float_to_bf16(src, bytes.baseAddress!, $0.count) } }
                count = 2 * values.count
            }
        case .f16:
            var halves = [UInt16](repeating: 0, count: values.count)
            values.withUnsafeBufferPointer { src in halves.withUnsafeMutableBufferPointer { floatToHalf(src, into: $0) } }
            return halves.withUnsafeBytes { Array($0) }
        default:
            preconditionFailure("narrow: \(dtype) is not a float type")
        }
    }
}
