import MLALinalg

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Multi-head Latent Attention forward passes over `MLALayerWeights` (docs/method.md §3), F32 compute,
/// every matrix product through `LinalgScalar.gemm`.
///
/// Inputs `x` are `[T, d]` row-major (the output of the layer's input RMSNorm); outputs are `[T, d]`,
/// o_proj applied (bias included). `positions[t]` is the RoPE position of token t. Attention is causal
/// in token order: token t (of the tokens passed in, after any already cached) sees itself and every
/// earlier token.
///
/// Two forms share the projections and the latent cache and differ only in how a head attends:
/// - **naive**: expands k_N,h = W_UK,h ĉ and v_h = W_UV,h ĉ for every cached token, then ordinary
///   attention per head. Re-expanding costs T·n_h·r·(dNope+dV) MACs per call.
/// - **absorbed**: q̃_h = W_UK,hᵀ q_N,h ∈ R^r; s = τ(q̃_h·ĉ_n + (R q_R,h)·(R k_R,j(h),n));
///   ō_h = Σ_n p ĉ_n ∈ R^r; o_h = W_UV,h ō_h; y = W_o [o_0; …] + b. MQA-like: every head reads the same
///   cached ĉ and rope keys.
///
/// The absorbed matrices are W_UK,h (`kvB` rows [h(dNope+dV), h(dNope+dV)+dNope), viewed in place as
/// `[dNope, r]`) and W_UV,h (the next dV rows, `[dV, r]`); they are used in place with a leading
/// dimension, so "precomputing" them costs nothing. Fusing them further into the query projection
/// (W_UK,hᵀ W_qN,h, `[r, d]` per head) or into o_proj (W_o,h W_UV,h, `[d, r]` per head) was not done:
/// per token and head it costs r·d MACs instead of dNope·(d + r) (query) or dV·(d + r) (output),
/// which is more whenever r > dNope·d/(d − dNope); for the SmolLM2-sized layer (d 576, r 128,
/// dNope = dV = 64) 73 728 against 45 056 MACs.
///
/// Measured decode step of that layer (release, 2 shared cores, `MLADecodeTimingTests`), absorbed vs
/// naive re-expanding the latent cache: 0.83 vs 2.1 ms at context 512, 1.6 vs 8.3 ms at 2048, 4.7 vs
/// 67 ms at 8192. Decoding therefore uses the absorbed form by default.
public enum MLAAttention {
    /// How a head attends over the latent cache.
    public enum Form: Sendable {
        /// Per-head keys and values expanded from the latent on every call.
        case naive
        /// Queries and outputs absorbed into the latent space (docs/method.md §3).
        case absorbed
    }

    /// One layer's latent KV cache: the normed latent ĉ `[T, r]` and the rotated rope keys
    /// `[T, nRopeHeads·dRope]` (interleaved pairs, already rotated at each token's position), F32.
    public struct LatentCache: Sendable, Equatable {
        /// r.
        public let kvRank: Int
        /// nRopeHeads·dRope.
        public let ropeWidth: Int
        /// ĉ, `[count, kvRank]` row-major.
        public private(set) var latent: [Float] = []
        /// Rotated rope keys, `[count, ropeWidth]` row-major.
        public private(set) var ropeKeys: [Float] = []
        /// Cached tokens T.
        public private(set) var count = 0

        /// An empty cache shaped for `weights`.
        public init(for weights: MLALayerWeights) {
            kvRank = weights.kvRank
            ropeWidth = weights.nRopeHeads * weights.dRope
        }

        /// Values stored per token: r + nRopeHeads·dRope (independent of dtype).
        public var valuesPerToken: Int { kvRank + ropeWidth }
        /// Bytes held: count × valuesPerToken × 4 (F32).
        public var bytes: Int { count * valuesPerToken * MemoryLayout<Float>.size }

        /// Reserves storage for `tokens` cached tokens in total, so appends up to that length do not
        /// reallocate (and a copied cache gets its own storage now rather than at the next append).
        public mutating func reserveCapacity(tokens: Int) {
            latent.reserveCapacity(tokens * kvRank)
            ropeKeys.reserveCapacity(tokens * ropeWidth)
        }

