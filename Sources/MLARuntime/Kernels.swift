import CKernels
import Foundation
import MLALinalg

/// Small dense kernels on row-major F32 buffers shared by the attention implementations.
public enum Kernels {
    /// y[T × out] = x[T × in] · Wᵀ (+ bias), W row-major [out × in] as stored in checkpoints.
    public static func linear(_ x: [Float], tokens: Int, weight: [Float], outFeatures: Int, inFeatures: Int,
                              bias: [Float]? = nil) -> [Float] {
        guard tokens > 0, outFeatures > 0, inFeatures > 0 else {
            var y = [Float](repeating: 0, count: tokens * outFeatures)
            if let bias { for t in 0..<tokens { for o in 0..<outFeatures { y[t * outFeatures + o] = bias[o] } } }
            return y
        }
        // beta = 0: the GEMM writes every entry of y without reading it, so y starts uninitialized.
        var y = [Float](unsafeUninitializedCapacity: tokens * outFeatures) { yp, count in
            x.withUnsafeBufferPointer { xp in
                weight.withUnsafeBufferPointer { wp in
                    Float.gemm(transA: false, transB: true, m: tokens, n: outFeatures, k: inFeatures, alpha: 1,
                               a: xp.baseAddress!, lda: inFeatures, b: wp.baseAddress!, ldb: inFeatures,
                               beta: 0, c: yp.baseAddress!, ldc: outFeatures)
                }
            }
            count = tokens * outFeatures
        }
        if let bias {
            for t in 0..<tokens {
                for o in 0..<outFeatures { y[t * outFeatures + o] += bias[o] }
            }
        }
        return y
    }

    /// RMSNorm of each row of x [T × d]: w ⊙ x / sqrt(mean(x²) + eps), accumulated in Double
    /// (`ck_rms_norm`, AVX2 when the CPU has it).
    public static func rmsNorm(_ x: [Float], tokens: Int, weight: [Float], eps: Double) -> [Float] {
        let d = weight.count
        precondition(x.count >= tokens * d, "rmsNorm: \(x.count) values for \(tokens) × \(d)")
        guard tokens > 0, d > 0 else { return [] }
        return [Float](unsafeUninitializedCapacity: tokens * d) { y, count in
            x.withUnsafeBufferPointer { xp in
                weight.withUnsafeBufferPointer { wp in
                    ck_rms_norm(xp.baseAddress!, wp.baseAddress!, y.baseAddress!, tokens, d, eps)
                }
            }
            count = tokens * d
        }
    }

    /// Applies rotate-half RoPE in place to `heads` heads of width `headDim` in each row of x
    /// [T × rowWidth] (heads start at column 0). `cos`/`sin` are [T × headDim/2].
    public static func applyRotateHalf(_ x: inout [Float], tokens: Int, rowWidth: Int, heads: Int, headDim: Int,
                                       cos: [Float], sin: [Float]) {
        let half = headDim / 2
        for t in 0..<tokens {
            for h in 0..<heads {
                let base = t * rowWidth + h * headDim
                for l in 0..<half {
                    let c = cos[t * half + l], s = sin[t * half + l]
                    let a = x[base + l], b = x[base + l + half]
                    x[base + l] = a * c - b * s
                    x[base + l + half] = b * c + a * s
                }
            }
        }
    }

    /// Causal softmax attention for one head: out[tq × dv] (written with stride `outStride` at `out`)
    /// = softmax(scale · q kᵀ, masked) · v, with q [tq × dk] (stride qStride), k [tk × dk] (stride
    /// kStride), v [tk × dv] (stride vStride), tq ≤ tk: the queries are the last tq of the tk positions,
    /// so query i sees keys 0...tk − tq + i (tq = tk for a fresh window).
    ///
    /// Queries go in blocks of `block` rows, each against only the keys it can see, which skips most
    /// of the masked upper triangle: 62 % of the full T × T products at T = 512 in blocks of 128.
    /// `scores` is caller-provided scratch of min(tq, block) × tk; with `keepsScores` it must hold every
    /// block's probabilities instead, and keeps them packed one after another (block b as [its rows ×
    /// its visible keys], masked entries 0), for a backward pass to read.
    public static func causalAttentionHead(q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, kStride: Int,
                                           v: UnsafePointer<Float>, vStride: Int, queries tq: Int, keys tk: Int, dk: Int, dv: Int,
                                           scale: Float, block: Int = causalBlock, scores: UnsafeMutablePointer<Float>,
                                           keepsScores: Bool = false, out: UnsafeMutablePointer<Float>, outStride: Int) {
        precondition(tq <= tk && block > 0, "causalAttentionHead: \(tq) queries need at least as many keys (got \(tk)) and blocks of at least 1 row")
        var blockScores = scores
        for first in stride(from: 0, to: tq, by: block) {
            let queries = min(block, tq - first), keys = tk - tq + first + queries
            Float.gemm(transA: false, transB: true, m: queries, n: keys, k: dk, alpha: 1, a: q + first * qStride, lda: qStride,
                       b: k, ldb: kStride, beta: 0, c: blockScores, ldc: keys)
            causalSoftmax(UnsafeMutableBufferPointer(start: blockScores, count: queries * keys), queries: queries, keys: keys, scale: scale)
            Float.gemm(transA: false, transB: false, m: queries, n: dv, k: keys, alpha: 1, a: blockScores, lda: keys, b: v, ldb: vStride,
                       beta: 0, c: out + first * outStride, ldc: outStride)
            if keepsScores { blockScores += queries * keys }
        }
    }

