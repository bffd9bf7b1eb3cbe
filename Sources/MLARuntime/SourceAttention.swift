import MLACheckpoint

/// One layer's attention, as the decoder calls it: input x [T × d] (the output of the layer's input
/// RMSNorm) at positions 0..<T, output [T × d] (after o_proj, before the residual add).
/// The source attention below is one implementation; MLA attention is another.
public protocol AttentionBlock: Sendable {
    func forward(_ x: [Float], tokens: Int) throws -> [Float]
}

/// Multi-head / grouped-query / multi-query attention with rotate-half RoPE, as in Llama, Mistral and
/// Qwen2 (`mla-math.md` §2). Weights are F32, row-major [out × in].
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

    /// Queries and keys after RoPE, values: [T × nh·dh], [T × nkv·dh], [T × nkv·dh].
    public func projections(_ x: [Float], tokens T: Int) -> (q: [Float], k: [Float], v: [Float]) {
        let qw = numHeads * headDim, kw = numKVHeads * headDim
        var q = Kernels.linear(x, tokens: T, weight: wq, outFeatures: qw, inFeatures: hiddenSize, bias: bq)
        var k = Kernels.linear(x, tokens: T, weight: wk, outFeatures: kw, inFeatures: hiddenSize, bias: bk)
        let v = Kernels.linear(x, tokens: T, weight: wv, outFeatures: kw, inFeatures: hiddenSize, bias: bv)
        let (cos, sin) = rope.tables(positions: 0..<T)
        Kernels.applyRotateHalf(&q, tokens: T, rowWidth: qw, heads: numHeads, headDim: headDim, cos: cos, sin: sin)
        Kernels.applyRotateHalf(&k, tokens: T, rowWidth: kw, heads: numKVHeads, headDim: headDim, cos: cos, sin: sin)
        return (q, k, v)
    }

    public func forward(_ x: [Float], tokens T: Int) throws -> [Float] {
        let (q, k, v) = projections(x, tokens: T)
        let qw = numHeads * headDim, kw = numKVHeads * headDim, group = numHeads / numKVHeads
        var o = [Float](repeating: 0, count: T * qw)
        var scores = [Float](repeating: 0, count: T * T)
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    o.withUnsafeMutableBufferPointer { op in
                        scores.withUnsafeMutableBufferPointer { sp in
                            for h in 0..<numHeads {
                                let j = h / group
                                Kernels.causalAttentionHead(
                                    q: qp.baseAddress! + h * headDim, qStride: qw,
                                    k: kp.baseAddress! + j * headDim, kStride: kw,
                                    v: vp.baseAddress! + j * headDim, vStride: kw,
                                    tokens: T, dk: headDim, dv: headDim, scale: scale, scores: sp.baseAddress!,
                                    out: op.baseAddress! + h * headDim, outStride: qw)
                            }
                        }
                    }
                }
            }
        }
        return Kernels.linear(o, tokens: T, weight: wo, outFeatures: hiddenSize, inFeatures: qw, bias: bo)
    }
}