        /// Appends `tokens` rows: `latent` `[tokens, kvRank]` (ĉ, after any latent norm) and `ropeKeys`
        /// `[tokens, ropeWidth]` (already rotated). Throws when the sizes disagree.
        public mutating func append(latent newLatent: [Float], ropeKeys newKeys: [Float], tokens: Int)
            throws
        {
            guard tokens >= 0, !tokens.multipliedReportingOverflow(by: kvRank + ropeWidth).overflow,
                newLatent.count == tokens * kvRank, newKeys.count == tokens * ropeWidth
            else {
                throw MLAError.input(
                    layer: "LatentCache",
                    reason:
                        "append of \(tokens) tokens needs \(tokens * kvRank) latent and \(tokens * ropeWidth) rope-key values, got \(newLatent.count) and \(newKeys.count)"
                )
            }
            latent += newLatent
            ropeKeys += newKeys
            count += tokens
        }
    }

    /// Naive MLA over `tokens` tokens. `x` `[tokens, d]`, `positions` `[tokens]`; returns `[tokens, d]`.
    public static func naive(_ weights: MLALayerWeights, x: [Float], tokens: Int, positions: [Int]) throws -> [Float] {
        try fresh(weights, x: x, tokens: tokens, positions: positions, form: .naive)
    }

    /// Absorbed MLA over `tokens` tokens; same contract as `naive`, equal to it up to float rounding.
    public static func absorbed(_ weights: MLALayerWeights, x: [Float], tokens: Int, positions: [Int]) throws -> [Float] {
        try fresh(weights, x: x, tokens: tokens, positions: positions, form: .absorbed)
    }

    /// Validates `weights`, then attends over `tokens` tokens with an empty cache.
    static func fresh(_ weights: MLALayerWeights, x: [Float], tokens: Int, positions: [Int], form: Form) throws -> [Float] {
        try weights.validate()
        var cache = LatentCache(for: weights)
        return try prefill(weights, x: x, tokens: tokens, positions: positions, cache: &cache, form: form)
    }

    /// Appends `tokens` tokens to `cache` and returns their attention outputs `[tokens, d]`; each new
    /// token attends to everything already cached and to the new tokens up to itself. `weights` must
    /// have passed `validate()` (the loaders do it once; a per-step scan would dominate decoding).
    public static func prefill(
        _ weights: MLALayerWeights, x: [Float], tokens: Int, positions: [Int],
        cache: inout LatentCache, form: Form = .absorbed
    ) throws -> [Float] {
        let heads = try prefillHeads(weights, x: x, tokens: tokens, positions: positions, cache: &cache, form: form)
        return tokens == 0 ? [] : output(weights, heads: heads, tokens: tokens)
    }

    /// The per-head attention outputs before o_proj, `[tokens, n_h·dV]` (head h in columns
    /// [h·dV, (h+1)·dV)), of `tokens` tokens at positions 0..<tokens attending causally to each other
    /// (an empty cache). `output(weights, heads:tokens:)` of the result is `naive`'s result. A
    /// conversion refits o_proj on the same outputs (`OutputRefit`), which it computes from windows whose
    /// queries it keeps for the refinement (`QueryWindows.heads`, tested against this direct path).
    /// `weights` must have passed `validate()`.
    public static func headOutputs(_ weights: MLALayerWeights, x: [Float], tokens: Int) throws -> [Float] {
        var cache = LatentCache(for: weights)
        return try prefillHeads(weights, x: x, tokens: tokens, positions: Array(0..<max(tokens, 0)), cache: &cache, form: .naive)
    }

    /// `prefill` without o_proj: appends the tokens to `cache` and returns their per-head outputs
    /// `[tokens, n_h·dV]`. Throws when `x`, `positions` or `cache` do not fit `weights`.
    private static func prefillHeads(
        _ weights: MLALayerWeights, x: [Float], tokens: Int, positions: [Int],
        cache: inout LatentCache, form: Form
    ) throws -> [Float] {
        guard tokens >= 0, !tokens.multipliedReportingOverflow(by: weights.hiddenSize).overflow,
            x.count == tokens * weights.hiddenSize, positions.count == tokens
        else {
            throw MLAError.input(
                layer: weights.label,
                reason:
                    "\(tokens) tokens need x of \(tokens * weights.hiddenSize) values and \(tokens) positions, got \(x.count) and \(positions.count)"
            )
        }
        guard cache.kvRank == weights.kvRank, cache.ropeWidth == weights.nRopeHeads * weights.dRope
        else {
            throw MLAError.input(
                layer: weights.label,
                reason:
                    "cache holds r=\(cache.kvRank) + \(cache.ropeWidth) rope values per token, the layer needs r=\(weights.kvRank) + \(weights.nRopeHeads * weights.dRope)"
            )
        }
        if tokens == 0 { return [] }
        let projected = project(weights, x: x, tokens: tokens, positions: positions)
        try cache.append(latent: projected.latent, ropeKeys: projected.ropeKeys, tokens: tokens)
        return attend(weights, queries: projected.queries, tokens: tokens, cache: cache, form: form)
    }