    /// Query rows per block in `causalAttentionHead` by default (measured against 64 and 256 in the
    /// refinement, docs/performance.md).
    public static let causalBlock = 128

    /// Causal softmax of score rows in place. Row i of each `[queries, keys]` block belongs to key
    /// position keys − queries + i (the queries are the last `queries` positions): scales by `scale`
    /// (positive), gives later keys probability 0 and normalises each row (max-subtracted
    /// exponentials). `scores` holds `blocks` such blocks one after another (e.g. one per stacked
    /// head). Vectorized in C (AVX2 and glibc's vector expf, see CKernels): the scalar Swift loop
    /// with one `expf` call per score took 8 % of a 512-token forward pass's CPU samples (perf), the
    /// vector kernel and its share of the vector expf about 1.5 %.
    public static func causalSoftmax(_ scores: UnsafeMutableBufferPointer<Float>, queries: Int, keys: Int, scale: Float,
                                     blocks: Int = 1) {
        precondition(scores.count >= blocks * queries * keys && queries <= keys, "causalSoftmax: \(scores.count) scores for \(blocks)×\(queries)×\(keys)")
        guard let base = scores.baseAddress else { return }
        ck_causal_softmax(base, blocks, queries, keys, scale)
    }

    /// `causalSoftmax` on an array.
    public static func causalSoftmax(_ scores: inout [Float], queries: Int, keys: Int, scale: Float, blocks: Int = 1) {
        scores.withUnsafeMutableBufferPointer { causalSoftmax($0, queries: queries, keys: keys, scale: scale, blocks: blocks) }
    }

    /// The causal softmax's backward pass on one `[queries, keys]` block of `causalSoftmax`'s rows, in
    /// place: with `probabilities` P (the softmax of scale · S) and `gradient` dP = ∂E/∂P, each row's
    /// visible entries become dS = ∂E/∂S = scale · P ⊙ (dP − Σ_visible P ⊙ dP), the entries past them 0.
    /// Vectorized in C like `causalSoftmax`.
    public static func causalSoftmaxBackward(probabilities: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, queries: Int, keys: Int,
                                             scale: Float) {
        precondition(queries <= keys, "causalSoftmaxBackward: \(queries) queries for \(keys) keys")
        ck_causal_softmax_backward(probabilities, gradient, queries, keys, scale)
    }

    /// One Adam step (Kingma & Ba) in place on `weights`, with moments `first` and `second` and `gradient`
    /// (all of one length): with g = gradient · `scale`, first ← β₁·first + (1 − β₁)·g, second ← β₂·second +
    /// (1 − β₂)·g², weights ← weights − rate · (first / c₁) / (√(second / c₂) + 10⁻³⁰), c₁ and c₂ the bias
    /// corrections. Vectorized in C like `causalSoftmax`: Swift's loop ran one square root and two
    /// divisions at a time, about 1 ms per step of a sample layer, while the other core waited.
    public static func adamStep(weights: inout [Float], first: inout [Float], second: inout [Float], gradient: [Float], scale: Float,
                                beta1: Float, beta2: Float, correction1: Float, correction2: Float, rate: Float) {
        precondition(gradient.count == weights.count && first.count == weights.count && second.count == weights.count,
                     "adamStep: a gradient or moment does not fit its weight")
        let count = weights.count
        ck_adam_step(&weights, &first, &second, gradient, count, scale, beta1, beta2, correction1, correction2, rate)
    }

    /// SwiGLU gating in place: up[i] ← up[i] · silu(gate[i]), silu(g) = g / (1 + e^(−g)) (vectorized
    /// in C like `causalSoftmax`).
    public static func swiGLU(gate: [Float], up: inout [Float]) {
        precondition(gate.count == up.count, "swiGLU: \(gate.count) gates for \(up.count) values")
        gate.withUnsafeBufferPointer { g in
            up.withUnsafeMutableBufferPointer { u in
                if let gp = g.baseAddress, let up = u.baseAddress { ck_silu_mul(gp, up, u.count) }
            }
        }
    }
}
