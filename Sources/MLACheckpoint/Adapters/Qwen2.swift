/// Qwen2 / Qwen2.5 family: `model_type` "qwen2". Always q/k/v biases, no o bias. Sliding-window
/// layers (`use_sliding_window` true) are refused: their attention is not global.
enum Qwen2Adapter: ModelAdapter {
    static let modelTypes = ["qwen2"]

    static func config(from reader: HFConfigReader) throws -> ModelConfig {
        if try reader.bool("use_sliding_window", default: false) {
            throw CheckpointError.unsupportedModel(
                file: reader.file, reason: "use_sliding_window is true; sliding-window attention layers are not converted")
        }
        return try reader.commonConfig(family: .qwen2, qkvBias: true, outputBias: false, mlpBias: false)
    }
}
