/// The gradient of an MLA layer's squared output error through its real softmax (docs/method.md §6.c),
/// for refining a converted layer's cache weights by gradient steps (`AttentionRefinement` in MLAConvert).
///
/// On one window of T tokens at positions 0..<T, attending causally to each other, with the layer's
/// attention input x `[T, d]` and a target `[T, d]` (the source layer's attention output):
///
///     E(θ) = Σ_t ‖y_t(θ) − target_t‖²,   y = U W_oᵀ + b_o,   U = the naive MLA heads (`MLAAttention.naive`)
///
/// θ are the weights that make the cache and read it: `kvA` (the latent), `kvB` (W_UK and W_UV) and
/// `kRope` (the rope key). The query, o_proj and the biases are held fixed, so each window's queries and
/// its target read back through o_proj, Z = (target − b_o) W_o, are computed once
/// (`OutputErrorWindows`), and dE/dU = 2 (U G − Z) with G = W_oᵀ W_o: a step computes neither the queries
/// nor the output. Backward through the softmax per head, with P = softmax(τ S) row-wise over the
/// visible keys:
///
///     dV_h = P_hᵀ dU_h,  dP_h = dU_h V_hᵀ,  dS_h = τ P_h ⊙ (dP_h − rowsum(P_h ⊙ dP_h)),  dK_h = dS_hᵀ Q_h,
///
/// then through the up-projections to the latent and kvA, and through the (orthogonal, scaled) RoPE
/// rotation to kRope. Every product is a GEMM. Needs a layer without a latent norm (conversions make
/// one only at export, docs/method.md §8.b).
extension MLAAttention {
    /// Calibration windows of one layer with each window's queries computed once. The o_proj refit and
    /// the refinement change neither the query nor the inputs, so the closed form's head outputs (the
    /// refit's inputs), every refinement step and every held-out check read the same queries. Valid for
    /// weights whose query is the one it was prepared with.
    public struct QueryWindows: Sendable {
        /// One window of attention inputs and its queries.
        struct Window: Sendable {
            /// The attention input x `[tokens, d]`.
            let x: [Float]
            let tokens: Int
            /// The queries `[tokens, n_h·(dNope+dRope)]`, rope rows rotated.
            let queries: [Float]
            /// Each rope head's rotations at positions 0..<tokens.
            let rotations: [Rotations]
        }

        let windows: [Window]
        public var count: Int { windows.count }

        /// Windows of attention inputs `inputs[i]` `[t_i, d]`, each attended from position 0, for `weights`'
        /// query; `workers` windows at once, one BLAS thread each.
        public init(_ weights: MLALayerWeights, inputs: [[Float]], workers: Int = 1) throws {
            let d = weights.hiddenSize
            windows = try parallelMap(inputs.count, workers: workers) { i in
                let x = inputs[i], t = x.count / max(d, 1)
                precondition(x.count == t * d, "QueryWindows: x must be [\(t) × \(d)]")
                let rotations = ropeRotations(weights, positions: Array(0..<t))
                return Window(x: x, tokens: t, queries: queries(weights, x: x, tokens: t, rotations: rotations), rotations: rotations)
            }
        }

        /// The per-head outputs U `[t_i, n_h·dV]` of window `index` for `weights` (no latent norm, the
        /// query prepared), the queries taken `causalBlock` rows at a time (any block size gives the same
        /// result to float rounding): `headOutputs` on the window, without computing its queries again. At
        /// the default block the same bits when both run their products on the same BLAS threads; windows
        /// prepared on workers (one thread each) can differ in the last bits on some OpenBLAS kernels.
        public func heads(_ weights: MLALayerWeights, index: Int, causalBlock: Int = Kernels.causalBlock) -> [Float] {
            precondition(weights.latentNorm == nil, "QueryWindows.heads: \(weights.label) has a latent norm; the windows serve conversions before the export makes one")
            guard windows[index].tokens > 0 else { return [] }
            return forward(weights, window: windows[index], causalBlock: causalBlock, keepsProbabilities: false).heads
        }
    }

    /// Calibration windows prepared for `outputErrorGradient`: what stays fixed while `kvA`, `kvB` and
    /// `kRope` move. Valid for weights whose query and o_proj are those it was prepared with.
    public struct OutputErrorWindows: Sendable {
        /// What a step reads of one window's target.
        struct Target: Sendable {
            /// The target `[tokens, d]`.
            let target: [Float]
            /// Z = (target − b_o) W_o `[tokens, n_h·dV]`.
            let targetHeads: [Float]
        }

