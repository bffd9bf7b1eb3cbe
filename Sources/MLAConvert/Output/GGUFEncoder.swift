import Foundation
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

/// Encodes converted layers as a llama.cpp GGUF of architecture `deepseek2` (docs/gguf-export.md): one
/// file that llama.cpp runs with its latent KV cache (`kv_lora_rank + rope` values per token and layer).
///
/// - Dense: `leading_dense_block_count` = block count, no expert keys; `q_lora_rank` 0 (`attn_q`), or the
///   low-rank query's rank (`attn_q_a`, `attn_q_a_norm`, `attn_q_b`; its norm made linear under the
///   file's epsilon like the latent's).
/// - `key_length_mla` / `value_length_mla` set, so llama.cpp takes its MLA path with `attn_k_b`
///   {d_nope, r, n_h} and `attn_v_b` {r, d_v, n_h} (ggml order, innermost first).
/// - One RMSNorm epsilon for every norm: the residual stream is scaled by α = 2^`residualExponent`
///   (embeddings, `attn_output`, `ffn_down`) and the epsilon by α², which leaves every residual norm as it
///   was; under that larger epsilon `attn_kv_a_norm` is a linear-regime norm with latent rows at normal
///   magnitudes (`LinearRegimeNorm` with δ ≤ `latentDeviation`).
/// - RoPE rows stay interleaved (llama.cpp's NORM rope rotates consecutive pairs); the softmax scale
///   must be folded to 1/√(d_nope + d_rope), llama.cpp's `kq_scale`.
/// - 2-D tensors in `dtype` (F32, BF16 or F16), 1-D tensors (norms) in F32, as llama.cpp writes them; or,
///   with `q8_0`, every 2-D tensor as `llama-quantize … Q8_0` stores it: Q8_0 blocks of the F32 values
///   (`GGMLQuantize.q8_0`, ggml's rounding) when its rows are a multiple of 32 values, else F16.
public struct GGUFEncoder: MLAModelEncoder {
    public let source: Checkpoint
    /// Dtype of the 2-D tensors: F32, BF16 or F16 (F32 with `q8_0`: the values quantized).
    public let dtype: DType
    /// Whether 2-D tensors are stored as Q8_0 blocks (F16 where a row is not a multiple of 32 values).
    public let q8_0: Bool
    /// `mla_convert.*` string keys written after the toolkit's own (source, method, budget, …).
    public let provenance: [(String, String)]
    /// The `tokenizer.*` keys: a GGUF source's, copied verbatim; else built from tokenizer.json.
    let tokenizerKeys: [(String, GGUFValue)]
    /// α: the residual stream's scale.
    let alpha: Double
    /// The file's RMSNorm epsilon, α²·ε_source (exact in F32: α is a power of two).
    let eps: Float
    /// GGUF name → source tensor name of every tensor copied from the source, and whether it is scaled by α.
    let copied: [String: (source: String, scaled: Bool)]

    /// log2 α. 2^12 keeps an F16 (or F16-scaled quantized) residual writer finite for weights below 16
    /// in magnitude (the writer refuses a non-finite tensor by name) and makes ε large enough for
    /// latent rows of normal size.
    public static let residualExponent = 12
    /// The bound on the latent norm's relative deviation δ from the identity over every possible input
    /// (`LinearRegimeNorm`); typical tokens sit far below it (docs/gguf-export.md).
    public static let latentDeviation = 0x1p-10

