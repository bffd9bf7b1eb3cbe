import MLACheckpoint
import MLATensor

/// Writes a model whose attention has been converted to MLA in the native format
/// (docs/formats-native-mla.md): the source's non-attention tensors unchanged, the MLA tensors of
/// every layer, and config.json with the `mla_convert` object.
public enum NativeMLAWriter {
    /// The config.json object: the source config with model_type/architectures replaced and the
    /// `mla_convert` object (format version, toolkit, attention, per-layer entries, provenance).
    /// `provenance` members (source, method, calibration, ...) are added to `mla_convert` as given;
    /// `layerExtras[i]` members (kept_pairs, errors) to layer i's entry.
    public static func config(source: ModelConfig, layers: [MLALayerWeights], provenance: [(String, JSONValue)],
                              layerExtras: [[(String, JSONValue)]] = []) -> JSONValue {
        var raw = source.raw.setting("model_type", .string("mla_convert"))
            .setting("architectures", .array([.string("MLAConvertForCausalLM")]))
        raw = raw.removing("mla_convert")
        let entries: [JSONValue] = layers.enumerated().map { i, layer in
            var entry = layer.nativeLayerEntry
            for (k, v) in i < layerExtras.count ? layerExtras[i] : [] { entry = entry.setting(k, v) }
            return entry
        }
        var mla: [(String, JSONValue)] = [
            ("format_version", JSONValue(1)),
            ("toolkit", .object([("version", .string(ToolkitVersion.string))])),
        ]
        mla += provenance
        mla.append(("attention", layers.first?.nativeAttentionEntry ?? .null))
        mla.append(("layers", .array(entries)))
        return raw.setting("mla_convert", .object(mla))
    }

    /// Writes the native model to `path` (atomically, streaming the source's non-attention tensors).
    /// Source attention tensors (q/k/v/o projections and biases) are dropped; the MLA tensors of each
    /// layer take their place. Float tensors are stored as `dtype` (the F64 RoPE tables stay F64);
    /// `summary`, when given, is written as `mla_convert.json` beside the weights.
    public static func write(to path: String, source: Checkpoint, layers: [MLALayerWeights], provenance: [(String, JSONValue)],
                             layerExtras: [[(String, JSONValue)]] = [], dtype: DType = .f32, summary: JSONValue? = nil,
                             writer: CheckpointWriter) throws {
        let attentionNames: Set<String> = Set((0..<source.config.numLayers).flatMap { l -> [String] in
            let n = LayerTensorNames(layer: l)
            return [n.qProj, n.kProj, n.vProj, n.oProj, n.qBias, n.kBias, n.vBias, n.oBias]
        })
        var entries: [TensorWriteEntry] = []
        for name in source.store.names where !attentionNames.contains(name) {
            guard let info = source.store.info(name) else { continue }
            entries.append(TensorWriteEntry(name: name, dtype: info.dtype.isComputeFloat ? dtype : info.dtype, shape: info.shape))
        }
        var mlaTensors: [String: Tensor] = [:]
        for (i, layer) in layers.enumerated() {
            for (name, tensor) in layer.nativeTensors(prefix: "model.layers.\(i).self_attn.") {
                mlaTensors[name] = tensor
                entries.append(TensorWriteEntry(name: name, dtype: tensor.dtype == .f64 ? .f64 : dtype, shape: tensor.shape))
            }
        }
        let config = Self.config(source: source.config, layers: layers, provenance: provenance, layerExtras: layerExtras)
        var aux = try BPETokenizer.sideFiles(for: source)
        aux["config.json"] = nil
        if let summary { aux["mla_convert.json"] = Array((summary.serialized(indent: 2) + "\n").utf8) }
        let types = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.dtype) })
        try writer.write(to: path, config: config, entries: entries,
                         metadata: ["mla_convert.kind": "native-mla", "source": source.path],
                         auxiliaryFiles: aux, inputs: [source.path]) { name in
            let tensor = try mlaTensors[name] ?? source.store.tensor(name)
            let target = types[name] ?? tensor.dtype
            return tensor.dtype == target ? tensor : tensor.converted(to: target)
        }
    }
}
