import MLACheckpoint
import MLATensor

/// Writes a model whose attention has been converted to MLA in the native format
/// (docs/formats-native-mla.md): the source's non-attention tensors unchanged, the MLA tensors of
/// every layer, and config.json with the `mla_convert` object.
public enum NativeMLAWriter {
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

    /// Writes converted `layers` (layer i from source layer i); `layerExtras[i]` members (kept_pairs,
    /// errors) are added to layer i's config entry. See the streaming form.
    public static func write(to output: OutputPlan, source: Checkpoint, layers: [MLALayerWeights], provenance: [(String, JSONValue)],
                             layerExtras: [[(String, JSONValue)]] = [], dtype: DType = .f32, summary: JSONValue? = nil,
                             writer: CheckpointWriter) throws {
        guard let first = layers.first else { throw CheckpointError.unsupportedModel(file: source.path, reason: "no layers to write") }
        try write(to: output, source: source, template: first, ranks: layers.map(\.kvRank), provenance: provenance, dtype: dtype,
                  summary: { summary }, writer: writer,
                  layer: { (layers[$0], $0 < layerExtras.count ? layerExtras[$0] : [], ()) }, received: { _, _ in })
    }

    /// Writes the native model to `output` atomically, streaming, layer by layer (`LayerTensorNames.layerMajor`):
    /// the source's non-attention tensors are copied as they are reached, and `layer(l)` (the converted
    /// layer, the members to add to its config entry, and anything the caller keeps, `Extra`) runs on a
    /// background thread one layer ahead of the writer (`StreamedLayerTensors`); `received(l, extra)` is called on this thread when the writer
    /// reaches layer l. Memory holds about workers + 1 converted layers.
    ///
    /// `template` (a converted layer) and `ranks[l]` (each layer's latent width) plan every layer's
    /// tensors before any is converted; a layer that arrives with other tensors or shapes fails the
    /// write, which leaves no output. Source attention tensors (q/k/v/o projections and biases) are
    /// dropped. Float tensors are stored as `dtype`; config.json and `summary()` (as `mla_convert.json`)
    /// are written after the tensors.
    public static func write<Extra: Sendable>(
        to output: OutputPlan, source: Checkpoint, template: MLALayerWeights, ranks: [Int], provenance: [(String, JSONValue)],
        dtype: DType, summary: () throws -> JSONValue?, writer: CheckpointWriter,
        layer: @escaping @Sendable (Int) throws -> (MLALayerWeights, [(String, JSONValue)], Extra),
        workers: Int = 1, received: @escaping (Int, Extra) -> Void
    ) throws {
        let c = source.config
        guard ranks.count == c.numLayers else {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "\(ranks.count) layer ranks for \(c.numLayers) layers")
        }
        var entries = try source.passThroughTensors().map {
            TensorWriteEntry(name: $0.name, dtype: $0.dtype.isComputeFloat ? dtype : $0.dtype, shape: $0.shape)
        }
        let planned = (0..<c.numLayers).map { template.nativeTensorShapes(prefix: prefix($0), kvRank: ranks[$0]) }
        entries = LayerTensorNames.layerMajor(entries + planned.flatMap { $0.map { TensorWriteEntry(name: $0.0, dtype: dtype, shape: $0.1) } })
        var aux = try BPETokenizer.sideFiles(for: source)
        aux["config.json"] = nil
        let types = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.dtype) })
        var layerEntries = [JSONValue](repeating: .null, count: c.numLayers)
        let sourcePath = source.path
        let layers = StreamedLayerTensors<(JSONValue, Extra)>(
            order: LayerTensorNames.attentionLayerOrder(writer.writeOrder(entries)), workers: workers, source: source.path,
            produce: { l in
                let (w, extras, extra) = try layer(l)
                let tensors = w.nativeTensors(prefix: prefix(l))
                let shapes = tensors.map { ($0.0, $0.1.shape) }
                guard shapes.count == planned[l].count, zip(shapes, planned[l]).allSatisfy({ $0.0 == $1.0 && $0.1 == $1.1 }) else {
                    throw CheckpointError.unsupportedModel(file: sourcePath, reason: "converted layer \(l) has tensors \(shapes), planned \(planned[l])")
                }
                var entry = w.nativeLayerEntry
                for (k, v) in extras { entry = entry.setting(k, v) }
                return (Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, $0.1.converted(to: dtype)) }), (entry, extra))
            },
            received: { l, value in
                layerEntries[l] = value.0
                received(l, value.1)
            })
        defer { layers.cancel() }
        try writer.write(
            to: output,
            config: { config(source: c, attention: template.nativeAttentionEntry, layerEntries: layerEntries, provenance: provenance) },
            entries: entries, metadata: ["mla_convert.kind": "native-mla", "source": source.path], auxiliaryFiles: aux,
            lateFiles: { try summary().map { ["mla_convert.json": Array((try $0.serialized(indent: 2) + "\n").utf8)] } ?? [:] }
        ) { name in
            if let l = LayerTensorNames.attentionLayer(of: name) { return .whole(try layers.tensor(name, layer: l)) }
            let tensor = try source.store.tensor(name)
            let target = types[name] ?? tensor.dtype
            return .whole(tensor.dtype == target ? tensor : tensor.converted(to: target))
        }
    }

    static func prefix(_ layer: Int) -> String { "model.layers.\(layer).self_attn." }
}