    /// o_proj (and its bias) applied to per-head outputs `heads` `[tokens, n_h·dV]`; returns `[tokens, d]`.
    public static func output(_ weights: MLALayerWeights, heads: [Float], tokens: Int) -> [Float] {
        Kernels.linear(heads, tokens: tokens, weight: weights.oProj, outFeatures: weights.hiddenSize, inFeatures: weights.numHeads * weights.dV, bias: weights.oBias)
    }

    /// One decode step: `x` `[d]` for the token at `position`; appends it to `cache` and returns `[d]`.
    /// The default absorbed form reads only the cache (r + nRopeHeads·dRope values per token); `.naive`
    /// re-expands per-head keys and values from the whole cache on every step.
    public static func decodeStep(
        _ weights: MLALayerWeights, x: [Float], position: Int,
        cache: inout LatentCache, form: Form = .absorbed
    ) throws -> [Float] {
        try prefill(weights, x: x, tokens: 1, positions: [position], cache: &cache, form: form)
    }

    // MARK: - Projections

    /// Projections of new tokens: `queries` `[T, n_h·(dNope+dRope)]` (rope rows rotated), `latent` ĉ
    /// `[T, r]`, `ropeKeys` `[T, nRopeHeads·dRope]` (rotated).
    struct Projected {
        var queries: [Float]
        var latent: [Float]
        var ropeKeys: [Float]
    }

    static func project(_ w: MLALayerWeights, x: [Float], tokens t: Int, positions: [Int])
        -> Projected
    {
        // One table per rope head, shared by its query heads and its key.
        let rotations = ropeRotations(w, positions: positions)
        return Projected(queries: queries(w, x: x, tokens: t, rotations: rotations), latent: latent(w, x: x, tokens: t),
                         ropeKeys: ropeKeys(w, x: x, tokens: t, rotations: rotations))
    }

    /// The rotation table of each rope head at `positions`.
    static func ropeRotations(_ w: MLALayerWeights, positions: [Int]) -> [Rotations] {
        w.ropeInvFreq.map { Rotations(positions: positions, invFreq: $0, factor: w.ropeAttentionFactor) }
    }

    /// The queries of new tokens `[T, n_h·(dNope+dRope)]`, rope rows rotated by `rotations` (one per rope head).
    static func queries(_ w: MLALayerWeights, x: [Float], tokens t: Int, rotations: [Rotations]) -> [Float] {
        let d = w.hiddenSize
        let qRows = w.numHeads * w.qHeadWidth
        var q: [Float]
        switch w.query {
        case .full(let proj, let bias):
            q = Kernels.linear(x, tokens: t, weight: proj, outFeatures: qRows, inFeatures: d, bias: bias)
        case .lowRank(let rank, let a, let aBias, let norm, let eps, let b):
            var qa = Kernels.linear(x, tokens: t, weight: a, outFeatures: rank, inFeatures: d, bias: aBias)
            qa = Kernels.rmsNorm(qa, tokens: t, weight: norm, eps: Double(eps))
            q = Kernels.linear(qa, tokens: t, weight: b, outFeatures: qRows, inFeatures: rank, bias: nil)
        }
        for h in 0..<w.numHeads {
            rotations[w.ropeHeadOfQueryHead[h]].apply(to: &q, rowStride: qRows, offset: h * w.qHeadWidth + w.dNope)
        }
        return q
    }

    /// The rope keys of new tokens `[T, nRopeHeads·dRope]`, rotated by `rotations` (one per rope head).
    static func ropeKeys(_ w: MLALayerWeights, x: [Float], tokens t: Int, rotations: [Rotations]) -> [Float] {
        let ropeWidth = w.nRopeHeads * w.dRope
        var keys = Kernels.linear(x, tokens: t, weight: w.kRope, outFeatures: ropeWidth, inFeatures: w.hiddenSize, bias: w.kRopeBias)
        for j in 0..<w.nRopeHeads {
            rotations[j].apply(to: &keys, rowStride: ropeWidth, offset: j * w.dRope)
        }
        return keys
    }

