import Foundation
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

/// Encodes converted layers as a stock DeepSeek-V3 checkpoint (`docs/deepseek-export.md`, `docs/method.md` §8) that HF
/// transformers, vLLM and SGLang load unmodified:
/// - one shared rope key whose frequencies equal DeepSeek's table for some `rope_theta` (checked);
/// - `kv_a_layernorm` in the linear regime (weight 2^k, latent rows times √ε·2^-k), so it changes nothing;
/// - `rms_norm_eps` 1e-6 for every engine, with the residual stream rescaled by α = √(1e-6/ε_source)
///   (embeddings, o_proj, down_proj times α; the LM head keeps the original embeddings, untied);
/// - no attention biases (vLLM and SGLang skip them silently), only biases that drop out exactly.
public struct DeepSeekV3Encoder: MLAModelEncoder {
    /// The eps HF uses for DeepSeek's latent norms whatever the config says, and so the config's eps.
    public static let eps = 1e-6

    /// Why a conversion cannot be written as DeepSeek-V3, with the option that would fix it.
    public static func unsupportedReason(layers: [MLALayerWeights], source: ModelConfig) -> String? {
        guard let first = layers.first else { return "no layers" }
        if source.ropeScaling != .none {
            return "the source's RoPE scaling cannot be expressed in DeepSeek's table for all engines (vLLM and SGLang rewrite it to deepseek_yarn); use --format native"
        }
        for w in layers {
            if w.nRopeHeads != 1 {
                return "\(w.label): \(w.nRopeHeads) rope key heads; DeepSeek-V3 has one shared rope key (use --rope-strategy rorope, or --format native)"
            }
            if w.kvRank != first.kvRank || w.dRope != first.dRope {
                return "\(w.label): kv_lora_rank \(w.kvRank) differs from layer 0's \(first.kvRank); DeepSeek-V3 has one rank (use --rank-allocation uniform, or --format native)"
            }
            let source = "model.layers." + (w.label.split(separator: ".").dropFirst(2).first.map(String.init) ?? "?") + ".self_attn."
            if w.kRopeBias != nil {
                return "\(source)k_proj.bias: its rope part needs kv_a_proj_with_mqa.bias, which vLLM and SGLang do not load; use --format native"
            }
            if w.oBias != nil {
                return "\(source)v_proj.bias / o_proj.bias: they need o_proj.bias, which vLLM and SGLang do not load; use --format native"
            }
            if case let .full(_, bias) = w.query, bias != nil {
                return "\(source)q_proj.bias: DeepSeek-V3 has no query bias slot; use --format native"
            }
            let expected = Float(1 / Double(w.dNope + w.dRope).squareRoot())
            if w.softmaxScale != expected { return "\(w.label): softmax scale \(w.softmaxScale) is not DeepSeek's (d_nope + d_rope)^-1/2 (internal: fold the scale)" }
            if ropeTheta(w.ropeInvFreq[0], dRope: w.dRope) == nil {
                return "\(w.label): the kept RoPE frequencies are not DeepSeek's table b'^(-2i/d_rope) for any base (keep the highest pairs or a uniform stride from pair 0, or use --format native)"
            }
        }
        return nil
    }

    /// The base b' with θ_i = b'^(-2i/dRope) for every slot (to 1e-9 relative), or nil. The nearest
    /// integer when its table matches too: bases are integers in practice, and the base recovered from
    /// a uniform stride (100000 from every 4th pair) carries float noise (100000.00000000003).
    public static func ropeTheta(_ invFreq: [Double], dRope: Int) -> Double? {
        guard let first = invFreq.first, abs(first - 1) < 1e-12 else { return nil }
        guard invFreq.count > 1 else { return 10000 }
        let base = pow(invFreq[1], -Double(dRope) / 2)
        func matches(_ b: Double) -> Bool {
            zip(MLALayerWeights.deepSeekInvFreq(theta: b, dRope: dRope), invFreq).allSatisfy { abs($0 - $1) <= 1e-9 * $1 }
        }
        guard matches(base) else { return nil }
        return base.rounded() >= 1 && matches(base.rounded()) ? base.rounded() : base
    }

