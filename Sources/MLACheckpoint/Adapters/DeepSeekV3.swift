/// DeepSeek-V3 checkpoints with dense MLPs in every layer (`model_type` "deepseek_v3"), as this
/// toolkit exports them (docs/deepseek-export.md). The attention is MLA and is read by the runtime's MLA
/// loader; this adapter describes the rest and the cache. MoE layers are refused.
enum DeepSeekV3Adapter: ModelAdapter {
    static let modelTypes = ["deepseek_v3"]

    static func config(from reader: HFConfigReader) throws -> ModelConfig {
        let layers = try reader.layerCount()
        let routed = reader.has("n_routed_experts")
        let firstDense = try reader.int("first_k_dense_replace", default: 0)
        if routed && firstDense < layers {
            throw CheckpointError.unsupportedModel(
                file: reader.file,
                reason: "layers \(firstDense)..<\(layers) are mixture-of-experts (first_k_dense_replace \(firstDense)); only dense DeepSeek-V3 models are read")
        }
        let heads = try reader.positiveInt("num_attention_heads")
        let nope = try reader.int("qk_nope_head_dim"), rope = try reader.int("qk_rope_head_dim")
        let rank = try reader.positiveInt("kv_lora_rank")
        guard nope >= 0, rope >= 0, rope % 2 == 0 else {
            throw CheckpointError.invalidConfig(file: reader.file, key: "qk_rope_head_dim", reason: "must be even and non-negative")
        }
        let hidden = ("hidden_size", try reader.positiveInt("hidden_size"))
        let intermediate = ("intermediate_size", try reader.positiveInt("intermediate_size"))
        let vocab = ("vocab_size", try reader.positiveInt("vocab_size"))
        let headDim = try reader.checkedSum(nope, rope, key: "qk_nope_head_dim + qk_rope_head_dim")
        let cache = try reader.checkedSum(rank, rope, key: "kv_lora_rank + qk_rope_head_dim")
        try reader.requireProductFits([("num_attention_heads", heads), ("qk_nope_head_dim + qk_rope_head_dim", headDim), hidden])
        try reader.requireProductFits([("kv_lora_rank + qk_rope_head_dim", cache), hidden])
        try reader.requireProductFits([vocab, hidden])
        try reader.requireProductFits([intermediate, hidden])
        let maxPositions = try reader.positiveInt("max_position_embeddings", default: 4096)
        let (theta, scaling) = try reader.rope(maxPositions: maxPositions)
        if let act = reader.string("hidden_act"), act != "silu" {
            throw CheckpointError.unsupportedModel(file: reader.file, reason: "hidden_act '\(act)' (only silu/SwiGLU MLPs are supported)")
        }
        return ModelConfig(
            family: .deepseekV3, numLayers: layers, hiddenSize: hidden.1,
            intermediateSize: intermediate.1, numHeads: heads, numKVHeads: heads,
            headDim: headDim, vocabSize: vocab.1, maxPositions: maxPositions,
            ropeTheta: theta, ropeScaling: scaling, rmsNormEps: try reader.positiveDouble("rms_norm_eps", default: 1e-6),
            qkvBias: false, outputBias: false, mlpBias: false,
            tiedEmbeddings: try reader.bool("tie_word_embeddings", default: false),
            bosTokenId: try reader.optionalInt("bos_token_id"), eosTokenId: try reader.optionalInt("eos_token_id"),
            raw: reader.json, latentCacheValuesPerLayer: Array(repeating: cache, count: layers))
    }
}
