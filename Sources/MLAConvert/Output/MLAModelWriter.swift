import MLACheckpoint
import MLARuntime
import MLATensor

/// The one streaming writer of converted models: any format (`MLAModelEncoder`), layer by layer,
/// through an `OutputPlan` (checked at command start; a failure or a signal leaves no output), every
/// tensor checked finite on its way to disk.
public enum MLAModelWriter {
    /// Writes the converted `layers` (layer i from source layer i); `layerExtras[i]` members are added to
    /// layer i's record (native: `kept_pairs`, `errors`). See the streaming form.
    public static func write(_ encoder: some MLAModelEncoder, to output: OutputPlan, layers: [MLALayerWeights],
                             layerExtras: [[(String, JSONValue)]] = [], summary: JSONValue? = nil) throws {
        guard let first = layers.first else {
            throw CheckpointError.unsupportedModel(file: encoder.source.path, reason: "no converted layers to write")
        }
        try write(encoder, to: output, template: first, ranks: layers.map(\.kvRank), summary: { summary },
                  layer: { (layers[$0], $0 < layerExtras.count ? layerExtras[$0] : [], ()) }, received: { _, _ in })
    }

    /// Streaming form. `layer(l)` converts layer l and returns it with the members to add to its record
    /// and anything the caller keeps of it (`Extra`); it runs on `workers` background threads ahead of
    /// the container (`StreamedLayerTensors`), and `received(l, extra)` is called on this thread when the
    /// container reaches layer l. Memory holds about workers + 1 converted layers.
    ///
    /// `template` (a converted layer, usually layer 0) and `ranks[l]` (each layer's latent width) plan
    /// every tensor before any is converted; a layer the encoder refuses, or that arrives with other
    /// tensors or shapes than planned, fails the write and leaves no output. `summary()` is asked for
    /// after the last tensor.
    public static func write<Extra: Sendable>(
        _ encoder: some MLAModelEncoder, to output: OutputPlan, template: MLALayerWeights, ranks: [Int],
        summary: () throws -> JSONValue?, layer: @escaping @Sendable (Int) throws -> (MLALayerWeights, [(String, JSONValue)], Extra),
        workers: Int = 1, received: @escaping (Int, Extra) -> Void
    ) throws {
        let layerCount = encoder.source.config.numLayers, sourcePath = encoder.source.path
        guard ranks.count == layerCount else {
            throw CheckpointError.unsupportedModel(file: sourcePath, reason: "\(ranks.count) layer ranks for \(layerCount) layers")
        }
        try encoder.check(template, template: template)
        let entries = try encoder.entries(template: template, ranks: ranks)
        let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
        var planned = [[TensorWriteEntry]](repeating: [], count: layerCount)
        for e in entries {
            if let l = encoder.convertedLayer(of: e.name) { planned[l].append(e) }
        }
        let order = encoder.writeOrder(entries)
        var layerOrder: [Int] = [], seen = Set<Int>()
        for name in order { if let l = encoder.convertedLayer(of: name), seen.insert(l).inserted { layerOrder.append(l) } }
        var records = [JSONValue](repeating: .null, count: layerCount)
        let plannedLayers = planned
        let layers = StreamedLayerTensors<(JSONValue?, Extra)>(
            order: layerOrder, workers: workers, source: sourcePath,
            produce: { l in
                let (w, extras, extra) = try layer(l)
                try encoder.check(w, template: template)
                let tensors = try encoder.layerTensors(w, index: l)
                let expected = plannedLayers[l]
                guard tensors.count == expected.count, expected.allSatisfy({ tensors[$0.name]?.shape == $0.shape }) else {
                    let got = tensors.map { "\($0.key) \($0.value.shape)" }.sorted()
                    throw CheckpointError.unsupportedModel(
                        file: sourcePath, reason: "converted layer \(l) has tensors \(got), planned \(expected.map { "\($0.name) \($0.shape)" })")
                }
                let typed = Dictionary(uniqueKeysWithValues: expected.map { e in
                    (e.name, tensors[e.name]!.dtype == e.dtype ? tensors[e.name]! : tensors[e.name]!.converted(to: e.dtype))
                })
                return (typed, (encoder.layerRecord(w, extras: extras), extra))
            },
            received: { l, value in
                records[l] = value.0 ?? .null
                received(l, value.1)
            })
        defer { layers.cancel() }
        try encoder.write(to: output, entries: entries, template: template, records: { records }, summary: summary) { name in
            if let l = encoder.convertedLayer(of: name) { return .whole(try layers.tensor(name, layer: l)) }
            guard let entry = byName[name] else { throw CheckpointError.missingTensor(file: output.path, tensor: name) }
            return try encoder.sourcePayload(entry)
        }
    }

    /// The side files an HF-style output copies from `source` (tokenizer files; built from the GGUF
    /// tokenizer when the source is a GGUF file), without config.json, which the encoder writes.
    public static func hfSideFiles(of source: Checkpoint) throws -> [String: [UInt8]] {
        var files = try BPETokenizer.sideFiles(for: source)
        files["config.json"] = nil
        return files
    }

    /// `summary` serialized as the `mla_convert.json` side file, or no file.
    static func summaryFile(_ summary: JSONValue?) throws -> [String: [UInt8]] {
        guard let summary else { return [:] }
        return ["mla_convert.json": Array((try summary.serialized(indent: 2) + "\n").utf8)]
    }

    /// `t` (times `scale`, if given) as `target`, in blocks of about 8 M values: mapped rows that need
    /// no change pass through untouched, others are widened, scaled and narrowed one block at a time, so
    /// a large table (a 128256 × 4096 embedding is 2 GiB in F32) is never widened whole.
    public static func rowBlocks(_ t: Tensor, scale: Double?, to target: DType) -> TensorPayload {
        guard scale != nil || t.dtype != target, t.shape.count >= 1, t.shape[0] > 0 else {
            return .whole(t.dtype == target ? t : t.converted(to: target))
        }
        let rows = t.shape[0], rowSize = max(t.elementCount / rows, 1)
        let perBlock = max(1, (8 << 20) / rowSize), blocks = (rows + perBlock - 1) / perBlock
        return .rowBlocks(count: blocks) { i in
            let block = t.rows((i * perBlock)..<min((i + 1) * perBlock, rows))
            guard let scale else { return block.converted(to: target) }
            defer { block.releaseMappedPages() }
            return Tensor(floats: block.floats().map { Float(Double($0) * scale) }, shape: block.shape).converted(to: target)
        }
    }
}
