/// Why an MLA layer description cannot be used. `layer` is the tensor-name prefix or label of the layer
/// (for example `model.layers.3.self_attn.`), `field` the tensor or parameter concerned.
public enum MLAError: Error, CustomStringConvertible, Sendable {
    /// A weight's element count does not match the dimensions it must have.
    case shape(layer: String, field: String, expected: [Int], count: Int)
    /// A dimension or parameter is out of range (`reason` says which and how to fix it).
    case invalid(layer: String, field: String, reason: String)
    /// The input activations do not match the layer (`reason` says how).
    case input(layer: String, reason: String)

    public var description: String {
        switch self {
        case let .shape(layer, field, expected, count):
            return "\(layer): '\(field)' holds \(count) values, expected shape \(expected) (\(expected.reduce(1, *)) values); rebuild the layer with matching dimensions"
        case let .invalid(layer, field, reason):
            return "\(layer): '\(field)': \(reason)"
        case let .input(layer, reason):
            return "\(layer): bad input: \(reason)"
        }
    }
}

/// One layer's Multi-head Latent Attention, exactly as the native format stores it
/// (`docs/formats-native-mla.md`). Every matrix is F32 row-major `[out, in]` (y = W·x + b).
///
/// Symbols: d = `hiddenSize`, n_h = `numHeads`, r = `kvRank`, r_q = query rank.
///
/// **RoPE layout: interleaved** for both the rope rows of every query head and the rows of
/// `kRope`: pair i of a rope vector is elements (2i, 2i+1), rotated by position·`ropeInvFreq[j][i]`
/// radians (DeepSeek storage; HF de-interleaves at run time, vLLM uses `is_neox_style=False`).
public struct MLALayerWeights: Sendable, Equatable {
    /// The query projection.
    public enum Query: Sendable, Equatable {
        /// `proj` [n_h·(dNope+dRope), d]; optional `bias` [n_h·(dNope+dRope)]. Per head the rows are
        /// [dNope nope rows | dRope rope rows (interleaved)].
        case full(proj: [Float], bias: [Float]?)
        /// Low rank: q = `b` · RMSNorm_{eps,norm}(`a`·x + `aBias`). `a` [rank, d], `aBias` [rank]?,
        /// `norm` [rank], `b` [n_h·(dNope+dRope), rank] with the same per-head row order as `full`.
        case lowRank(rank: Int, a: [Float], aBias: [Float]?, norm: [Float], eps: Float, b: [Float])
    }

    /// RMSNorm on the latent: ĉ = weight ⊙ c / √(mean(c²) + eps). `weight` [r].
    public struct LatentNorm: Sendable, Equatable {
        public var weight: [Float]
        public var eps: Float
        public init(weight: [Float], eps: Float) {
            self.weight = weight
            self.eps = eps
        }
    }

    /// Label used in error messages (a tensor-name prefix such as `model.layers.3.self_attn.`).
    public var label: String
    /// d: model width (input and output size).
    public var hiddenSize: Int
    /// n_h: query heads.
    public var numHeads: Int
    /// Per-head query/key width without position (d_nope).
    public var dNope: Int
    /// Per-head query and per-rope-head key width with RoPE (d_rope); even.
    public var dRope: Int
    /// Per-head value width (d_v).
    public var dV: Int
    /// r: latent width (kv_lora_rank of this layer).
    public var kvRank: Int
    /// Number of rope key heads (DeepSeek: 1; MHA2MLA: one per source KV head).
    public var nRopeHeads: Int
    /// [n_h]: the rope key head each query head attends with (values in 0..<nRopeHeads).
    public var ropeHeadOfQueryHead: [Int]
    public var query: Query
    /// [r, d]: latent rows c = kvA·x + kvABias.
    public var kvA: [Float]
    /// [r] or nil.
    public var kvABias: [Float]?
    /// Optional RMSNorm on the latent (DeepSeek's kv_a_layernorm); nil means ĉ = c.
    public var latentNorm: LatentNorm?
    /// [nRopeHeads·dRope, d]: rope key rows, head j = rows [j·dRope, (j+1)·dRope), interleaved pairs.
    public var kRope: [Float]
    /// [nRopeHeads·dRope] or nil.
    public var kRopeBias: [Float]?
    /// [n_h·(dNope+dV), r]: per head, dNope rows of W_UK,h then dV rows of W_UV,h.
    public var kvB: [Float]
    /// [d, n_h·dV].
    public var oProj: [Float]
    /// [d] or nil.
    public var oBias: [Float]?
    /// [nRopeHeads][dRope/2]: radians per position of every rope pair, in storage pair order.
    public var ropeInvFreq: [[Double]]
    /// Multiplier applied to cos and sin (YaRN's attention factor; 1 when unscaled).
    public var ropeAttentionFactor: Double
    /// τ: the factor applied to q·k before the softmax.
    public var softmaxScale: Float

    public init(label: String, hiddenSize: Int, numHeads: Int, dNope: Int, dRope: Int, dV: Int, kvRank: Int,
                nRopeHeads: Int, ropeHeadOfQueryHead: [Int], query: Query, kvA: [Float], kvABias: [Float]?,
                latentNorm: LatentNorm?, kRope: [Float], kRopeBias: [Float]?, kvB: [Float], oProj: [Float],
                oBias: [Float]?, ropeInvFreq: [[Double]], ropeAttentionFactor: Double, softmaxScale: Float) {
        self.label = label
        self.hiddenSize = hiddenSize
        self.numHeads = numHeads
        self.dNope = dNope
        self.dRope = dRope
        self.dV = dV
        self.kvRank = kvRank
        self.nRopeHeads = nRopeHeads
        self.ropeHeadOfQueryHead = ropeHeadOfQueryHead
        self.query = query
        self.kvA = kvA
        self.kvABias = kvABias
        self.latentNorm = latentNorm
        self.kRope = kRope
        self.kRopeBias = kRopeBias
        self.kvB = kvB
        self.oProj = oProj
        self.oBias = oBias
        self.ropeInvFreq = ropeInvFreq
        self.ropeAttentionFactor = ropeAttentionFactor
        self.softmaxScale = softmaxScale
    }

