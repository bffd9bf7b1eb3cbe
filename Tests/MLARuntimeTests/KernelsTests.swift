import Foundation
import Testing
import MLATestSupport
@testable import MLARuntime

/// The vectorized element-wise kernels against float64 formulas. Tolerances: libmvec's expf is
/// within 4 ulp, and a row sum of n terms adds n·u (u = 2^-24).
@Suite struct KernelsTests {
    @Test func causalSoftmaxMatchesFloat64() {
        // 37 keys: vector lanes of 8 plus a scalar tail; 3 stacked blocks of 5 queries.
        let blocks = 3, queries = 5, keys = 37, scale: Float = 0.125
        var g = SplitMix64(seed: 5)
        let input = g.floats(blocks * queries * keys, scale: 40)
        var scores = input
        Kernels.causalSoftmax(&scores, queries: queries, keys: keys, scale: scale, blocks: blocks)
        for row in 0..<(blocks * queries) {
            let visible = keys - queries + row % queries + 1, base = row * keys
            let logits = (0..<visible).map { Double(input[base + $0]) * Double(scale) }
            let m = logits.max()!
            let sum = logits.reduce(0) { $0 + exp($1 - m) }
            for n in 0..<visible {
                #expect(abs(Double(scores[base + n]) - exp(logits[n] - m) / sum) <= Double(8 + keys) * 0x1p-24)
            }
            #expect(scores[(base + visible)..<(base + keys)].allSatisfy { $0 == 0 })
        }
    }

    /// The backward pass against the float64 formula, on the rows `causalSoftmax` leaves: 37 keys (vector
    /// lanes of 8 plus a scalar tail), 5 queries.
    @Test func causalSoftmaxBackwardMatchesFloat64() {
        let queries = 5, keys = 37, scale: Float = 0.125
        var g = SplitMix64(seed: 9)
        var p = g.floats(queries * keys, scale: 40)
        Kernels.causalSoftmax(&p, queries: queries, keys: keys, scale: scale)
        let upstream = g.floats(queries * keys, scale: 3)
        var dp = upstream
        p.withUnsafeBufferPointer { p in
            dp.withUnsafeMutableBufferPointer { Kernels.causalSoftmaxBackward(probabilities: p.baseAddress!, gradient: $0.baseAddress!, queries: queries, keys: keys, scale: scale) }
        }
        for i in 0..<queries {
            let visible = keys - queries + i + 1, base = i * keys
            let dot = (0..<visible).reduce(0.0) { $0 + Double(p[base + $1]) * Double(upstream[base + $1]) }
            for n in 0..<visible {
                let expected = Double(scale) * Double(p[base + n]) * (Double(upstream[base + n]) - dot)
                // The row sum's rounding (n·u of Σ|p·dp| ≤ max|dp|) times scale · p, plus the products' own.
                #expect(abs(Double(dp[base + n]) - expected) <= Double(8 + keys) * 0x1p-24 * 3 * Double(scale) * Double(p[base + n]) + 4 * 0x1p-24 * abs(expected))
            }
            #expect(dp[(base + visible)..<(base + keys)].allSatisfy { $0 == 0 })
        }
    }

    /// Adam's step against the same formula in Swift, one operation at a time in F32: every operation is
    /// IEEE-rounded (no fused product and sum), so both give the same bits; 1003 weights are vector lanes
    /// of 8 plus a scalar tail. Three steps, so that the moments carry over.
    @Test func adamStepMatchesItsFormulaExactly() {
        var g = SplitMix64(seed: 11)
        var weights = g.floats(1003, scale: 2), first = [Float](repeating: 0, count: 1003), second = first
        var expected = (weights: weights, first: first, second: second)
        let initial = weights
        let (beta1, beta2, scale, rate): (Float, Float, Float, Float) = (0.9, 0.999, 0.37, 0.01)
        for step in 1...3 {
            let gradient = g.floats(1003, scale: 5)
            let correction1 = 1 - pow(beta1, Float(step)), correction2 = 1 - pow(beta2, Float(step))
            Kernels.adamStep(weights: &weights, first: &first, second: &second, gradient: gradient, scale: scale,
                             beta1: beta1, beta2: beta2, correction1: correction1, correction2: correction2, rate: rate)
            for i in 0..<gradient.count {
                let gi = gradient[i] * scale
                expected.first[i] = beta1 * expected.first[i] + (1 - beta1) * gi
                expected.second[i] = beta2 * expected.second[i] + (1 - beta2) * gi * gi
                let m = expected.first[i] / correction1, v = expected.second[i] / correction2
                expected.weights[i] -= rate * m / (v.squareRoot() + 1e-30)
            }
            #expect(first == expected.first && second == expected.second && weights == expected.weights, "step \(step)")
        }
        #expect(zip(weights, initial).allSatisfy { $0 != $1 }, "every weight moved")
    }