    /// The config.json object (`docs/deepseek-export.md`, values from the source and layer 0). Every layer is
    /// dense (`first_k_dense_replace` = layers), so the expert keys are never used; they are 2 routed experts in
    /// 1 group, top-1, because llama.cpp (after `convert_hf_to_gguf.py`) asserts fewer groups than experts.
    public static func config(source c: ModelConfig, layer w: MLALayerWeights, dtype: DType) -> JSONValue {
        var qRank = JSONValue.null
        if case let .lowRank(rank, _, _, _, _, _) = w.query { qRank = JSONValue(rank) }
        var entries: [(String, JSONValue)] = [
            ("architectures", .array([.string("DeepseekV3ForCausalLM")])), ("model_type", .string("deepseek_v3")),
            ("vocab_size", JSONValue(c.vocabSize)), ("hidden_size", JSONValue(c.hiddenSize)),
            ("intermediate_size", JSONValue(c.intermediateSize)), ("moe_intermediate_size", JSONValue(c.intermediateSize)),
            ("num_hidden_layers", JSONValue(c.numLayers)), ("num_attention_heads", JSONValue(w.numHeads)),
            ("num_key_value_heads", JSONValue(w.numHeads)), ("q_lora_rank", qRank), ("kv_lora_rank", JSONValue(w.kvRank)),
            ("qk_nope_head_dim", JSONValue(w.dNope)), ("qk_rope_head_dim", JSONValue(w.dRope)), ("v_head_dim", JSONValue(w.dV)),
            ("n_routed_experts", JSONValue(2)), ("n_shared_experts", JSONValue(1)), ("num_experts_per_tok", JSONValue(1)),
            ("n_group", JSONValue(1)), ("topk_group", JSONValue(1)), ("first_k_dense_replace", JSONValue(c.numLayers)),
            ("moe_layer_freq", JSONValue(1)), ("hidden_act", .string("silu")),
            ("max_position_embeddings", JSONValue(c.maxPositions)), ("rms_norm_eps", JSONValue(eps)),
            ("rope_theta", JSONValue(ropeTheta(w.ropeInvFreq[0], dRope: w.dRope) ?? 10000)), ("rope_scaling", .null),
            ("rope_interleave", .bool(true)), ("attention_bias", .bool(false)), ("tie_word_embeddings", .bool(false)),
        ]
        if let bos = c.bosTokenId { entries.append(("bos_token_id", JSONValue(bos))) }
        if let eos = c.eosTokenId { entries.append(("eos_token_id", JSONValue(eos))) }
        entries.append(("torch_dtype", .string(dtype.torchName)))
        return .object(entries)
    }

    public let source: Checkpoint
    /// F32 or BF16 (F16 cannot hold the linear-regime scales).
    public let dtype: DType
    public let writer: CheckpointWriter
    /// The residual-stream scale α = √(`eps` / source eps) (`docs/method.md` §8.c).
    let alpha: Double
    /// Source tensors written times α: the embeddings and every `down_proj`.
    let scaled: Set<String>
    /// The source ties its LM head to the embeddings; the export writes it untied (the embeddings are scaled).
    let untiedHead: Bool

