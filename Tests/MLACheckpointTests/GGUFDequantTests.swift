import MLACheckpoint
import MLATensor
import Testing

/// Block decoders against gguf-py 0.19.0 `quants.dequantize` on random blocks (fixtures/gguf/make_fixtures.py).
@Suite("GGUF dequantization")
struct GGUFDequantTests {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q6_K]

    @Test("bit-exact against gguf-py", arguments: types)
    func matchesGGUFPy(type: GGMLType) throws {
        let raw = try GGUFTestSupport.bytes("dequant_\(type.name).raw")
        let expected = try GGUFTestSupport.floats("dequant_\(type.name).f32")
        let (elements, bytes) = type.blockLayout
        #expect(raw.count % bytes == 0)
        #expect(expected.count == raw.count / bytes * elements)
        var out = [Float](repeating: .nan, count: expected.count)
        raw.withUnsafeBytes { r in out.withUnsafeMutableBufferPointer { GGMLDequantize.decode(r, type: type, into: $0) } }
        let mismatches = zip(out, expected).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(mismatches.isEmpty, "\(type.name): \(mismatches.count) of \(out.count) differ, first \(mismatches.prefix(3))")
        if type.blockLayout.elements > 1 {
            // The fixture's second block is all zeros: scales 0 decode to exact zeros.
            #expect(out[elements..<(2 * elements)].allSatisfy { $0 == 0 })
        }
    }

    @Test("block table matches gguf-py GGML_QUANT_SIZES")
    func blockTable() {
        // Values copied from gguf-py constants.py (independent source), spot-checking every supported type.
        let table: [(GGMLType, UInt32, Int, Int)] = [
            (.f32, 0, 1, 4), (.f16, 1, 1, 2), (.q4_0, 2, 32, 18), (.q4_1, 3, 32, 20), (.q5_0, 6, 32, 22),
            (.q5_1, 7, 32, 24), (.q8_0, 8, 32, 34), (.q4_K, 12, 256, 144), (.q6_K, 14, 256, 210), (.bf16, 30, 1, 2),
            (.q2_K, 10, 256, 84), (.iq4_XS, 23, 256, 136), (.f64, 28, 1, 8), (.mxfp4, 39, 32, 17),
        ]
        for (type, id, elements, bytes) in table {
            #expect(type.rawValue == id)
            #expect(type.blockLayout == (elements, bytes), "\(type.name)")
        }
        #expect(GGMLType.q4_1.name == "Q4_1")
        #expect(GGMLType.q4_1.rowBytes(elements: 576) == 360)
        #expect(GGMLType.q4_1.rowBytes(elements: 100) == nil)
    }
}
