/// The gradient of an MLA layer's squared output error through its real softmax (docs/method.md §6.c),
/// for refining a converted layer's weights by gradient steps (`AttentionRefinement` in MLAConvert).
///
/// On one window of T tokens at positions 0..<T, attending causally to each other, with the layer's
/// attention input x `[T, d]` and a target `[T, d]` (the source layer's attention output):
///
///     E(θ) = Σ_t ‖y_t(θ) − target_t‖²,   y = the naive MLA forward (`MLAAttention.naive`)
///
/// θ are the weights that make the cache and read it: `kvA` (the latent), `kvB` (W_UK and W_UV),
/// `kRope` (the rope key) and `oProj`. The query and the biases are held fixed. Backward through the
/// softmax per head, with P = softmax(τ S) row-wise over the visible keys:
///
///     dV_h = P_hᵀ dU_h,  dP_h = dU_h V_hᵀ,  dS_h = τ P_h ⊙ (dP_h − rowsum(P_h ⊙ dP_h)),  dK_h = dS_hᵀ Q_h,
///
/// then through the up-projections to the latent and kvA, and through the (orthogonal, scaled) RoPE
/// rotation to kRope. Every product is a GEMM. Needs a layer without a latent norm (conversions make
/// one only at export, docs/method.md §8.b).
extension MLAAttention {
    /// Gradients of E with respect to the refined weights, each the shape of the weight it belongs to,
    /// and E itself.
    public struct OutputErrorGradient: Sendable {
        /// [r, d].
        public var kvA: [Float]
        /// [n_h·(dNope+dV), r].
        public var kvB: [Float]
        /// [nRopeHeads·dRope, d].
        public var kRope: [Float]
        /// [d, n_h·dV].
        public var oProj: [Float]
        /// E = Σ_t ‖y_t − target_t‖² over the window.
        public var error: Double

        /// All zero for `weights`' shapes (a sum to add windows' gradients into).
        public init(zeroFor weights: MLALayerWeights) {
            kvA = [Float](repeating: 0, count: weights.kvA.count)
            kvB = [Float](repeating: 0, count: weights.kvB.count)
            kRope = [Float](repeating: 0, count: weights.kRope.count)
            oProj = [Float](repeating: 0, count: weights.oProj.count)
            error = 0
        }

        /// Adds `other` (another window's gradient of the same layer).
        public mutating func add(_ other: OutputErrorGradient) {
            func accumulate(_ a: inout [Float], _ b: [Float]) { for i in a.indices { a[i] += b[i] } }
            accumulate(&kvA, other.kvA)
            accumulate(&kvB, other.kvB)
            accumulate(&kRope, other.kRope)
            accumulate(&oProj, other.oProj)
            error += other.error
        }
    }