    /// Refuses at once an F16 `dtype` and a source whose RoPE scaling the engines cannot express.
    public init(source: Checkpoint, dtype: DType, writer: CheckpointWriter) throws {
        guard dtype == .f32 || dtype == .bf16 else {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "DeepSeek-V3 export needs --dtype bf16 or f32: the linear-regime kv_a_layernorm weight (2^k) and scaled latent rows underflow and overflow \(dtype.rawValue)")
        }
        self.source = source
        self.dtype = dtype
        self.writer = writer
        let c = source.config
        alpha = (Self.eps / c.rmsNormEps).squareRoot()
        scaled = Set([ModelTensorNames.embedding] + (0..<c.numLayers).map { LayerTensorNames(layer: $0).downProj })
        untiedHead = !source.store.contains(ModelTensorNames.lmHead)
    }

    public func check(_ layer: MLALayerWeights, template: MLALayerWeights) throws {
        if let reason = Self.unsupportedReason(layers: [template, layer], source: source.config) {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "cannot export as DeepSeek-V3: " + reason)
        }
    }

    public func entries(template: MLALayerWeights, ranks: [Int]) throws -> [TensorWriteEntry] {
        let store = source.store
        var entries = (0..<source.config.numLayers).flatMap { l in
            Self.attentionShapes(template, layer: l).map { TensorWriteEntry(name: $0.0, dtype: dtype, shape: $0.1) }
        }
        entries += try source.passThroughTensors().map {
            TensorWriteEntry(name: $0.name, dtype: $0.dtype.isComputeFloat ? dtype : $0.dtype, shape: $0.shape)
        }
        if untiedHead, let info = store.info(ModelTensorNames.embedding) {
            entries.append(TensorWriteEntry(name: ModelTensorNames.lmHead, dtype: dtype, shape: info.shape))
        }
        return LayerTensorNames.layerMajor(entries)
    }

    public func convertedLayer(of name: String) -> Int? { LayerTensorNames.attentionLayer(of: name) }

    public func layerTensors(_ layer: MLALayerWeights, index l: Int) throws -> [String: Tensor] {
        try Self.attentionTensors(layer, layer: l, store: source.store, alpha: alpha)
    }

    /// The embeddings and `down_proj` times α and the untied LM head in row blocks (`MLAModelWriter.rowBlocks`).
    public func sourcePayload(_ entry: TensorWriteEntry) throws -> TensorPayload {
        if untiedHead, entry.name == ModelTensorNames.lmHead {
            return MLAModelWriter.rowBlocks(try source.store.tensor(ModelTensorNames.embedding), scale: nil, to: entry.dtype)
        }
        return MLAModelWriter.rowBlocks(try source.store.tensor(entry.name), scale: scaled.contains(entry.name) ? alpha : nil, to: entry.dtype)
    }

    public func writeOrder(_ entries: [TensorWriteEntry]) -> [String] { writer.writeOrder(entries) }

    public func write(to output: OutputPlan, entries: [TensorWriteEntry], template: MLALayerWeights, records: () -> [JSONValue],
                      summary: () throws -> JSONValue?, payload: (String) throws -> TensorPayload) throws {
        try writer.write(to: output, config: { Self.config(source: source.config, layer: template, dtype: dtype) }, entries: entries,
                         metadata: ["mla_convert.kind": "deepseek-v3", "source": source.path],
                         auxiliaryFiles: try MLAModelWriter.hfSideFiles(of: source),
                         lateFiles: { try MLAModelWriter.summaryFile(summary()) }, payload: payload)
    }

    /// Names and shapes of layer `l`'s attention tensors for a layer shaped like `w`.
    static func attentionShapes(_ w: MLALayerWeights, layer l: Int) -> [(String, [Int])] {
        let p = "model.layers.\(l).self_attn.", d = w.hiddenSize, qRows = w.numHeads * w.qHeadWidth
        var shapes: [(String, [Int])] = []
        switch w.query {
        case .full:
            shapes.append((p + "q_proj.weight", [qRows, d]))
        case let .lowRank(rank, _, _, _, _, _):
            shapes += [(p + "q_a_proj.weight", [rank, d]), (p + "q_a_layernorm.weight", [rank]), (p + "q_b_proj.weight", [qRows, rank])]
        }
        return shapes + [
            (p + "kv_a_proj_with_mqa.weight", [w.kvRank + w.dRope, d]), (p + "kv_a_layernorm.weight", [w.kvRank]),
            (p + "kv_b_proj.weight", [w.numHeads * (w.dNope + w.dV), w.kvRank]), (p + "o_proj.weight", [d, w.numHeads * w.dV]),
        ]
    }

    /// Layer `l`'s attention tensors (F32), in the order and shapes of `attentionShapes`: the latent rows
    /// scaled into the linear regime of `kv_a_layernorm`, o_proj times the residual scale α.
    static func attentionTensors(_ w: MLALayerWeights, layer l: Int, store: any TensorStore, alpha: Double) throws -> [String: Tensor] {
        let d = w.hiddenSize
        let inputNorm = try store.floats(LayerTensorNames(layer: l).inputNorm, shape: [d]).map(Double.init)
        let norm = try LinearRegimeNorm(rows: Matrix(rows: w.kvRank, cols: d, values: w.kvA.map(Double.init)), bias: nil,
                                        inputNorm: inputNorm, eps: eps)
        var values: [[Float]] = []
        switch w.query {
        case let .full(proj, _):
            values.append(proj)
        case let .lowRank(_, a, _, qNorm, _, b):
            values += [a, qNorm, b]
        }
        let s = norm.rowScale
        values += [w.kvA.map { Float(Double($0) * s) } + w.kRope, [Float](repeating: Float(norm.weight), count: w.kvRank), w.kvB,
                   w.oProj.map { Float(Double($0) * alpha) }]
        return Dictionary(uniqueKeysWithValues: zip(attentionShapes(w, layer: l), values).map { ($0.0.0, Tensor(floats: $0.1, shape: $0.0.1)) })
    }
}
