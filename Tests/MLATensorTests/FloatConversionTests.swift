import MLATestSupport
import Testing
@testable import MLATensor

@Suite struct FloatConversionTests {
    /// All 65 536 half patterns widen exactly as Swift's own `Float16` conversion does.
    @Test func halfWideningMatchesSwiftFloat16ForEveryPattern() {
        let patterns = (0...UInt16.max).map { $0 }
        var out = [Float](repeating: 0, count: patterns.count)
        patterns.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { FloatConversion.halfToFloat(src, into: $0) } }
        for (bits, value) in zip(patterns, out) {
            let expected = Float(Float16(bitPattern: bits))
            #expect(value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN), "pattern \(bits)")
        }
    }

    /// Narrowing equals `Float16(x)` (round to nearest even) on specials, halfway cases and random floats.
    @Test func halfNarrowingMatchesSwiftFloat16() {
        var values: [Float] = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e9, -1e9, .infinity, -.infinity, .nan,
                               0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-14, 0x1.ffcp-15, 5.9604645e-08, 1.0009765625, 1.00048828125,
                               1.00146484375, Float.leastNonzeroMagnitude, Float.greatestFiniteMagnitude]
        var g = SystemRandomNumberGenerator()
        values += (0..<200_000).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &g)) }
        var halves = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in halves.withUnsafeMutableBufferPointer { FloatConversion.floatToHalf(src, into: $0) } }
        for (v, h) in zip(values, halves) {
            let expected = Float16(v)
            if v.isNaN { #expect(Float16(bitPattern: h).isNaN) } else { #expect(h == expected.bitPattern, "value \(v)") }
        }
    }

    /// BF16 narrowing = round to nearest even on the top 16 bits, checked against an independent
    /// Double computation of the two neighbouring BF16 values.
    @Test func bf16RoundToNearestEven() {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<100_000 {
            let x = Float(bitPattern: UInt32.random(in: 0..<0x7F7F_0000, using: &g)) * (Bool.random(using: &g) ? 1 : -1)
            let bits = FloatConversion.floatToBF16(x)
            let lower = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
            let upper = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
            let dl = abs(Double(x) - Double(lower)), du = abs(Double(upper) - Double(x))
            let expected: Float
            if dl < du { expected = lower } else if du < dl { expected = upper }
            else { expected = (lower.bitPattern >> 16) & 1 == 0 ? lower : upper }
            #expect(FloatConversion.bf16ToFloat(bits).bitPattern == expected.bitPattern, "value \(x)")
        }
        // Above the largest BF16 by at least half an ulp rounds to infinity, as IEEE overflow does.
        #expect(FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(Float(bitPattern: 0x7F7F_8000))) == .infinity)
        #expect(FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(Float(bitPattern: 0x7F7F_7FFF))).bitPattern == 0x7F7F_0000)
        #expect(FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(.nan)).isNaN)
        #expect(FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(.infinity)) == .infinity)
    }

    /// The vectorized BF16 paths (`widen`, `narrow`) give the scalar conversions' bits for every kind
    /// of value (NaNs, infinities, subnormals, the rounding boundaries), from and to unaligned bytes,
    /// with a scalar tail (count not a multiple of 8).
    @Test func bulkBF16MatchesScalar() {
        var state: UInt64 = 11  // a 64-bit LCG: every 32-bit pattern is as likely
        var values = (0..<100_003).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(bitPattern: UInt32(truncatingIfNeeded: state >> 32))
        }
        values += [.nan, -.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, Float(bitPattern: 0x7F7F_8000),
                   Float(bitPattern: 0x7F7F_7FFF), Float(bitPattern: 0xFFFF_FFFF), Float(bitPattern: 0x3F80_8000)]
        let narrowed = FloatConversion.narrow(values, to: .bf16)
        let scalar = values.map(FloatConversion.floatToBF16)
        #expect(differingCount(narrowed, scalar.withUnsafeBytes { Array($0) }) == 0)
        // Widen from an odd address: one byte of padding in front.
        let shifted = [UInt8(0)] + narrowed
        var widened = [Float](repeating: 0, count: values.count)
        shifted.withUnsafeBytes { raw in
            widened.withUnsafeMutableBufferPointer { FloatConversion.widen(UnsafeRawBufferPointer(rebasing: raw[1...]), dtype: .bf16, into: $0) }
        }
        #expect(differingCount(widened.map(\.bitPattern), scalar.map { FloatConversion.bf16ToFloat($0).bitPattern }) == 0)
    }

    @Test func tensorConversionsRoundTrip() {
        let values: [Float] = [1.5, -2.25, 0, 1024, 3.140625]
        let t = Tensor(floats: values, shape: [5])
        for dt in [DType.f16, .bf16, .f64, .f32] {
            #expect(t.converted(to: dt).converted(to: .f32).floats() == values, "\(dt)")
            #expect(t.converted(to: dt).byteCount == 5 * dt.byteSize)
        }
        #expect(Tensor(doubles: [0.1], shape: [1]).floats() == [Float(0.1)])
    }
}