    /// ĉ of new tokens, `[T, r]`: kvA·x + kvABias, then the latent norm when the layer has one.
    static func latent(_ w: MLALayerWeights, x: [Float], tokens t: Int) -> [Float] {
        let c = Kernels.linear(x, tokens: t, weight: w.kvA, outFeatures: w.kvRank, inFeatures: w.hiddenSize, bias: w.kvABias)
        guard let norm = w.latentNorm else { return c }
        return Kernels.rmsNorm(c, tokens: t, weight: norm.weight, eps: Double(norm.eps))
    }

    /// The per-head values v_h = W_UV,h ĉ of `tokens` tokens, as the naive form expands them: `x`
    /// `[tokens, d]` (the layer's attention input), result `[tokens, n_h·dV]` row-major with head h in
    /// columns [h·dV, (h+1)·dV). Values carry no RoPE, so positions do not enter. Lets a verifier
    /// compare a conversion's values with the source attention's v_j(h). `weights` must have passed
    /// `validate()` (the loaders do it).
    public static func values(_ weights: MLALayerWeights, x: [Float], tokens: Int) throws -> [Float] {
        guard tokens >= 0, !tokens.multipliedReportingOverflow(by: weights.hiddenSize).overflow,
            x.count == tokens * weights.hiddenSize
        else {
            throw MLAError.input(
                layer: weights.label, reason: "\(tokens) tokens need x of \(tokens * weights.hiddenSize) values, got \(x.count)")
        }
        let r = weights.kvRank, kvw = weights.dNope + weights.dV, width = weights.numHeads * weights.dV
        let c = latent(weights, x: x, tokens: tokens)
        var out = [Float](repeating: 0, count: tokens * width)
        for h in 0..<weights.numHeads {
            // v_h = ĉ W_UV,hᵀ: [tokens, r]·[r, dV], W_UV,h read in place from kvB.
            gemm(
                transB: true, m: tokens, n: weights.dV, k: r, a: c, aOffset: 0, lda: r,
                b: weights.kvB, bOffset: (h * kvw + weights.dNope) * r, ldb: r, beta: 0, c: &out,
                cOffset: h * weights.dV, ldc: width)
        }
        return out
    }

    // MARK: - Attention core

    /// Per-head outputs `[tq, n_h·dV]` for the last `tq` cached tokens, whose queries are `queries`.
    static func attend(
        _ w: MLALayerWeights, queries: [Float], tokens tq: Int, cache: LatentCache, form: Form
    ) -> [Float] {
        let tk = cache.count
        let r = w.kvRank
        let qw = w.qHeadWidth
        let nh = w.numHeads
        let qld = nh * qw
        let kvw = w.dNope + w.dV
        let ropeWidth = w.nRopeHeads * w.dRope
        let oWidth = nh * w.dV
        var out = [Float](repeating: 0, count: tq * oWidth)
        switch form {
        case .naive:
            // k_N,h and v_h for every cached token: [tk, n_h·(dNope+dV)]; each head attends in causal
            // query blocks (`Kernels.causalAttentionHead`), which skip the masked keys.
            let kv = Kernels.linear(cache.latent, tokens: tk, weight: w.kvB, outFeatures: nh * kvw, inFeatures: r, bias: nil)
            var keys = [Float](repeating: 0, count: tk * qw)
            let scratch = min(tq, Kernels.causalBlock) * tk
            var scores = [Float](unsafeUninitializedCapacity: scratch) { $1 = scratch }
            for h in 0..<nh {
                headKeys(w, head: h, kv: kv, ropeKeys: cache.ropeKeys, tokens: tk, into: &keys)
                attendHead(w, head: h, queries: queries, keys: keys, kv: kv, queryCount: tq, keyCount: tk, block: Kernels.causalBlock,
                           scores: &scores, keepsScores: false, into: &out)
            }
        case .absorbed:
            // MQA over the shared latent: heads are stacked so the score and value products read the
            // cache once per chunk of heads instead of once per head (rows ordered head-major, h·tq + i).
            // Chunks bound the score block to about 16 M floats during long prefills.
            let chunk = max(1, min(nh, (16 << 20) / max(1, tq * tk)))
            var absorbedQuery = [Float](repeating: 0, count: chunk * tq * r)
            var latentOut = [Float](repeating: 0, count: chunk * tq * r)
            var stackedScores = [Float](repeating: 0, count: chunk * tq * tk)
            for first in stride(from: 0, to: nh, by: chunk) {
                let heads = min(chunk, nh - first)
                for j in 0..<heads {
                    let h = first + j
                    // q̃ = q_N W_UK,h: [tq, dNope]·[dNope, r].
                    gemm(
                        transB: false, m: tq, n: r, k: w.dNope, a: queries, aOffset: h * qw, lda: qld,
                        b: w.kvB, bOffset: h * kvw * r, ldb: r, beta: 0, c: &absorbedQuery, cOffset: j * tq * r,
                        ldc: r)
                }
                gemm(
                    transB: true, m: heads * tq, n: tk, k: r, a: absorbedQuery, aOffset: 0, lda: r,
                    b: cache.latent, bOffset: 0, ldb: r, beta: 0, c: &stackedScores, cOffset: 0, ldc: tk)
                for j in 0..<heads {
                    let h = first + j
                    gemm(
                        transB: true, m: tq, n: tk, k: w.dRope, a: queries, aOffset: h * qw + w.dNope, lda: qld,
                        b: cache.ropeKeys, bOffset: w.ropeHeadOfQueryHead[h] * w.dRope, ldb: ropeWidth,
                        beta: 1, c: &stackedScores, cOffset: j * tq * tk, ldc: tk)
                }
                Kernels.causalSoftmax(&stackedScores, queries: tq, keys: tk, scale: w.softmaxScale, blocks: heads)
                // ō = P ĉ for all stacked rows: [heads·tq, r]; then o_h = ō_h W_UV,hᵀ: [tq, dV].
                gemm(
                    transB: false, m: heads * tq, n: r, k: tk, a: stackedScores, aOffset: 0, lda: tk,
                    b: cache.latent, bOffset: 0, ldb: r, beta: 0, c: &latentOut, cOffset: 0, ldc: r)
                for j in 0..<heads {
                    let h = first + j
                    gemm(
                        transB: true, m: tq, n: w.dV, k: r, a: latentOut, aOffset: j * tq * r, lda: r,
                        b: w.kvB, bOffset: (h * kvw + w.dNope) * r, ldb: r, beta: 0, c: &out, cOffset: h * w.dV,
                        ldc: oWidth)
                }
            }
        }
        return out
    }

