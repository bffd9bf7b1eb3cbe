/// Model families this toolkit reads (one adapter file each under `Adapters/`): the source families it
/// converts (llama, mistral, qwen2) and the MLA families it writes and runs (DeepSeek-V3 dense, native).
public enum ModelFamily: String, Sendable, CaseIterable {
    case llama, mistral, qwen2
    case deepseekV3 = "deepseek_v3"
    /// This toolkit's native MLA format (docs/formats-native-mla.md).
    case mlaNative = "mla_convert"

    /// True for families whose attention is MLA (read by the MLA loaders, not as q/k/v/o).
    public var isMLA: Bool { self == .deepseekV3 || self == .mlaNative }
}

/// RoPE frequency scaling of the source model (docs/formats.md "Hugging Face `config.json`" has the formulas).
public enum RopeScaling: Sendable, Equatable {
    case none
    /// θ_i / factor.
    case linear(factor: Double)
    /// Llama 3.1 piecewise scaling.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Int)
    /// YaRN: ramped interpolation plus a cos/sin multiplier (`attentionFactor`, nil = derived default).
    case yarn(factor: Double, originalMaxPositions: Int, betaFast: Double, betaSlow: Double,
              attentionFactor: Double?, mscale: Double?, mscaleAllDim: Double?, truncate: Bool)

    /// Short name as in `rope_type` ("default" for none).
    public var typeName: String {
        switch self {
        case .none: return "default"
        case .linear: return "linear"
        case .llama3: return "llama3"
        case .yarn: return "yarn"
        }
    }
}

/// The normalized description of a decoder-only source model, built from `config.json` or GGUF
/// metadata by a family adapter. Everything downstream (runtime, converters, inspect) reads this,
/// never the raw config.
public struct ModelConfig: Sendable, Equatable {
    public var family: ModelFamily
    public var numLayers: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHeads: Int
    public var numKVHeads: Int
    /// Per-head dimension of q, k and v.
    public var headDim: Int
    public var vocabSize: Int
    public var maxPositions: Int
    /// RoPE base b: θ_l = b^(-2l/headDim) radians per position, pair l < headDim/2, rotate-half layout.
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling
    public var rmsNormEps: Double
    /// q_proj, k_proj, v_proj carry biases (Qwen2 always; Llama with `attention_bias`).
    public var qkvBias: Bool
    /// o_proj carries a bias (Llama with `attention_bias`).
    public var outputBias: Bool
    /// MLP projections carry biases (Llama `mlp_bias`).
    public var mlpBias: Bool
    /// The LM head is the token embedding (no `lm_head.weight`).
    public var tiedEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// The Hugging Face `config.json` object this description came from (built for GGUF sources);
    /// writers copy it so round trips keep every key.
    public var raw: JSONValue

    public init(family: ModelFamily, numLayers: Int, hiddenSize: Int, intermediateSize: Int, numHeads: Int,
                numKVHeads: Int, headDim: Int, vocabSize: Int, maxPositions: Int, ropeTheta: Double,
                ropeScaling: RopeScaling, rmsNormEps: Double, qkvBias: Bool, outputBias: Bool, mlpBias: Bool,
                tiedEmbeddings: Bool, bosTokenId: Int?, eosTokenId: Int?, raw: JSONValue,
                latentCacheValuesPerLayer: [Int]? = nil) {
        self.family = family
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.vocabSize = vocabSize
        self.maxPositions = maxPositions
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.rmsNormEps = rmsNormEps
        self.qkvBias = qkvBias
        self.outputBias = outputBias
        self.mlpBias = mlpBias
        self.tiedEmbeddings = tiedEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.raw = raw
        self.latentCacheValuesPerLayer = latentCacheValuesPerLayer
    }

    /// Query heads per KV head.
    public var groupSize: Int { numHeads / numKVHeads }

    /// "MHA" (KV heads = heads), "MQA" (one KV head) or "GQA".
    public var attentionKind: String {
        if family.isMLA { return "MLA" }
        if numKVHeads == numHeads { return "MHA" }
        if numKVHeads == 1 { return "MQA" }
        return "GQA"
    }

