/// Llama family (Llama 2/3, SmolLM, TinyLlama, ...): `model_type` "llama".
/// `attention_bias` adds biases to q, k, v and o; `mlp_bias` to the MLP (transformers `LlamaConfig`).
enum LlamaAdapter: ModelAdapter {
    static let modelTypes = ["llama"]

    static func config(from reader: HFConfigReader) throws -> ModelConfig {
        let attentionBias = try reader.bool("attention_bias", default: false)
        return try reader.commonConfig(family: .llama, qkvBias: attentionBias, outputBias: attentionBias,
                                       mlpBias: try reader.bool("mlp_bias", default: false))
    }
}
