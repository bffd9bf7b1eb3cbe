import MLACheckpoint

/// The head merge (`docs/method.md` §4.A): a GQA/MHA layer written as MLA without any loss, the latent
/// being the values of all KV heads (r = n_kv·d_h), every KV head's key a rope key head carrying all its
/// pairs (n_rope = n_kv, d_rope = d_h, d_nope = 0), and kv_b_proj copying each query head's KV group out
/// of the latent. Rope rows move from rotate-half to the interleaved storage of MLA (new row 2i+t = old
/// row t·d_h/2 + i), a permutation. Nothing is truncated, so the model computes the same function.
///
/// No converter runs this: gqa2mla and mha2mla work on the stacked KV projections directly, where the
/// merge is only a change of view. It is the exact MLA model the MLA runtime is checked and timed on
/// (its tests, `mla-bench decode`), with a cache as large as the source's.
extension MLALayerWeights {
    /// Layer `layer` of the source model `c`/`store` as MLA weights. Source biases are not handled here;
    /// a model with them is refused.
    public static func headMerge(_ c: ModelConfig, _ store: any TensorStore, layer: Int) throws -> MLALayerWeights {
        guard !c.qkvBias && !c.outputBias else {
            throw CheckpointError.unsupportedModel(file: "config.json", reason: "head merge of attention biases is not implemented")
        }
        let n = LayerTensorNames(layer: layer)
        let d = c.hiddenSize, hd = c.headDim, nkv = c.numKVHeads, nh = c.numHeads
        var kvB = [Float](repeating: 0, count: nh * hd * nkv * hd)
        for h in 0..<nh {
            let j = h / c.groupSize
            for i in 0..<hd { kvB[(h * hd + i) * (nkv * hd) + j * hd + i] = 1 }
        }
        let rope = RopeFrequencies(config: c)
        let weights = MLALayerWeights(
            label: n.prefix + "self_attn.", hiddenSize: d, numHeads: nh, dNope: 0, dRope: hd, dV: hd, kvRank: nkv * hd,
            nRopeHeads: nkv, ropeHeadOfQueryHead: (0..<nh).map { $0 / c.groupSize },
            query: .full(proj: Self.rotateHalfRowsInterleaved(try store.floats(n.qProj, shape: [nh * hd, d]), heads: nh, headDim: hd, cols: d), bias: nil),
            kvA: try store.floats(n.vProj, shape: [nkv * hd, d]), kvABias: nil, latentNorm: nil,
            kRope: Self.rotateHalfRowsInterleaved(try store.floats(n.kProj, shape: [nkv * hd, d]), heads: nkv, headDim: hd, cols: d),
            kRopeBias: nil, kvB: kvB, oProj: try store.floats(n.oProj, shape: [d, nh * hd]), oBias: nil,
            ropeInvFreq: Array(repeating: rope.inverseFrequencies, count: nkv), ropeAttentionFactor: rope.attentionFactor,
            softmaxScale: Float(1 / Double(hd).squareRoot()))
        try weights.validate()
        return weights
    }

    /// Rows of `heads` blocks of `headDim` rows (each `cols` wide) from rotate-half to interleaved order.
    private static func rotateHalfRowsInterleaved(_ w: [Float], heads: Int, headDim: Int, cols: Int) -> [Float] {
        let half = headDim / 2
        var out = w
        for h in 0..<heads {
            for i in 0..<half {
                for t in 0..<2 {
                    let src = (h * headDim + t * half + i) * cols, dst = (h * headDim + 2 * i + t) * cols
                    out.replaceSubrange(dst..<(dst + cols), with: w[src..<(src + cols)])
                }
            }
        }
        return out
    }
}
