import MLATensor

/// Block decoders for the ggml types this toolkit reads (docs/formats.md "GGUF").
///
/// Every decoder computes in F32 in ggml's order without fused multiply-add (d1 = d·sc and
/// m1 = dmin·mn first, then d1·q − m1; d·q + m for the offset types), which makes the output
/// bit-identical to ggml and to gguf-py's `quants.dequantize`. Loops run over raw block bytes with
/// unaligned loads (blocks of 18 or 22 bytes leave fields unaligned) and write straight into the
/// destination: no allocation per block or element.
public enum GGMLDequantize {
    /// Decodes `raw` (a whole number of blocks of `type`) into `out`, which must hold
    /// raw.count / blockBytes × blockElements floats. `type.decodedDType` must not be nil; callers
    /// check both (they are our invariants, not input properties).
    public static func decode(_ raw: UnsafeRawBufferPointer, type: GGMLType, into out: UnsafeMutableBufferPointer<Float>) {
        let (blockElements, blockBytes) = type.blockLayout
        precondition(raw.count % blockBytes == 0, "GGMLDequantize: \(raw.count) bytes is not a whole number of \(type.name) blocks")
        let blocks = raw.count / blockBytes
        precondition(out.count >= blocks * blockElements, "GGMLDequantize: destination too small for \(blocks) \(type.name) blocks")
        guard blocks > 0, let src = raw.baseAddress, let dst = out.baseAddress else { return }
        switch type {
        case .f32:
            for i in 0..<blocks { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f64:
            for i in 0..<blocks { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case .f16:
            FloatConversion.widen(raw, dtype: .f16, into: out)
        case .bf16:
            FloatConversion.widen(raw, dtype: .bf16, into: out)
        case .q4_0: q4_0(src, blocks, dst)
        case .q4_1: q4_1(src, blocks, dst)
        case .q5_0: q5_0(src, blocks, dst)
        case .q5_1: q5_1(src, blocks, dst)
        case .q8_0: q8_0(src, blocks, dst)
        case .q4_K: q4_K(src, blocks, dst)
        case .q6_K: q6_K(src, blocks, dst)
        default:
            preconditionFailure("GGMLDequantize: \(type.name) has no decoder; callers must check decodedDType")
        }
    }

    /// An f16 field widened to F32 (exact).
    @inline(__always)
    static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    @inline(__always)
    static func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    /// [d f16, qs 16 B]: y[j] = d·((qs[j]&15) − 8), y[j+16] = d·((qs[j]>>4) − 8).
    static func q4_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 18 * b, o = dst + 32 * b
            let d = half(p, 0)
            for j in 0..<16 {
                let q = byte(p, 2 + j)
                o[j] = d * Float(Int32(q & 15) - 8)
                o[j + 16] = d * Float(Int32(q >> 4) - 8)
            }
        }
    }

