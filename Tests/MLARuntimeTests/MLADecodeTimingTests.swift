@testable import MLARuntime
import MLATestSupport
import Testing

@Suite("MLA decode timing")
struct MLADecodeTimingTests {
    /// Times one decode step of a SmolLM2-sized layer (n_h 9, d 576, r 128, d_rope 32, d_nope = d_v = 64)
    /// in both forms over a filled latent cache, prints the times (no threshold: timing belongs to
    /// benchmarks), and checks that both forms give the same output at every length.
    @Test("absorbed vs naive (re-expanding) decode step at context 512 / 2048 / 8192")
    func decodeStepTiming() throws {
        let spec = MLASpec(name: "SmolLM2-sized", d: 576, nh: 9, dNope: 64, dRope: 32, dV: 64, r: 128,
                           headMap: Array(repeating: 0, count: 9),
                           freqs: [MLALayerWeights.deepSeekInvFreq(theta: 100_000, dRope: 32)])
        let w = spec.weights(seed: 31)
        var g = SplitMix64(seed: 32)
        let x = g.floats(spec.d, scale: 1)
        for context in [512, 2048, 8192] {
            var filled = MLAAttention.LatentCache(for: w)
            try filled.append(latent: g.floats(context * spec.r, scale: 1), ropeKeys: g.floats(context * spec.dRope, scale: 1),
                              tokens: context)
            var outputs: [MLAAttention.Form: [Float]] = [:]
            var timings: [String] = []
            for form in [MLAAttention.Form.absorbed, .naive] {
                let repeats = 3
                var best = Duration.seconds(1000)
                for _ in 0..<repeats {
                    var cache = filled
                    cache.reserveCapacity(tokens: context + 1)  // copy outside the timed region
                    let clock = ContinuousClock()
                    let start = clock.now
                    outputs[form] = try MLAAttention.decodeStep(w, x: x, position: context, cache: &cache, form: form)
                    best = min(best, clock.now - start)
                    #expect(cache.count == context + 1)
                }
                timings.append("\(form) \(best)")
            }
            print("MLA decode step, context \(context): \(timings.joined(separator: ", ")); cache \(filled.bytes) bytes")
            let absorbed = try #require(outputs[.absorbed]), naive = try #require(outputs[.naive])
            #expect(relativeError(absorbed, naive.map(Double.init)) < 1e-4)
        }
    }
}
