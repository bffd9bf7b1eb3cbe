@testable import MLARuntime
import MLATestSupport
import Testing

/// Tolerance for F32 against the float64 reference: the longest dot products have ~d + T terms of O(1)
/// values, so a few hundred u ≈ 1e-5 relative in the 2-norm.
private let f32Tolerance = 1e-5

@Suite("MLA attention")
struct MLAAttentionTests {
    static let tokens = 7

    static func input(_ spec: MLASpec, tokens: Int = tokens, seed: UInt64 = 99) -> [Float] {
        var g = SplitMix64(seed: seed)
        return g.floats(tokens * spec.d, scale: 1)
    }

    @Test("naive MLA equals the float64 reference", arguments: MLASpec.all)
    func naiveMatchesReference(spec: MLASpec) throws {
        let w = spec.weights(seed: 1)
        try w.validate()
        let x = Self.input(spec), positions = testPositions(Self.tokens)
        let y = try MLAAttention.naive(w, x: x, tokens: Self.tokens, positions: positions)
        let reference = referenceMLA(w, x: x, tokens: Self.tokens, positions: positions)
        let error = relativeError(y, reference)
        #expect(error < f32Tolerance, "relative error \(error)")
    }

    @Test("absorbed MLA equals naive and the reference", arguments: MLASpec.all)
    func absorbedMatchesNaive(spec: MLASpec) throws {
        let w = spec.weights(seed: 2)
        let x = Self.input(spec), positions = testPositions(Self.tokens)
        let naive = try MLAAttention.naive(w, x: x, tokens: Self.tokens, positions: positions)
        let absorbed = try MLAAttention.absorbed(w, x: x, tokens: Self.tokens, positions: positions)
        let reference = referenceMLA(w, x: x, tokens: Self.tokens, positions: positions)
        #expect(relativeError(absorbed, naive.map(Double.init)) < f32Tolerance)
        #expect(relativeError(absorbed, reference) < f32Tolerance)
    }

    @Test("decode with the latent cache reproduces prefill, and the cache holds r + n_rope·d_rope per token",
          arguments: MLASpec.all)
    func decodeMatchesPrefill(spec: MLASpec) throws {
        let w = spec.weights(seed: 3)
        let d = spec.d, tokens = Self.tokens
        let x = Self.input(spec), positions = testPositions(tokens)
        let reference = referenceMLA(w, x: x, tokens: tokens, positions: positions)
        for form in [MLAAttention.Form.absorbed, .naive] {
            // Prefill the first 3 tokens into the cache, then decode the rest one by one.
            var cache = MLAAttention.LatentCache(for: w)
            var outputs = try MLAAttention.prefill(w, x: Array(x[..<(3 * d)]), tokens: 3,
                                                   positions: Array(positions[..<3]), cache: &cache, form: form)
            for t in 3..<tokens {
                outputs += try MLAAttention.decodeStep(w, x: Array(x[(t * d)..<((t + 1) * d)]), position: positions[t],
                                                       cache: &cache, form: form)
            }
            #expect(relativeError(outputs, reference) < f32Tolerance, "form \(form)")
            #expect(cache.count == tokens)
            #expect(cache.valuesPerToken == spec.r + spec.nRope * spec.dRope)
            #expect(cache.bytes == tokens * (spec.r + spec.nRope * spec.dRope) * 4)
            #expect(cache.latent.count == tokens * spec.r)
        }
    }

    @Test("validate rejects bad shapes, odd d_rope and an out-of-range head map, naming the field")
    func validation() throws {
        let good = MLASpec.all[1].weights(seed: 4)
        try good.validate()

        var shortKVB = good
        shortKVB.kvB.removeLast()
        #expect(throws: MLAError.self) { try shortKVB.validate() }
        #expect(message(shortKVB).contains("kv_b_proj") && message(shortKVB).contains("model.layers.0.self_attn."))

        var badMap = good
        badMap.ropeHeadOfQueryHead[2] = 2
        #expect(message(badMap).contains("rope_head_of_query_head"))

        var odd = MLASpec.all[0]
        odd.dRope = 3
        odd.freqs = [[1]]
        #expect(message(odd.weights(seed: 5)).contains("dRope"))

        var badFreq = good
        badFreq.ropeInvFreq[1].removeLast()
        #expect(message(badFreq).contains("rope_inv_freq"))

        var badInput = [Float](repeating: 0, count: 5)
        badInput.removeLast()
        #expect(throws: MLAError.self) {
            _ = try MLAAttention.naive(good, x: badInput, tokens: 1, positions: [0])
        }
    }

    private func message(_ w: MLALayerWeights) -> String {
        do {
            try w.validate()
            return "valid"
        } catch {
            return String(describing: error)
        }
    }
}