    /// [d f16, m f16, qs 16 B]: y[j] = d·(qs[j]&15) + m, y[j+16] = d·(qs[j]>>4) + m.
    static func q4_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 20 * b, o = dst + 32 * b
            let d = half(p, 0), m = half(p, 2)
            for j in 0..<16 {
                let q = byte(p, 4 + j)
                o[j] = d * Float(q & 15) + m
                o[j + 16] = d * Float(q >> 4) + m
            }
        }
    }

    /// The 5-bit values of elements j and j+16 of a Q5 block: low nibbles from qs[j], bit e of qh on top.
    @inline(__always)
    static func q5Pair(_ qs: UInt8, _ qh: UInt32, _ j: Int) -> (UInt32, UInt32) {
        let q = UInt32(qs)
        return ((q & 15) | ((qh >> UInt32(j)) & 1) << 4, (q >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4)
    }

    /// [d f16, qh u32, qs 16 B]: y = d·(q − 16) with the 5-bit q of `q5Pair`.
    static func q5_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 22 * b, o = dst + 32 * b
            let d = half(p, 0)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let (lo, hi) = q5Pair(byte(p, 6 + j), qh, j)
                o[j] = d * Float(Int32(lo) - 16)
                o[j + 16] = d * Float(Int32(hi) - 16)
            }
        }
    }

    /// [d f16, m f16, qh u32, qs 16 B]: y = d·q + m with the 5-bit q of `q5Pair`.
    static func q5_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 24 * b, o = dst + 32 * b
            let d = half(p, 0), m = half(p, 2)
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            for j in 0..<16 {
                let (lo, hi) = q5Pair(byte(p, 8 + j), qh, j)
                o[j] = d * Float(lo) + m
                o[j + 16] = d * Float(hi) + m
            }
        }
    }

    /// [d f16, 32 × i8]: y = d·q.
    static func q8_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 34 * b, o = dst + 32 * b
            let d = half(p, 0)
            for j in 0..<32 {
                o[j] = d * Float(p.load(fromByteOffset: 2 + j, as: Int8.self))
            }
        }
    }

    /// [d f16, dmin f16, 12 B of packed 6-bit scales/mins, qs 128 B]; 8 sub-blocks of 32.
    static func q4_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 144 * b, o = dst + 256 * b
            let d = half(p, 0), dmin = half(p, 2)
            let sb = p + 4, qs = p + 16
            for c in 0..<4 {
                let (sc0, mn0) = scaleMin(sb, 2 * c)
                let (sc1, mn1) = scaleMin(sb, 2 * c + 1)
                let d0 = d * Float(sc0), m0 = dmin * Float(mn0)
                let d1 = d * Float(sc1), m1 = dmin * Float(mn1)
                let q = qs + 32 * c, y = o + 64 * c
                for l in 0..<32 {
                    let v = byte(q, l)
                    y[l] = d0 * Float(v & 15) - m0
                    y[l + 32] = d1 * Float(v >> 4) - m1
                }
            }
        }
    }

    /// The 6-bit scale and min of Q4_K sub-block `s` (ggml `get_scale_min_k4`).
    @inline(__always)
    static func scaleMin(_ sb: UnsafeRawPointer, _ s: Int) -> (UInt8, UInt8) {
        if s < 4 {
            return (byte(sb, s) & 63, byte(sb, s + 4) & 63)
        }
        let sc = (byte(sb, s + 4) & 15) | (byte(sb, s - 4) >> 6) << 4
        let mn = (byte(sb, s + 4) >> 4) | (byte(sb, s) >> 6) << 4
        return (sc, mn)
    }

    /// [ql 128 B, qh 64 B, 16 × i8 scales, d f16 last]; y[i] = (d·scales[i/16])·(q − 32).
    static func q6_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + 210 * b, o = dst + 256 * b
            let d = half(p, 208)
            for h in 0..<2 {
                let ql = p + 64 * h, qh = p + 128 + 32 * h, y = o + 128 * h
                for l in 0..<32 {
                    let lo0 = byte(ql, l), lo1 = byte(ql, l + 32), hb = byte(qh, l)
                    let q0 = Int32((lo0 & 15) | (hb & 3) << 4) - 32
                    let q1 = Int32((lo1 & 15) | ((hb >> 2) & 3) << 4) - 32
                    let q2 = Int32((lo0 >> 4) | ((hb >> 4) & 3) << 4) - 32
                    let q3 = Int32((lo1 >> 4) | ((hb >> 6) & 3) << 4) - 32
                    let s = 192 + 8 * h + l / 16
                    y[l] = d * Float(p.load(fromByteOffset: s, as: Int8.self)) * Float(q0)
                    y[l + 32] = d * Float(p.load(fromByteOffset: s + 2, as: Int8.self)) * Float(q1)
                    y[l + 64] = d * Float(p.load(fromByteOffset: s + 4, as: Int8.self)) * Float(q2)
                    y[l + 96] = d * Float(p.load(fromByteOffset: s + 6, as: Int8.self)) * Float(q3)
                }
            }
        }
    }
}