        /// G = W_oᵀ W_o `[n_h·dV, n_h·dV]`.
        let gram: [Float]
        let queryWindows: QueryWindows
        let targets: [Target]

        /// The prepared `windows` with targets `targets[i]` `[t_i, d]` (the source layer's attention outputs
        /// on window i), for `weights`' o_proj; `workers` windows at once, one BLAS thread each.
        public init(_ weights: MLALayerWeights, windows: QueryWindows, targets: [[Float]], workers: Int = 1) throws {
            precondition(windows.count == targets.count, "OutputErrorWindows: one target per window")
            let d = weights.hiddenSize, oWidth = weights.numHeads * weights.dV
            var gram = [Float](repeating: 0, count: oWidth * oWidth)
            gemm(transA: true, transB: false, m: oWidth, n: oWidth, k: d, a: weights.oProj, aOffset: 0, lda: oWidth,
                 b: weights.oProj, bOffset: 0, ldb: oWidth, beta: 0, c: &gram, cOffset: 0, ldc: oWidth)
            self.gram = gram
            queryWindows = windows
            self.targets = try parallelMap(targets.count, workers: workers) { i in
                let target = targets[i], t = windows.windows[i].tokens
                precondition(target.count == t * d, "OutputErrorWindows: target \(i) must be [\(t) × \(d)]")
                var centered = target
                if let bias = weights.oBias { for e in centered.indices { centered[e] -= bias[e % d] } }
                var z = [Float](repeating: 0, count: t * oWidth)
                gemm(transA: false, transB: false, m: t, n: oWidth, k: d, a: centered, aOffset: 0, lda: d,
                     b: weights.oProj, bOffset: 0, ldb: oWidth, beta: 0, c: &z, cOffset: 0, ldc: oWidth)
                return Target(target: target, targetHeads: z)
            }
        }

        /// Windows of attention inputs `inputs[i]` `[t_i, d]` and targets `targets[i]` `[t_i, d]`, each
        /// attended from position 0, for `weights`' query and o_proj.
        public init(_ weights: MLALayerWeights, inputs: [[Float]], targets: [[Float]]) throws {
            try self.init(weights, windows: try QueryWindows(weights, inputs: inputs), targets: targets)
        }
    }

    /// Gradients of E with respect to the refined weights, each the shape of the weight it belongs to.
    public struct OutputErrorGradient: Sendable {
        /// [r, d].
        public var kvA: [Float]
        /// [n_h·(dNope+dV), r].
        public var kvB: [Float]
        /// [nRopeHeads·dRope, d].
        public var kRope: [Float]

        /// All zero for `weights`' shapes (a sum to add windows' gradients into).
        public init(zeroFor weights: MLALayerWeights) {
            kvA = [Float](repeating: 0, count: weights.kvA.count)
            kvB = [Float](repeating: 0, count: weights.kvB.count)
            kRope = [Float](repeating: 0, count: weights.kRope.count)
        }

        /// Adds `other` (another window's gradient of the same layer).
        public mutating func add(_ other: OutputErrorGradient) {
            func accumulate(_ a: inout [Float], _ b: [Float]) { for i in a.indices { a[i] += b[i] } }
            accumulate(&kvA, other.kvA)
            accumulate(&kvB, other.kvB)
            accumulate(&kRope, other.kRope)
        }
    }

    /// The forward pass over one prepared window, with what the backward reads. Queries go in causal
    /// blocks: block b's queries see only keys 0..<blocks[b].upperBound, so the score products skip the
    /// masked upper right (at 512 tokens in blocks of 128, 5/8 of the full products). Without
    /// `keepsProbabilities` the heads share one block of scratch scores and `probabilities` is empty.
    struct WindowForward {
        let blocks: [Range<Int>]
        /// Where block b's probabilities start in each head's packed `[block rows × visible keys]` blocks.
        let scoreOffsets: [Int]
        /// ĉ `[T, r]`.
        let latent: [Float]
        /// Every head's NoPE key and value `[T, n_h·(dNope+dV)]`.
        let kv: [Float]
        /// Each head's probabilities, packed by block.
        let probabilities: [[Float]]
        /// U `[T, n_h·dV]`.
        let heads: [Float]
    }