    /// Largest accepted dimension (2^20); see `validate()`.
    public static let maxDimension = 1 << 20

    /// Query rows per head: dNope + dRope.
    public var qHeadWidth: Int { dNope + dRope }
    /// Latent-cache values per token for this layer: r + nRopeHeads·dRope.
    public var cacheValuesPerToken: Int { kvRank + nRopeHeads * dRope }

    /// Checks every dimension, array length, the head map and the frequencies; throws `MLAError`.
    public func validate() throws {
        for (name, value) in [("hiddenSize", hiddenSize), ("numHeads", numHeads), ("kvRank", kvRank),
                              ("nRopeHeads", nRopeHeads), ("dV", dV)] where value <= 0 {
            throw MLAError.invalid(layer: label, field: name, reason: "must be positive, got \(value)")
        }
        guard dNope >= 0, dRope >= 0, dNope + dRope > 0 else {
            throw MLAError.invalid(layer: label, field: "dNope/dRope", reason: "need dNope ≥ 0, dRope ≥ 0 and a positive sum, got \(dNope)/\(dRope)")
        }
        guard dRope % 2 == 0 else {
            throw MLAError.invalid(layer: label, field: "dRope", reason: "must be even (interleaved pairs), got \(dRope)")
        }
        // Bounding every dimension by 2^20 keeps all the products below (products of at most three
        // dimensions) far from Int overflow, so a hostile config cannot trap.
        for (name, value) in [("hiddenSize", hiddenSize), ("numHeads", numHeads), ("kvRank", kvRank),
                              ("nRopeHeads", nRopeHeads), ("dV", dV), ("dNope", dNope), ("dRope", dRope)]
        where value > MLALayerWeights.maxDimension {
            throw MLAError.invalid(layer: label, field: name, reason: "\(value) exceeds the supported maximum \(MLALayerWeights.maxDimension)")
        }
        if case let .lowRank(rank, _, _, _, _, _) = query, rank > MLALayerWeights.maxDimension {
            throw MLAError.invalid(layer: label, field: "q_lora_rank", reason: "\(rank) exceeds the supported maximum \(MLALayerWeights.maxDimension)")
        }
        let d = hiddenSize, qRows = numHeads * qHeadWidth
        func check(_ field: String, _ array: [Float]?, _ shape: [Int]) throws {
            guard let array else { return }
            guard array.count == shape.reduce(1, *) else {
                throw MLAError.shape(layer: label, field: field, expected: shape, count: array.count)
            }
        }
        switch query {
        case let .full(proj, bias):
            try check("q_proj", proj, [qRows, d])
            try check("q_proj.bias", bias, [qRows])
        case let .lowRank(rank, a, aBias, norm, eps, b):
            guard rank > 0 else { throw MLAError.invalid(layer: label, field: "q_lora_rank", reason: "must be positive, got \(rank)") }
            guard eps > 0 else { throw MLAError.invalid(layer: label, field: "q_a_layernorm.eps", reason: "must be positive, got \(eps)") }
            try check("q_a_proj", a, [rank, d])
            try check("q_a_proj.bias", aBias, [rank])
            try check("q_a_layernorm", norm, [rank])
            try check("q_b_proj", b, [qRows, rank])
        }
        try check("kv_a_proj", kvA, [kvRank, d])
        try check("kv_a_proj.bias", kvABias, [kvRank])
        if let latentNorm {
            try check("kv_a_layernorm", latentNorm.weight, [kvRank])
            guard latentNorm.eps > 0 else {
                throw MLAError.invalid(layer: label, field: "kv_a_layernorm.eps", reason: "must be positive, got \(latentNorm.eps)")
            }
        }
        try check("k_rope_proj", kRope, [nRopeHeads * dRope, d])
        try check("k_rope_proj.bias", kRopeBias, [nRopeHeads * dRope])
        try check("kv_b_proj", kvB, [numHeads * (dNope + dV), kvRank])
        try check("o_proj", oProj, [d, numHeads * dV])
        try check("o_proj.bias", oBias, [d])
        guard ropeHeadOfQueryHead.count == numHeads else {
            throw MLAError.invalid(layer: label, field: "rope_head_of_query_head", reason: "has \(ropeHeadOfQueryHead.count) entries, expected one per query head (\(numHeads))")
        }
        if let bad = ropeHeadOfQueryHead.firstIndex(where: { $0 < 0 || $0 >= nRopeHeads }) {
            throw MLAError.invalid(layer: label, field: "rope_head_of_query_head", reason: "query head \(bad) maps to rope head \(ropeHeadOfQueryHead[bad]), outside 0..<\(nRopeHeads)")
        }
        guard ropeInvFreq.count == nRopeHeads, ropeInvFreq.allSatisfy({ $0.count == dRope / 2 }) else {
            throw MLAError.invalid(layer: label, field: "rope_inv_freq", reason: "expected \(nRopeHeads) rows of \(dRope / 2) frequencies, got \(ropeInvFreq.map(\.count))")
        }
        guard ropeInvFreq.allSatisfy({ $0.allSatisfy(\.isFinite) }), ropeAttentionFactor.isFinite, softmaxScale.isFinite else {
            throw MLAError.invalid(layer: label, field: "rope_inv_freq/rope_attention_factor/softmax_scale", reason: "must be finite")
        }
    }
}
