/// A source-model family: which `model_type` values it handles and how its config normalizes.
protocol ModelAdapter {
    static var modelTypes: [String] { get }
    static func config(from reader: HFConfigReader) throws -> ModelConfig
}

/// Families known not to be convertible, with the reason given to the user.
private let refusedModelTypes: [String: String] = [
    "qwen3": "per-head q_norm/k_norm between projection and RoPE make keys non-linear in the input",
    "qwen3_moe": "per-head q_norm/k_norm between projection and RoPE make keys non-linear in the input",
    "gemma3": "per-head q_norm/k_norm and sliding-window layers",
    "gemma3_text": "per-head q_norm/k_norm and sliding-window layers",
    "gemma2": "sliding-window layers and logit soft-capping",
    "olmo2": "q_norm/k_norm over the projected keys make keys non-linear in the input",
    "deepseek_v2": "DeepSeek-V2 checkpoints are not read yet (DeepSeek-V3 dense checkpoints are)",
]

public enum ModelAdapters {
    static var all: [any ModelAdapter.Type] {
        [
            LlamaAdapter.self, MistralAdapter.self, Qwen2Adapter.self, DeepSeekV3Adapter.self, NativeMLAAdapter.self,
        ]
    }

    /// `model_type` values this toolkit converts.
    public static var supportedModelTypes: [String] { all.flatMap { $0.modelTypes } }

    /// Normalizes a Hugging Face `config.json` object; `file` names it in errors.
    /// Decode, validate, build: unknown or refused model types fail with the reason.
    public static func config(from json: JSONValue, file: String) throws -> ModelConfig {
        let reader = try HFConfigReader(json: json, file: file)
        guard let modelType = reader.string("model_type") else {
            throw CheckpointError.missingConfigKey(file: file, key: "model_type")
        }
        if let reason = refusedModelTypes[modelType] {
            throw CheckpointError.unsupportedModel(file: file, reason: "model_type '\(modelType)': \(reason)")
        }
        guard let adapter = all.first(where: { $0.modelTypes.contains(modelType) }) else {
            throw CheckpointError.unsupportedModel(
                file: file,
                reason: "model_type '\(modelType)' is not supported (supported: \(supportedModelTypes.joined(separator: ", ")))")
        }
        return try adapter.config(from: reader)
    }
}