    static func forward(_ w: MLALayerWeights, window: QueryWindows.Window, causalBlock: Int, keepsProbabilities: Bool = true) -> WindowForward {
        let x = window.x, t = window.tokens, r = w.kvRank, nh = w.numHeads, qw = w.qHeadWidth, kvw = w.dNope + w.dV
        let oWidth = nh * w.dV
        let block = max(1, causalBlock), blocks = stride(from: 0, to: t, by: block).map { $0..<min($0 + block, t) }
        let scoreOffsets = blocks.reduce(into: [0]) { $0.append($0.last! + $1.count * $1.upperBound) }
        let latent = latent(w, x: x, tokens: t)
        let ropeKeys = ropeKeys(w, x: x, tokens: t, rotations: window.rotations)
        let kv = Kernels.linear(latent, tokens: t, weight: w.kvB, outFeatures: nh * kvw, inFeatures: r, bias: nil)
        var probabilities = [[Float]]()
        // Every output column, key and score a head keeps is written (the GEMMs, `headKeys`, then the
        // softmax's zeros past the diagonal), so the buffers start uninitialized.
        var heads = [Float](unsafeUninitializedCapacity: t * oWidth) { $1 = t * oWidth }
        var k = [Float](unsafeUninitializedCapacity: t * qw) { $1 = t * qw }
        let scoreCount = keepsProbabilities ? scoreOffsets.last! : min(t, block) * t
        var scratch: [Float] = keepsProbabilities ? [] : [Float](unsafeUninitializedCapacity: scoreCount) { $1 = scoreCount }
        for h in 0..<nh {
            headKeys(w, head: h, kv: kv, ropeKeys: ropeKeys, tokens: t, into: &k)
            if keepsProbabilities { scratch = [Float](unsafeUninitializedCapacity: scoreCount) { $1 = scoreCount } }
            attendHead(w, head: h, queries: window.queries, keys: k, kv: kv, queryCount: t, keyCount: t, block: block,
                       scores: &scratch, keepsScores: keepsProbabilities, into: &heads)
            if keepsProbabilities { probabilities.append(scratch) }
        }
        return WindowForward(blocks: blocks, scoreOffsets: scoreOffsets, latent: latent, kv: kv,
                             probabilities: probabilities, heads: heads)
    }

    /// E on window `index` of `windows`, Σ_t ‖y_t − target_t‖² summed in Double, from `w`'s per-head
    /// outputs on it, `heads` `[t, n_h·dV]` (`QueryWindows.heads` of the windows `windows` was prepared on).
    public static func outputError(_ w: MLALayerWeights, heads: [Float], windows: OutputErrorWindows, index: Int) -> Double {
        let t = windows.queryWindows.windows[index].tokens
        guard t > 0 else { return 0 }
        let y = output(w, heads: heads, tokens: t)
        return zip(y, windows.targets[index].target).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
    }

