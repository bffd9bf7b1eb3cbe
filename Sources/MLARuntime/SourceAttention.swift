import MLACheckpoint

/// One layer's attention, as the decoder calls it: input x [T × d] (the output of the layer's input
/// RMSNorm) at positions 0..<T, output [T × d] (after o_proj, before the residual add).
/// The source attention below is one implementation; MLA attention is another.
public protocol AttentionBlock: Sendable {
    /// A batch of independent sequences stacked by rows: x [Σ sequences × d], sequence s in its own
    /// rows at positions 0..<sequences[s], attending only to itself; output likewise [Σ sequences × d].
    func forward(_ x: [Float], sequences: [Int]) throws -> [Float]
}

extension AttentionBlock {
    /// One sequence: x [T × d] at positions 0..<T.
    public func forward(_ x: [Float], tokens: Int) throws -> [Float] {
        try forward(x, sequences: [tokens])
    }
}

/// Multi-head / grouped-query / multi-query attention with rotate-half RoPE, as in Llama, Mistral and
/// Qwen2 (docs/method.md §2). Weights are F32, row-major [out × in].
public struct SourceAttention: AttentionBlock {
    public let hiddenSize: Int
    public let numHeads: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let wq: [Float], wk: [Float], wv: [Float], wo: [Float]
    public let bq: [Float]?, bk: [Float]?, bv: [Float]?, bo: [Float]?
    public let rope: RopeFrequencies
    /// Softmax scale τ (1/sqrt(headDim)).
    public let scale: Float

    /// Reads layer `layer` of a llama-like model from `store`.
    public init(config c: ModelConfig, store: any TensorStore, layer: Int, rope: RopeFrequencies) throws {
        let n = LayerTensorNames(layer: layer)
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, d = c.hiddenSize
        hiddenSize = d
        numHeads = c.numHeads
        numKVHeads = c.numKVHeads
        headDim = c.headDim
        wq = try store.floats(n.qProj, shape: [q, d])
        wk = try store.floats(n.kProj, shape: [kv, d])
        wv = try store.floats(n.vProj, shape: [kv, d])
        wo = try store.floats(n.oProj, shape: [d, q])
        bq = c.qkvBias ? try store.floats(n.qBias, shape: [q]) : nil
        bk = c.qkvBias ? try store.floats(n.kBias, shape: [kv]) : nil
        bv = c.qkvBias ? try store.floats(n.vBias, shape: [kv]) : nil
        bo = c.outputBias ? try store.floats(n.oBias, shape: [d]) : nil
        self.rope = rope
        scale = Float(1 / Double(c.headDim).squareRoot())
    }

    /// Queries and keys after RoPE, values of a batch (see `AttentionBlock`): [N × nh·dh],
    /// [N × nkv·dh], [N × nkv·dh] for N = Σ sequences rows.
    public func projections(_ x: [Float], sequences: [Int]) -> (q: [Float], k: [Float], v: [Float]) {
        let qw = numHeads * headDim, kw = numKVHeads * headDim, rows = sequences.reduce(0, +)
        var q = Kernels.linear(x, tokens: rows, weight: wq, outFeatures: qw, inFeatures: hiddenSize, bias: bq)
        var k = Kernels.linear(x, tokens: rows, weight: wk, outFeatures: kw, inFeatures: hiddenSize, bias: bk)
        let v = Kernels.linear(x, tokens: rows, weight: wv, outFeatures: kw, inFeatures: hiddenSize, bias: bv)
        let (cos, sin) = rope.tables(positions: sequences.flatMap { 0..<$0 })
        Kernels.applyRotateHalf(&q, tokens: rows, rowWidth: qw, heads: numHeads, headDim: headDim, cos: cos, sin: sin)
        Kernels.applyRotateHalf(&k, tokens: rows, rowWidth: kw, heads: numKVHeads, headDim: headDim, cos: cos, sin: sin)
        return (q, k, v)
    }

    /// The projections run on all rows of the batch at once (larger GEMMs), attention per sequence.
    public func forward(_ x: [Float], sequences: [Int]) throws -> [Float] {
        let (q, k, v) = projections(x, sequences: sequences)
        let qw = numHeads * headDim, kw = numKVHeads * headDim, group = numHeads / numKVHeads
        let rows = sequences.reduce(0, +), longest = sequences.max() ?? 0
        // Both are written before they are read (GEMMs with beta = 0; the softmax zeroes masked scores).
        var o = [Float](unsafeUninitializedCapacity: rows * qw) { $1 = rows * qw }
        var scores = [Float](unsafeUninitializedCapacity: longest * longest) { $1 = longest * longest }
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    o.withUnsafeMutableBufferPointer { op in
                        scores.withUnsafeMutableBufferPointer { sp in
                            var first = 0
                            for T in sequences {
                                for h in 0..<numHeads {
                                    let j = h / group
                                    Kernels.causalAttentionHead(
                                        q: qp.baseAddress! + first * qw + h * headDim, qStride: qw,
                                        k: kp.baseAddress! + first * kw + j * headDim, kStride: kw,
                                        v: vp.baseAddress! + first * kw + j * headDim, vStride: kw,
                                        queries: T, keys: T, dk: headDim, dv: headDim, scale: scale, scores: sp.baseAddress!,
                                        out: op.baseAddress! + first * qw + h * headDim, outStride: qw)
                                }
                                first += T
                            }
                        }
                    }
                }
            }
        }
        return Kernels.linear(o, tokens: rows, weight: wo, outFeatures: hiddenSize, inFeatures: qw, bias: bo)
    }
}
