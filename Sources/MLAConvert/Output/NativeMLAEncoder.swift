import MLACheckpoint
import MLARuntime
import MLATensor

/// The native MLA format (docs/formats-native-mla.md): an HF directory with the source's non-attention
/// tensors unchanged, every layer's MLA tensors (`MLALayerWeights.nativeTensors`), and config.json with
/// the `mla_convert` object (per-layer records from `nativeLayerEntry`). Holds any conversion: per-layer
/// ranks, several rope heads, biases.
public struct NativeMLAEncoder: MLAModelEncoder {
    public let source: Checkpoint
    /// Stored dtype of every float tensor (quantized source tensors keep theirs).
    public let dtype: DType
    /// Members added to `mla_convert` before `attention` (source, method, calibration).
    public let provenance: [(String, JSONValue)]
    public let writer: CheckpointWriter

    public init(source: Checkpoint, dtype: DType = .f32, provenance: [(String, JSONValue)], writer: CheckpointWriter) {
        self.source = source
        self.dtype = dtype
        self.provenance = provenance
        self.writer = writer
    }

    /// The attention tensor prefix of layer `layer`.
    public static func prefix(_ layer: Int) -> String { "model.layers.\(layer).self_attn." }

    /// The config.json object: the source config with model_type/architectures replaced and the
    /// `mla_convert` object (format version, toolkit, `provenance` members as given, the shared
    /// `attention` object and one entry per layer).
    public static func config(source: ModelConfig, attention: JSONValue, layerEntries: [JSONValue],
                              provenance: [(String, JSONValue)]) -> JSONValue {
        var raw = source.raw.setting("model_type", .string("mla_convert"))
            .setting("architectures", .array([.string("MLAConvertForCausalLM")]))
        raw = raw.removing("mla_convert")
        var mla: [(String, JSONValue)] = [
            ("format_version", JSONValue(2)),
            ("toolkit", .object([("version", .string(ToolkitVersion.string))])),
        ]
        mla += provenance
        mla.append(("attention", attention))
        mla.append(("layers", .array(layerEntries)))
        return raw.setting("mla_convert", .object(mla))
    }

    public func check(_ layer: MLALayerWeights, template: MLALayerWeights) throws {}

    public func entries(template: MLALayerWeights, ranks: [Int]) throws -> [TensorWriteEntry] {
        let copied = try source.passThroughTensors().map {
            TensorWriteEntry(name: $0.name, dtype: $0.dtype.isComputeFloat ? dtype : $0.dtype, shape: $0.shape)
        }
        let converted = ranks.indices.flatMap { l in
            template.nativeTensorShapes(prefix: Self.prefix(l), kvRank: ranks[l]).map { TensorWriteEntry(name: $0.0, dtype: dtype, shape: $0.1) }
        }
        return LayerTensorNames.layerMajor(copied + converted)
    }

    public func convertedLayer(of name: String) -> Int? { LayerTensorNames.attentionLayer(of: name) }

    public func layerTensors(_ layer: MLALayerWeights, index l: Int) throws -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: layer.nativeTensors(prefix: Self.prefix(l)))
    }

    public func layerRecord(_ layer: MLALayerWeights, extras: [(String, JSONValue)]) -> JSONValue? {
        extras.reduce(layer.nativeLayerEntry) { $0.setting($1.0, $1.1) }
    }

    public func sourcePayload(_ entry: TensorWriteEntry) throws -> TensorPayload {
        let tensor = try source.store.tensor(entry.name)
        return .whole(tensor.dtype == entry.dtype ? tensor : tensor.converted(to: entry.dtype))
    }

    public func writeOrder(_ entries: [TensorWriteEntry]) -> [String] { writer.writeOrder(entries) }

    public func write(to output: OutputPlan, entries: [TensorWriteEntry], template: MLALayerWeights, records: () -> [JSONValue],
                      summary: () throws -> JSONValue?, payload: (String) throws -> TensorPayload) throws {
        try writer.write(
            to: output,
            config: { Self.config(source: source.config, attention: template.nativeAttentionEntry, layerEntries: records(), provenance: provenance) },
            entries: entries, metadata: ["mla_convert.kind": "native-mla", "source": source.path],
            auxiliaryFiles: try MLAModelWriter.hfSideFiles(of: source),
            lateFiles: { try MLAModelWriter.summaryFile(summary()) }, payload: payload)
    }
}