    /// The gradient of E on window `index` of `windows`. `weights` must have passed `validate()`, have no
    /// latent norm, and have the query and o_proj `windows` was prepared with. The queries are taken
    /// `causalBlock` rows at a time, each block against the keys it can see (any block size gives the
    /// same result).
    public static func outputErrorGradient(_ w: MLALayerWeights, windows: OutputErrorWindows, index: Int,
                                           causalBlock: Int = Kernels.causalBlock) -> OutputErrorGradient {
        precondition(w.latentNorm == nil, "outputErrorGradient: \(w.label) has a latent norm; refine before the export makes one")
        let window = windows.queryWindows.windows[index], x = window.x, t = window.tokens
        var gradient = OutputErrorGradient(zeroFor: w)
        guard t > 0 else { return gradient }
        let d = w.hiddenSize, r = w.kvRank, nh = w.numHeads, qw = w.qHeadWidth, kvw = w.dNope + w.dV
        let ropeWidth = w.nRopeHeads * w.dRope, oWidth = nh * w.dV
        let forward = forward(w, window: window, causalBlock: causalBlock)
        let (blocks, scoreOffsets, queries, kv, heads) = (forward.blocks, forward.scoreOffsets, window.queries, forward.kv, forward.heads)
        // dU = 2 (U G − Z).
        var dHeads = windows.targets[index].targetHeads
        gemm(transA: false, transB: false, m: t, n: oWidth, k: oWidth, a: heads, aOffset: 0, lda: oWidth,
             b: windows.gram, bOffset: 0, ldb: oWidth, beta: -1, c: &dHeads, cOffset: 0, ldc: oWidth)
        for i in dHeads.indices { dHeads[i] *= 2 }
        // Per head and block: back through P V and the softmax to the keys. dKV (each head its own
        // columns) and dk start at zero and accumulate over the blocks.
        var dKV = [Float](repeating: 0, count: t * nh * kvw)
        var dRopeKeys = [Float](repeating: 0, count: t * ropeWidth)
        // dP's blocks are written whole (the GEMM, then the masked entries set to zero), so dp starts uninitialized.
        var dp = [Float](unsafeUninitializedCapacity: scoreOffsets.last!) { $1 = scoreOffsets.last! }, dk = [Float](repeating: 0, count: t * qw)
        for h in 0..<nh {
            let p = forward.probabilities[h]
            for i in dk.indices { dk[i] = 0 }
            for (b, rows) in blocks.enumerated() {
                let keys = rows.upperBound, offset = scoreOffsets[b], dUOffset = rows.lowerBound * oWidth + h * w.dV
                // dV_h += Pᵀ dU_h, into the value columns of dKV.
                gemm(transA: true, transB: false, m: keys, n: w.dV, k: rows.count, a: p, aOffset: offset, lda: keys,
                     b: dHeads, bOffset: dUOffset, ldb: oWidth, beta: 1, c: &dKV, cOffset: h * kvw + w.dNope, ldc: nh * kvw)
                // dP = dU_h V_hᵀ; dS = τ P ⊙ (dP − rowsum(P ⊙ dP)) (zero where P is masked).
                gemm(transB: true, m: rows.count, n: keys, k: w.dV, a: dHeads, aOffset: dUOffset, lda: oWidth,
                     b: kv, bOffset: h * kvw + w.dNope, ldb: nh * kvw, beta: 0, c: &dp, cOffset: offset, ldc: keys)
                p.withUnsafeBufferPointer { p in
                    dp.withUnsafeMutableBufferPointer { dp in
                        Kernels.causalSoftmaxBackward(probabilities: p.baseAddress! + offset, gradient: dp.baseAddress! + offset, queries: rows.count,
                                                      keys: keys, scale: w.softmaxScale)
                    }
                }
                // dK_h += dSᵀ Q_h [keys × qw].
                gemm(transA: true, transB: false, m: keys, n: qw, k: rows.count, a: dp, aOffset: offset, lda: keys,
                     b: queries, bOffset: rows.lowerBound * nh * qw + h * qw, ldb: nh * qw, beta: 1, c: &dk, cOffset: 0, ldc: qw)
            }
            // dK_h's NoPE part to dKV, its rope part to the rope key head it reads.
            let ropeOffset = w.ropeHeadOfQueryHead[h] * w.dRope
            // Over buffer pointers, so that the rows copy and add as vectors (`headKeys` in reverse).
            dk.withUnsafeBufferPointer { dk in
                dKV.withUnsafeMutableBufferPointer { dKV in
                    dRopeKeys.withUnsafeMutableBufferPointer { dRopeKeys in
                        let (dk, dKV, dRopeKeys) = (dk.baseAddress!, dKV.baseAddress!, dRopeKeys.baseAddress!)
                        for n in 0..<t {
                            (dKV + n * nh * kvw + h * kvw).update(from: dk + n * qw, count: w.dNope)
                            let rope = dRopeKeys + n * ropeWidth + ropeOffset, dkRope = dk + n * qw + w.dNope
                            for i in 0..<w.dRope { rope[i] += dkRope[i] }
                        }
                    }
                }
            }
        }
        // Up-projections: dW_UKV = dKVᵀ ĉ [n_h·kvw, r]; dĉ = dKV W_UKV [T, r]; dkvA = dĉᵀ x [r, d].
        gemm(transA: true, transB: false, m: nh * kvw, n: r, k: t, a: dKV, aOffset: 0, lda: nh * kvw,
             b: forward.latent, bOffset: 0, ldb: r, beta: 0, c: &gradient.kvB, cOffset: 0, ldc: r)
        var dLatent = [Float](unsafeUninitializedCapacity: t * r) { $1 = t * r }
        gemm(transA: false, transB: false, m: t, n: r, k: nh * kvw, a: dKV, aOffset: 0, lda: nh * kvw,
             b: w.kvB, bOffset: 0, ldb: r, beta: 0, c: &dLatent, cOffset: 0, ldc: r)
        gemm(transA: true, transB: false, m: r, n: d, k: t, a: dLatent, aOffset: 0, lda: r,
             b: x, bOffset: 0, ldb: d, beta: 0, c: &gradient.kvA, cOffset: 0, ldc: d)
        // RoPE is a rotation scaled by the attention factor f: k = f R k₀, so dk₀ = f Rᵀ dk (the rotation
        // by minus the angle).
        for j in 0..<w.nRopeHeads {
            window.rotations[j].transposed.apply(to: &dRopeKeys, rowStride: ropeWidth, offset: j * w.dRope)
        }
        gemm(transA: true, transB: false, m: ropeWidth, n: d, k: t, a: dRopeKeys, aOffset: 0, lda: ropeWidth,
             b: x, bOffset: 0, ldb: d, beta: 0, c: &gradient.kRope, cOffset: 0, ldc: d)
        return gradient
    }
}