    /// Refuses at once a dtype GGUF is not written in, a source tensor without a GGUF name (an MLP bias)
    /// and a source whose tokenizer cannot be written.
    public init(source: Checkpoint, dtype: DType, q8_0: Bool = false, provenance: [(String, String)]) throws {
        guard [.f32, .bf16, .f16].contains(dtype), !q8_0 || dtype == .f32 else {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "GGUF output is written in f32, bf16, f16 or q8_0 (from f32), not \(dtype.rawValue)\(q8_0 ? " q8_0" : "")")
        }
        self.source = source
        self.dtype = dtype
        self.q8_0 = q8_0
        self.provenance = provenance
        let c = source.config
        alpha = pow(2, Double(Self.residualExponent))
        eps = Float(alpha * alpha) * Float(c.rmsNormEps)
        var copied: [String: (source: String, scaled: Bool)] = [:]
        let downProjs = Set((0..<c.numLayers).map { LayerTensorNames(layer: $0).downProj })
        for info in try source.passThroughTensors() {
            guard let name = GGUFNames.ggufName(info.name), name != "output.weight" else {
                if info.name == ModelTensorNames.lmHead { continue }
                throw CheckpointError.unsupportedModel(file: source.path, reason: "tensor '\(info.name)' has no place in a deepseek2 GGUF (llama.cpp loads no MLP or norm biases); use --format native")
            }
            copied[name] = (info.name, info.name == ModelTensorNames.embedding || downProjs.contains(info.name))
        }
        copied["output.weight"] = (source.store.contains(ModelTensorNames.lmHead) ? ModelTensorNames.lmHead : ModelTensorNames.embedding, false)
        self.copied = copied
        if source.format == .gguf {
            tokenizerKeys = try GGUFFile(path: source.path).metadata.filter { $0.key.hasPrefix("tokenizer.") }.map { ($0.key, $0.value) }
        } else {
            tokenizerKeys = try BPETokenizer.ggufTokenizerData(for: source).ggufMetadata
        }
    }

    static func prefix(_ layer: Int) -> String { "blk.\(layer)." }

    public func check(_ layer: MLALayerWeights, template: MLALayerWeights) throws {
        if source.config.ropeScaling != .none {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "cannot write a deepseek2 GGUF: llama.cpp's deepseek2 applies no RoPE frequency factors, so the source's RoPE scaling would be dropped; use --format native")
        }
        if let reason = DeepSeekV3Encoder.unsupportedReason(layers: [template, layer], source: source.config) {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "cannot write a deepseek2 GGUF: " + reason)
        }
        if case .lowRank(_, _, .some, _, _, _) = layer.query {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "cannot write a deepseek2 GGUF: llama.cpp's attn_q_a has no bias; leave out --q-lora-rank")
        }
        if layer.dNope < 1 {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "cannot write a deepseek2 GGUF: \(layer.label) has no nope dimensions, which llama.cpp requires (use a smaller --rope-dim)")
        }
    }

    /// Names and row-major shapes of layer `l`'s converted attention tensors.
    static func attentionShapes(_ w: MLALayerWeights, layer l: Int) -> [(String, [Int])] {
        let p = prefix(l), d = w.hiddenSize, qRows = w.numHeads * w.qHeadWidth
        let query: [(String, [Int])]
        switch w.query {
        case .full: query = [(p + "attn_q.weight", [qRows, d])]
        case let .lowRank(rank, _, _, _, _, _):
            query = [(p + "attn_q_a.weight", [rank, d]), (p + "attn_q_a_norm.weight", [rank]), (p + "attn_q_b.weight", [qRows, rank])]
        }
        return query + [
            (p + "attn_kv_a_mqa.weight", [w.kvRank + w.dRope, d]),
            (p + "attn_kv_a_norm.weight", [w.kvRank]),
            (p + "attn_k_b.weight", [w.numHeads, w.kvRank, w.dNope]),
            (p + "attn_v_b.weight", [w.numHeads, w.dV, w.kvRank]),
            (p + "attn_output.weight", [d, w.numHeads * w.dV]),
        ]
    }

    public func entries(template: MLALayerWeights, ranks: [Int]) throws -> [TensorWriteEntry] {
        let store = source.store
        func entry(_ name: String, _ shape: [Int]) -> TensorWriteEntry {
            let fallback = q8_0 && shape.count > 1 && shape[shape.count - 1] % GGMLQuantize.q8_0BlockValues != 0
            return TensorWriteEntry(name: name, dtype: shape.count == 1 ? .f32 : fallback ? .f16 : dtype, shape: shape)
        }
        func copiedEntry(_ name: String) throws -> TensorWriteEntry {
            guard let from = copied[name], let info = store.info(from.source) else { throw CheckpointError.missingTensor(file: source.path, tensor: name) }
            return entry(name, info.shape)
        }
        var entries = try ["token_embd.weight", "output_norm.weight", "output.weight"].map(copiedEntry)
        for l in 0..<source.config.numLayers {
            let p = Self.prefix(l)
            entries.append(try copiedEntry(p + "attn_norm.weight"))
            entries += Self.attentionShapes(template, layer: l).map { entry($0.0, $0.1) }
            entries += try ["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].map { try copiedEntry(p + $0 + ".weight") }
        }
        let missing = Set(copied.keys).subtracting(entries.map(\.name))
        if let extra = missing.sorted().first, let from = copied[extra] {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "tensor '\(from.source)' has no place in a deepseek2 GGUF; use --format native")
        }
        return entries
    }

    public func convertedLayer(of name: String) -> Int? {
        guard copied[name] == nil, name.hasPrefix("blk.") else { return nil }
        return Int(name.dropFirst(4).prefix { $0 != "." })
    }

    /// Layer `l`'s attention in the GGUF layout (F32): latent rows scaled into the linear regime of
    /// `attn_kv_a_norm` (and a low-rank query's into that of `attn_q_a_norm`) under the file's epsilon,
    /// `attn_k_b` = W_UK,hᵀ and `attn_v_b` = W_UV,h per head, `attn_output` times α.
    public func layerTensors(_ w: MLALayerWeights, index l: Int) throws -> [String: Tensor] {
        let d = w.hiddenSize, r = w.kvRank, headRows = w.dNope + w.dV
        let inputNorm = try source.store.floats(LayerTensorNames(layer: l).inputNorm, shape: [d]).map(Double.init)
        func linearNorm(_ rows: Matrix<Double>) throws -> LinearRegimeNorm {
            try LinearRegimeNorm(rows: rows, bias: nil, inputNorm: inputNorm, eps: Double(eps), maxDeviation: Self.latentDeviation)
        }
        let query: [[Float]]
        switch w.query {
        case let .full(proj, _):
            query = [proj]
        case let .lowRank(rank, a, _, qNorm, qEps, b):
            // The query's linear map A = a·γ/√ε_q (its norm is linear in the model's own form), re-made
            // linear under the file's epsilon.
            let unscale = Double(qNorm[0]) / Double(qEps).squareRoot()
            let rows = Matrix(rows: rank, cols: d, values: a.map { Double($0) * unscale })
            let qNormHere = try linearNorm(rows)
            query = [rows.values.map { Float($0 * qNormHere.rowScale) }, [Float](repeating: Float(qNormHere.weight), count: rank), b]
        }
        let norm = try linearNorm(Matrix(rows: r, cols: d, values: w.kvA.map(Double.init)))
        var kB = [Float](repeating: 0, count: w.numHeads * r * w.dNope)
        var vB = [Float](repeating: 0, count: w.numHeads * w.dV * r)
        for h in 0..<w.numHeads {
            for i in 0..<w.dNope {
                for j in 0..<r { kB[(h * r + j) * w.dNope + i] = w.kvB[(h * headRows + i) * r + j] }
            }
            let values = (h * headRows + w.dNope) * r
            vB.replaceSubrange((h * w.dV * r)..<((h + 1) * w.dV * r), with: w.kvB[values..<(values + w.dV * r)])
        }
        let s = norm.rowScale
        let values: [[Float]] = query + [
            w.kvA.map { Float(Double($0) * s) } + w.kRope, [Float](repeating: Float(norm.weight), count: r), kB, vB,
            w.oProj.map { Float(Double($0) * alpha) },
        ]
        return Dictionary(uniqueKeysWithValues: zip(Self.attentionShapes(w, layer: l), values).map {
            ($0.0.0, Tensor(floats: $0.1, shape: $0.0.1))
        })
    }

    public func sourcePayload(_ entry: TensorWriteEntry) throws -> TensorPayload {
        guard let from = copied[entry.name] else { throw CheckpointError.missingTensor(file: source.path, tensor: entry.name) }
        return MLAModelWriter.rowBlocks(try source.store.tensor(from.source), scale: from.scaled ? alpha : nil, to: entry.dtype)
    }

    public func writeOrder(_ entries: [TensorWriteEntry]) -> [String] { entries.map(\.name) }

    /// The `general.*`, `deepseek2.*`, `mla_convert.*` and `tokenizer.*` keys.
    func metadata(template w: MLALayerWeights) -> [(String, GGUFValue)] {
        let c = source.config, a = "deepseek2."
        func u32(_ n: Int) -> GGUFValue { .uint32(UInt32(n)) }
        let theta = DeepSeekV3Encoder.ropeTheta(w.ropeInvFreq[0], dRope: w.dRope) ?? 10000
        let fileType: UInt32 = q8_0 ? 7 : dtype == .f32 ? 0 : dtype == .f16 ? 1 : 32
        var queryRank = 0
        if case let .lowRank(rank, _, _, _, _, _) = w.query { queryRank = rank }
        var keys: [(String, GGUFValue)] = [
            ("general.architecture", .string("deepseek2")),
            ("general.name", .string(URL(fileURLWithPath: source.path).deletingPathExtension().lastPathComponent + " (MLA)")),
            ("general.file_type", .uint32(fileType)),
            ("mla_convert.kind", .string("deepseek2-mla")),
            ("mla_convert.toolkit_version", .string(ToolkitVersion.string)),
            ("mla_convert.residual_scale", .float32(Float(alpha))),
            ("mla_convert.source_rms_norm_eps", .float32(Float(c.rmsNormEps))),
        ]
        keys += provenance.map { ("mla_convert." + $0.0, .string($0.1)) }
        keys += [
            (a + "block_count", u32(c.numLayers)), (a + "context_length", u32(c.maxPositions)),
            (a + "embedding_length", u32(c.hiddenSize)), (a + "feed_forward_length", u32(c.intermediateSize)),
            (a + "attention.head_count", u32(w.numHeads)), (a + "attention.head_count_kv", u32(1)),
            (a + "rope.freq_base", .float32(Float(theta))), (a + "attention.layer_norm_rms_epsilon", .float32(eps)),
            (a + "leading_dense_block_count", u32(c.numLayers)), (a + "vocab_size", u32(c.vocabSize)),
            (a + "attention.q_lora_rank", u32(queryRank)), (a + "attention.kv_lora_rank", u32(w.kvRank)),
            (a + "attention.key_length", u32(w.kvRank + w.dRope)), (a + "attention.value_length", u32(w.kvRank)),
            (a + "attention.key_length_mla", u32(w.dNope + w.dRope)), (a + "attention.value_length_mla", u32(w.dV)),
            (a + "expert_feed_forward_length", u32(c.intermediateSize)), (a + "expert_shared_count", u32(0)),
            (a + "rope.dimension_count", u32(w.dRope)),
        ]
        return keys + tokenizerKeys
    }

    public func write(to output: OutputPlan, entries: [TensorWriteEntry], template: MLALayerWeights, records: () -> [JSONValue],
                      summary: () throws -> JSONValue?, payload: (String) throws -> TensorPayload) throws {
        guard output.kind == .file else {
            throw CheckpointError.writeFailed(path: output.path, reason: "the output plan is not for a single GGUF file (caller bug)")
        }
        try output.write { file in
            let quantized = q8_0 ? Set(entries.filter { $0.shape.count > 1 && $0.dtype == .f32 }.map(\.name)) : []
            try GGUFWriter.write(path: file, metadata: metadata(template: template), entries: entries, q8_0: quantized) { sink in
                try payload(sink.entry.name).write(to: sink)
            }
        }
    }
}