    // MARK: - Dense helpers

    /// Head h's keys [tokens × (dNope + dRope)] into `keys`: its NoPE key from `kv` (the expanded
    /// [tokens × n_h·(dNope+dV)] keys and values), then the rotated rope key it reads from `ropeKeys`
    /// [tokens × nRopeHeads·dRope].
    static func headKeys(_ w: MLALayerWeights, head h: Int, kv: [Float], ropeKeys: [Float], tokens: Int, into keys: inout [Float]) {
        let qw = w.qHeadWidth, kvw = w.dNope + w.dV, kvWidth = w.numHeads * kvw, ropeWidth = w.nRopeHeads * w.dRope
        let ropeOffset = w.ropeHeadOfQueryHead[h] * w.dRope
        precondition(keys.count >= tokens * qw && kv.count >= tokens * kvWidth && ropeKeys.count >= tokens * ropeWidth,
                     "headKeys: buffers too small for \(tokens) tokens")
        // A copy per row over buffer pointers, instead of a bounds-checked index per element.
        keys.withUnsafeMutableBufferPointer { keys in
            kv.withUnsafeBufferPointer { kv in
                ropeKeys.withUnsafeBufferPointer { ropeKeys in
                    for n in 0..<tokens {
                        (keys.baseAddress! + n * qw).update(from: kv.baseAddress! + n * kvWidth + h * kvw, count: w.dNope)
                        (keys.baseAddress! + n * qw + w.dNope).update(from: ropeKeys.baseAddress! + n * ropeWidth + ropeOffset, count: w.dRope)
                    }
                }
            }
        }
    }

