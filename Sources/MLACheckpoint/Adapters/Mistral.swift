/// Mistral family: `model_type` "mistral". No biases. `sliding_window` defaults to 4096 in
/// transformers; a window shorter than the context makes attention non-global, which the converted
/// (global) MLA attention would not reproduce, so it is refused unless it covers the whole context.
enum MistralAdapter: ModelAdapter {
    static let modelTypes = ["mistral"]

    static func config(from reader: HFConfigReader) throws -> ModelConfig {
        let config = try reader.commonConfig(family: .mistral, qkvBias: false, outputBias: false, mlpBias: false)
        let window: Int? = reader.json["sliding_window"].map { $0.isNull ? nil : $0.int } ?? 4096
        if let window, window < config.maxPositions {
            throw CheckpointError.unsupportedModel(
                file: reader.file,
                reason: "sliding_window \(window) is shorter than max_position_embeddings \(config.maxPositions); sliding-window attention is not converted")
        }
        return config
    }
}
