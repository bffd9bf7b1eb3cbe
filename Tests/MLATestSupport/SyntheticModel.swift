import MLACheckpoint
import MLATensor

/// Small random llama-like checkpoints (hidden 64, head dim 16, 2 layers, vocab 97) in memory.
public enum SyntheticModel {
    /// Token ids inside the vocabulary of 97.
    public static let tokens = [5, 17, 3, 96, 42, 42, 0, 64, 11, 7, 88, 23]

    /// A model of `heads` query and `kvHeads` KV heads with the given biases, tying, RoPE scaling and family,
    /// its weights drawn from `seed`.
    public static func make(heads: Int = 4, kvHeads: Int = 2, qkvBias: Bool = false, outputBias: Bool = false,
                            tied: Bool = true, scaling: RopeScaling = .none, family: ModelFamily = .llama, seed: UInt64 = 1)
        -> (ModelConfig, InMemoryTensorStore) {
        let d = 64, hd = 16, f = 96, v = 97, layers = 2
        let config = ModelConfig(family: family, numLayers: layers, hiddenSize: d, intermediateSize: f, numHeads: heads,
                                 numKVHeads: kvHeads, headDim: hd, vocabSize: v, maxPositions: 256, ropeTheta: 10000,
                                 ropeScaling: scaling, rmsNormEps: 1e-5, qkvBias: qkvBias, outputBias: outputBias,
                                 mlpBias: false, tiedEmbeddings: tied, bosTokenId: nil, eosTokenId: nil, raw: .object([]))
        var state = seed
        func random(_ count: Int, scale: Float) -> [Float] {
            (0..<count).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
            }
        }
        var store = InMemoryTensorStore(label: "synthetic")
        func put(_ name: String, _ shape: [Int], scale: Float, offset: Float = 0) {
            store.set(name, Tensor(floats: random(shape.reduce(1, *), scale: scale).map { $0 + offset }, shape: shape))
        }
        put(ModelTensorNames.embedding, [v, d], scale: 1)
        put(ModelTensorNames.finalNorm, [d], scale: 0.2, offset: 1)
        if !tied { put(ModelTensorNames.lmHead, [v, d], scale: 0.3) }
        for l in 0..<layers {
            let n = LayerTensorNames(layer: l)
            put(n.inputNorm, [d], scale: 0.2, offset: 1)
            put(n.postAttentionNorm, [d], scale: 0.2, offset: 1)
            put(n.qProj, [heads * hd, d], scale: 0.25)
            put(n.kProj, [kvHeads * hd, d], scale: 0.25)
            put(n.vProj, [kvHeads * hd, d], scale: 0.25)
            put(n.oProj, [d, heads * hd], scale: 0.25)
            if qkvBias {
                put(n.qBias, [heads * hd], scale: 0.5)
                put(n.kBias, [kvHeads * hd], scale: 0.5)
                put(n.vBias, [kvHeads * hd], scale: 0.5)
            }
            if outputBias { put(n.oBias, [d], scale: 0.5) }
            put(n.gateProj, [f, d], scale: 0.2)
            put(n.upProj, [f, d], scale: 0.2)
            put(n.downProj, [d, f], scale: 0.2)
        }
        return (config, store)
    }
}