    @Test func swiGLUMatchesFloat64() {
        var g = SplitMix64(seed: 6)
        let gate = g.floats(1003, scale: 20), up = g.floats(1003, scale: 3)
        var out = up
        Kernels.swiGLU(gate: gate, up: &out)
        for i in 0..<gate.count {
            let x = Double(gate[i]), expected = Double(up[i]) * x / (1 + exp(-x))
            #expect(abs(Double(out[i]) - expected) <= 8 * 0x1p-24 * max(abs(expected), 1e-30))
        }
    }

    /// d = 579: vector lanes of 4 (squares) and 8 (products) plus scalar tails.
    @Test func rmsNormMatchesFloat64() {
        let tokens = 7, d = 579, eps = 1e-5
        var g = SplitMix64(seed: 7)
        let x = g.floats(tokens * d, scale: 30), weight = g.floats(d, scale: 2)
        let y = Kernels.rmsNorm(x, tokens: tokens, weight: weight, eps: eps)
        #expect(y.count == tokens * d)
        for t in 0..<tokens {
            let row = x[(t * d)..<((t + 1) * d)].map(Double.init)
            let inv = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(d) + eps).squareRoot()
            for i in 0..<d {
                let expected = Double(weight[i]) * row[i] * inv
                #expect(abs(Double(y[t * d + i]) - expected) <= 4 * 0x1p-24 * abs(expected), "row \(t), column \(i)")
            }
        }
    }

    /// Blocked causal attention (query blocks of 128 against the keys they see) equals the plain
    /// masked formula, for a fresh window of 300 (two full blocks and a partial one) and for 200 new
    /// queries after 100 cached keys.
    @Test(arguments: [(300, 300), (200, 300)])
    func blockedCausalAttentionMatchesFloat64(queries tq: Int, keys tk: Int) {
        let dk = 16, dv = 8, scale: Float = 0.25
        var g = SplitMix64(seed: 7)
        let q = g.floats(tq * dk, scale: 1), k = g.floats(tk * dk, scale: 1), v = g.floats(tk * dv, scale: 1)
        var out = [Float](repeating: .nan, count: tq * dv), scores = [Float](repeating: 0, count: 128 * tk)
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    scores.withUnsafeMutableBufferPointer { sp in
                        out.withUnsafeMutableBufferPointer { op in
                            Kernels.causalAttentionHead(q: qp.baseAddress!, qStride: dk, k: kp.baseAddress!, kStride: dk,
                                                        v: vp.baseAddress!, vStride: dv, queries: tq, keys: tk, dk: dk, dv: dv, scale: scale,
                                                        scores: sp.baseAddress!, out: op.baseAddress!, outStride: dv)
                        }
                    }
                }
            }
        }
        for m in 0..<tq {
            let position = tk - tq + m
            let logits = (0...position).map { n in (0..<dk).reduce(0.0) { $0 + Double(q[m * dk + $1]) * Double(k[n * dk + $1]) } * Double(scale) }
            let top = logits.max()!
            let weights = logits.map { exp($0 - top) }, sum = weights.reduce(0, +)
            for c in 0..<dv {
                let expected = (0...position).reduce(0.0) { $0 + weights[$1] / sum * Double(v[$1 * dv + c]) }
                #expect(abs(Double(out[m * dv + c]) - expected) < 1e-5, "query \(m) at position \(position)")
            }
        }
    }
}