    /// MLA models: cache values per token of each layer (latent rank + rope key dims); nil for
    /// source models, whose cache is K and V.
    public var latentCacheValuesPerLayer: [Int]?

    /// Cache values per token of each layer: 2·n_kv·d_h for K and V, or the MLA latent + rope keys.
    public var cacheValuesPerLayer: [Int] {
        latentCacheValuesPerLayer ?? Array(repeating: 2 * numKVHeads * headDim, count: numLayers)
    }

    /// KV-cache values per token per layer of a source model (2·n_kv·d_h); the largest layer's for MLA.
    public var kvCacheValuesPerTokenPerLayer: Int { cacheValuesPerLayer.max() ?? 0 }

    /// KV-cache values per token over all layers.
    public var kvCacheValuesPerToken: Int { cacheValuesPerLayer.reduce(0, +) }
}

/// Hugging Face tensor names of one decoder layer (`model.layers.N.`).
public struct LayerTensorNames: Sendable {
    public let prefix: String
    public init(layer: Int) { prefix = "model.layers.\(layer)." }

    /// The layer of an attention tensor `model.layers.{l}.self_attn.…`, else nil.
    public static func attentionLayer(of name: String) -> Int? {
        name.contains(".self_attn.") ? layer(of: name) : nil
    }

    /// The decoder layer of any tensor `model.layers.{l}.…`, else nil.
    public static func layer(of name: String) -> Int? {
        let start = "model.layers."
        guard name.hasPrefix(start) else { return nil }
        return Int(name.dropFirst(start.count).prefix { $0 != "." })
    }

    /// `entries` layer by layer (stable within a layer), then the tensors outside the layers. A streaming
    /// converter's writer fills its shards in this order, so it copies each layer's unchanged tensors
    /// (MLP, norms) next to that layer's converted attention, while the next layer is being converted;
    /// in source order it would copy every layer's MLP first with the converter idle.
    public static func layerMajor(_ entries: [TensorWriteEntry]) -> [TensorWriteEntry] {
        entries.enumerated().sorted { a, b in
            (layer(of: a.element.name) ?? .max, a.offset) < (layer(of: b.element.name) ?? .max, b.offset)
        }.map(\.element)
    }

    /// Layers in the order a writer first reaches their attention tensors, given its tensor order
    /// (`CheckpointWriter.writeOrder`).
    public static func attentionLayerOrder(_ names: [String]) -> [Int] {
        var seen = Set<Int>(), order: [Int] = []
        for name in names { if let l = attentionLayer(of: name), seen.insert(l).inserted { order.append(l) } }
        return order
    }

    public var inputNorm: String { prefix + "input_layernorm.weight" }
    public var postAttentionNorm: String { prefix + "post_attention_layernorm.weight" }
    public var qProj: String { prefix + "self_attn.q_proj.weight" }
    public var kProj: String { prefix + "self_attn.k_proj.weight" }
    public var vProj: String { prefix + "self_attn.v_proj.weight" }
    public var oProj: String { prefix + "self_attn.o_proj.weight" }
    public var qBias: String { prefix + "self_attn.q_proj.bias" }
    public var kBias: String { prefix + "self_attn.k_proj.bias" }
    public var vBias: String { prefix + "self_attn.v_proj.bias" }
    public var oBias: String { prefix + "self_attn.o_proj.bias" }
    /// The source attention tensors a conversion replaces (q/k/v/o projections and their biases).
    public var sourceAttention: [String] { [qProj, kProj, vProj, oProj, qBias, kBias, vBias, oBias] }
    public var gateProj: String { prefix + "mlp.gate_proj.weight" }
    public var upProj: String { prefix + "mlp.up_proj.weight" }
    public var downProj: String { prefix + "mlp.down_proj.weight" }
}

/// Hugging Face names of the tensors outside the layers.
public enum ModelTensorNames {
    public static let embedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let lmHead = "lm_head.weight"
}