    /// E and its gradient on one window: `x` `[tokens, d]` (the layer's attention input), `target`
    /// `[tokens, d]`. `weights` must have passed `validate()` and have no latent norm. The queries are taken
    /// `causalBlock` rows at a time, each block against the keys it can see (any block size gives the
    /// same result).
    public static func outputErrorGradient(_ w: MLALayerWeights, x: [Float], target: [Float], tokens t: Int,
                                           causalBlock: Int = 128) -> OutputErrorGradient {
        precondition(w.latentNorm == nil, "outputErrorGradient: \(w.label) has a latent norm; refine before the export makes one")
        precondition(x.count == t * w.hiddenSize && target.count == t * w.hiddenSize, "outputErrorGradient: x and target must be [\(t) × \(w.hiddenSize)]")
        var gradient = OutputErrorGradient(zeroFor: w)
        guard t > 0 else { return gradient }
        let d = w.hiddenSize, r = w.kvRank, nh = w.numHeads, qw = w.qHeadWidth, kvw = w.dNope + w.dV
        let ropeWidth = w.nRopeHeads * w.dRope, oWidth = nh * w.dV, positions = Array(0..<t)
        // Causal blocks of queries: block b's queries see only keys 0..<blocks[b].upperBound, so the
        // score products skip the masked upper right (at 512 tokens in blocks of 128, 5/8 of the full
        // products). Every head's probabilities are kept packed, block b at scoreOffsets[b] as
        // [block rows × visible keys].
        let block = max(1, causalBlock), blocks = stride(from: 0, to: t, by: block).map { $0..<min($0 + block, t) }
        let scoreOffsets = blocks.reduce(into: [0]) { $0.append($0.last! + $1.count * $1.upperBound) }
        // Forward, keeping what the backward reads: queries, latent, rope keys, per-head values,
        // every head's probabilities and outputs.
        let projected = project(w, x: x, tokens: t, positions: positions)
        let kv = Kernels.linear(projected.latent, tokens: t, weight: w.kvB, outFeatures: nh * kvw, inFeatures: r, bias: nil)
        var probabilities = [[Float]]()
        var heads = [Float](repeating: 0, count: t * oWidth)
        var k = [Float](repeating: 0, count: t * qw)
        for h in 0..<nh {
            headKeys(w, head: h, kv: kv, ropeKeys: projected.ropeKeys, tokens: t, into: &k)
            var p = [Float](repeating: 0, count: scoreOffsets.last!)
            for (b, rows) in blocks.enumerated() {
                let keys = rows.upperBound
                gemm(transB: true, m: rows.count, n: keys, k: qw, a: projected.queries, aOffset: rows.lowerBound * nh * qw + h * qw, lda: nh * qw,
                     b: k, bOffset: 0, ldb: qw, beta: 0, c: &p, cOffset: scoreOffsets[b], ldc: keys)
                p.withUnsafeMutableBufferPointer { buffer in
                    Kernels.causalSoftmax(UnsafeMutableBufferPointer(rebasing: buffer[scoreOffsets[b]..<scoreOffsets[b + 1]]),
                                          queries: rows.count, keys: keys, scale: w.softmaxScale)
                }
                gemm(transB: false, m: rows.count, n: w.dV, k: keys, a: p, aOffset: scoreOffsets[b], lda: keys,
                     b: kv, bOffset: h * kvw + w.dNope, ldb: nh * kvw, beta: 0, c: &heads, cOffset: rows.lowerBound * oWidth + h * w.dV, ldc: oWidth)
            }
            probabilities.append(p)
        }
        // dY = 2 (y − target).
        var dy = output(w, heads: heads, tokens: t)
        for i in dy.indices {
            let e = dy[i] - target[i]
            gradient.error += Double(e) * Double(e)
            dy[i] = 2 * e
        }
        // o_proj: dW_o = dYᵀ U [d, n_h·dV]; dU = dY W_o [T, n_h·dV].
        gemm(transA: true, transB: false, m: d, n: oWidth, k: t, a: dy, aOffset: 0, lda: d,
             b: heads, bOffset: 0, ldb: oWidth, beta: 0, c: &gradient.oProj, cOffset: 0, ldc: oWidth)
        var dHeads = [Float](repeating: 0, count: t * oWidth)
        gemm(transA: false, transB: false, m: t, n: oWidth, k: d, a: dy, aOffset: 0, lda: d,
             b: w.oProj, bOffset: 0, ldb: oWidth, beta: 0, c: &dHeads, cOffset: 0, ldc: oWidth)
        // Per head and block: back through P V and the softmax to the keys. dKV (each head its own
        // columns) and dk start at zero and accumulate over the blocks.
        var dKV = [Float](repeating: 0, count: t * nh * kvw)
        var dRopeKeys = [Float](repeating: 0, count: t * ropeWidth)
        var dp = [Float](repeating: 0, count: scoreOffsets.last!), dk = [Float](repeating: 0, count: t * qw)
        for h in 0..<nh {
            let p = probabilities[h]
            for i in dk.indices { dk[i] = 0 }
            for (b, rows) in blocks.enumerated() {
                let keys = rows.upperBound, offset = scoreOffsets[b], dUOffset = rows.lowerBound * oWidth + h * w.dV
                // dV_h += Pᵀ dU_h, into the value columns of dKV.
                gemm(transA: true, transB: false, m: keys, n: w.dV, k: rows.count, a: p, aOffset: offset, lda: keys,
                     b: dHeads, bOffset: dUOffset, ldb: oWidth, beta: 1, c: &dKV, cOffset: h * kvw + w.dNope, ldc: nh * kvw)
                // dP = dU_h V_hᵀ; dS = τ P ⊙ (dP − rowsum(P ⊙ dP)) (zero where P is masked).
                gemm(transB: true, m: rows.count, n: keys, k: w.dV, a: dHeads, aOffset: dUOffset, lda: oWidth,
                     b: kv, bOffset: h * kvw + w.dNope, ldb: nh * kvw, beta: 0, c: &dp, cOffset: offset, ldc: keys)
                for i in 0..<rows.count {
                    let row = offset + i * keys, visible = rows.lowerBound + i + 1
                    var dot: Float = 0
                    for j in 0..<visible { dot += p[row + j] * dp[row + j] }
                    for j in 0..<visible { dp[row + j] = w.softmaxScale * p[row + j] * (dp[row + j] - dot) }
                    for j in visible..<keys { dp[row + j] = 0 }
                }
                // dK_h += dSᵀ Q_h [keys × qw].
                gemm(transA: true, transB: false, m: keys, n: qw, k: rows.count, a: dp, aOffset: offset, lda: keys,
                     b: projected.queries, bOffset: rows.lowerBound * nh * qw + h * qw, ldb: nh * qw, beta: 1, c: &dk, cOffset: 0, ldc: qw)
            }
            // dK_h's NoPE part to dKV, its rope part to the rope key head it reads.
            let ropeOffset = w.ropeHeadOfQueryHead[h] * w.dRope
            for n in 0..<t {
                for i in 0..<w.dNope { dKV[n * nh * kvw + h * kvw + i] = dk[n * qw + i] }
                for i in 0..<w.dRope { dRopeKeys[n * ropeWidth + ropeOffset + i] += dk[n * qw + w.dNope + i] }
            }
        }
        // Up-projections: dW_UKV = dKVᵀ ĉ [n_h·kvw, r]; dĉ = dKV W_UKV [T, r]; dkvA = dĉᵀ x [r, d].
        gemm(transA: true, transB: false, m: nh * kvw, n: r, k: t, a: dKV, aOffset: 0, lda: nh * kvw,
             b: projected.latent, bOffset: 0, ldb: r, beta: 0, c: &gradient.kvB, cOffset: 0, ldc: r)
        var dLatent = [Float](repeating: 0, count: t * r)
        gemm(transA: false, transB: false, m: t, n: r, k: nh * kvw, a: dKV, aOffset: 0, lda: nh * kvw,
             b: w.kvB, bOffset: 0, ldb: r, beta: 0, c: &dLatent, cOffset: 0, ldc: r)
        gemm(transA: true, transB: false, m: r, n: d, k: t, a: dLatent, aOffset: 0, lda: r,
             b: x, bOffset: 0, ldb: d, beta: 0, c: &gradient.kvA, cOffset: 0, ldc: d)
        // RoPE is a rotation scaled by the attention factor f: k = f R k₀, so dk₀ = f Rᵀ dk (the rotation
        // by minus the angle).
        for j in 0..<w.nRopeHeads {
            Rotations(positions: positions.map { -$0 }, rows: t, invFreq: w.ropeInvFreq[j], factor: w.ropeAttentionFactor)
                .apply(to: &dRopeKeys, rowStride: ropeWidth, offset: j * w.dRope)
        }
        gemm(transA: true, transB: false, m: ropeWidth, n: d, k: t, a: dRopeKeys, aOffset: 0, lda: ropeWidth,
             b: x, bOffset: 0, ldb: d, beta: 0, c: &gradient.kRope, cOffset: 0, ldc: d)
        return gradient
    }
}
