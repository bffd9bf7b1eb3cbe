/// This toolkit's native MLA format (`model_type` "mla_convert", docs/formats-native-mla.md): the
/// source config's keys describe everything outside attention; the `mla_convert` object describes
/// the MLA attention of each layer.
enum NativeMLAAdapter: ModelAdapter {
    static let modelTypes = ["mla_convert"]

    static func config(from reader: HFConfigReader) throws -> ModelConfig {
        guard let mla = reader.json["mla_convert"], mla.object != nil else {
            throw CheckpointError.missingConfigKey(file: reader.file, key: "mla_convert")
        }
        guard mla["format_version"]?.int == 2 else {
            throw CheckpointError.unsupportedModel(file: reader.file, reason: "mla_convert.format_version is \(mla["format_version"]?.description ?? "missing"), this toolkit reads 2 (convert the model again with this version)")
        }
        var config = try reader.commonConfig(family: .mlaNative, qkvBias: false, outputBias: false,
                                             mlpBias: try reader.bool("mlp_bias", default: false))
        guard let layers = mla["layers"]?.array, layers.count == config.numLayers else {
            throw CheckpointError.invalidConfig(file: reader.file, key: "mla_convert.layers", reason: "needs one entry per layer (\(config.numLayers))")
        }
        config.latentCacheValuesPerLayer = try layers.enumerated().map { i, entry in
            guard let rank = entry["kv_rank"]?.int, let heads = entry["n_rope_heads"]?.int, let dims = entry["rope_dims"]?.int,
                  rank >= 0, heads >= 0, dims >= 0 else {
                throw CheckpointError.invalidConfig(file: reader.file, key: "mla_convert.layers[\(i)]", reason: "needs kv_rank, n_rope_heads, rope_dims")
            }
            let key = "mla_convert.layers[\(i)]"
            try reader.requireProductFits([("\(key).n_rope_heads", heads), ("\(key).rope_dims", dims), ("hidden_size", config.hiddenSize)])
            try reader.requireProductFits([("\(key).kv_rank", rank), ("hidden_size", config.hiddenSize)])
            return try reader.checkedSum(rank, heads * dims, key: "\(key).kv_rank + n_rope_heads × rope_dims")
        }
        return config
    }
}