    /// Head h's causal attention in the naive form (`Kernels.causalAttentionHead`): its queries are
    /// columns of `queries` `[tq, n_h·(dNope+dRope)]` (the last tq of tk positions), its keys `keys`
    /// `[tk, dNope+dRope]` (`headKeys`), its values columns of `kv` `[tk, n_h·(dNope+dV)]`; its output
    /// goes to its dV columns of `out` `[tq, n_h·dV]`. `scores` and `keepsScores` as the kernel's.
    static func attendHead(_ w: MLALayerWeights, head h: Int, queries: [Float], keys: [Float], kv: [Float], queryCount tq: Int,
                           keyCount tk: Int, block: Int, scores: inout [Float], keepsScores: Bool, into out: inout [Float]) {
        let qw = w.qHeadWidth, kvw = w.dNope + w.dV
        queries.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                kv.withUnsafeBufferPointer { v in
                    scores.withUnsafeMutableBufferPointer { s in
                        out.withUnsafeMutableBufferPointer { o in
                            Kernels.causalAttentionHead(
                                q: q.baseAddress! + h * qw, qStride: w.numHeads * qw, k: k.baseAddress!, kStride: qw,
                                v: v.baseAddress! + h * kvw + w.dNope, vStride: w.numHeads * kvw, queries: tq, keys: tk,
                                dk: qw, dv: w.dV, scale: w.softmaxScale, block: block, scores: s.baseAddress!,
                                keepsScores: keepsScores, out: o.baseAddress! + h * w.dV, outStride: w.numHeads * w.dV)
                        }
                    }
                }
            }
        }
    }

    /// The rotations of one rope head at `positions`: cos and sin of positions[t]·invFreq[i] radians
    /// (angles in Double), multiplied by `factor`, [rows × pairs] each, one row per position.
    struct Rotations: Sendable {
        let rows: Int
        let pairs: Int
        let cosines: [Float]
        let sines: [Float]

        init(positions: [Int], invFreq: [Double], factor: Double) {
            let rows = positions.count
            self.rows = rows
            pairs = invFreq.count
            var cosines = [Float](repeating: 0, count: rows * pairs), sines = cosines
            for t in 0..<rows {
                for (i, frequency) in invFreq.enumerated() {
                    let angle = Double(positions[t]) * frequency
                    cosines[t * pairs + i] = Float(cos(angle) * factor)
                    sines[t * pairs + i] = Float(sin(angle) * factor)
                }
            }
            self.cosines = cosines
            self.sines = sines
        }

        private init(rows: Int, pairs: Int, cosines: [Float], sines: [Float]) {
            (self.rows, self.pairs, self.cosines, self.sines) = (rows, pairs, cosines, sines)
        }

        /// The transposed rotations (f Rᵀ = the rotation by minus the angle, scaled alike): the sines negated.
        var transposed: Rotations { Rotations(rows: rows, pairs: pairs, cosines: cosines, sines: sines.map { -$0 }) }

        /// Rotates the interleaved rope vector at `offset` of each of the first `rows` rows of `values`
        /// (pair i = elements (2i, 2i+1)), in F32.
        func apply(to values: inout [Float], rowStride: Int, offset: Int) {
            precondition(rows == 0 || (rows - 1) * rowStride + offset + 2 * pairs <= values.count, "Rotations: rows out of range")
            values.withUnsafeMutableBufferPointer { v in
                cosines.withUnsafeBufferPointer { c in
                    sines.withUnsafeBufferPointer { s in
                        for t in 0..<rows {
                            for i in 0..<pairs {
                                let e = t * rowStride + offset + 2 * i, ct = c[t * pairs + i], st = s[t * pairs + i]
                                let a = v[e], b = v[e + 1]
                                v[e] = a * ct - b * st
                                v[e + 1] = a * st + b * ct
                            }
                        }
                    }
                }
            }
        }
    }

    /// C[m×n] (at `cOffset`, leading dimension ldc) = op(A)·op(B) + beta·C with row-major operands at the
    /// given offsets; A is `[k, m]` when `transA`, else `[m, k]`; B is `[n, k]` when `transB`, else
    /// `[k, n]`. Empty products leave beta·C (k = 0 gives 0 when beta is 0).
    static func gemm(
        transA: Bool = false, transB: Bool, m: Int, n: Int, k: Int, a: [Float], aOffset: Int, lda: Int,
        b: [Float], bOffset: Int, ldb: Int, beta: Float,
        c: inout [Float], cOffset: Int, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            if beta == 0 { for i in 0..<m { for j in 0..<n { c[cOffset + i * ldc + j] = 0 } } }
            return
        }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    guard let baseA = pa.baseAddress, let baseB = pb.baseAddress, let baseC = pc.baseAddress
                    else {
                        preconditionFailure(
                            "MLAAttention.gemm: non-empty product over an empty buffer (caller's shape invariant)"
                        )
                    }
                    Float.gemm(
                        transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1,
                        a: baseA + aOffset, lda: lda, b: baseB + bOffset, ldb: ldb,
                        beta: beta, c: baseC + cOffset, ldc: ldc)
                }
            }
        }
    }
}
