#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MLACheckpoint
import MLATensor

/// Reading `MLALayerWeights` from a stock DeepSeek-V3 checkpoint (docs/deepseek-export.md) and reading and
/// writing the native MLA format (`docs/formats-native-mla.md`).
extension MLALayerWeights {
    // MARK: - DeepSeek-V3

    /// DeepSeek's unscaled RoPE table θ'_i = theta^(−2i/dRope), i < dRope/2, radians per position
    /// (docs/method.md §8.a). Scaled (YaRN) tables come from the runtime's RoPE helper instead.
    public static func deepSeekInvFreq(theta: Double, dRope: Int) -> [Double] {
        (0..<max(0, dRope / 2)).map { pow(theta, -2 * Double($0) / Double(dRope)) }
    }

    /// DeepSeek-V3's softmax scale from its config.json: (qk_nope_head_dim + qk_rope_head_dim)^−½, times μ²
    /// when `rope_scaling` (or transformers 5's `rope_parameters`) has a nonzero `mscale_all_dim`, with
    /// μ = 0.1·mscale_all_dim·ln(factor) + 1 for factor > 1, else 1 (HF `yarn_get_mscale`; the same in
    /// vLLM and SGLang, docs/method.md §3).
    public static func deepSeekSoftmaxScale(config: JSONValue, file: String = "config.json") throws -> Float {
        let dNope = try configInt(config, "qk_nope_head_dim", file: file)
        let dRope = try configInt(config, "qk_rope_head_dim", file: file)
        guard dNope + dRope > 0 else {
            throw CheckpointError.invalidConfig(file: file, key: "qk_nope_head_dim", reason: "qk_nope_head_dim + qk_rope_head_dim must be positive")
        }
        var scale = 1 / Double(dNope + dRope).squareRoot()
        let scaling = config["rope_scaling"].flatMap { $0.isNull ? nil : $0 } ?? config["rope_parameters"]
        if let scaling, let mscaleAllDim = scaling["mscale_all_dim"]?.double, mscaleAllDim != 0 {
            guard let factor = scaling["factor"]?.double, factor > 0 else {
                throw CheckpointError.invalidConfig(file: file, key: "rope_scaling.factor", reason: "mscale_all_dim is set, so a positive factor is required")
            }
            let mu = factor <= 1 ? 1 : 0.1 * mscaleAllDim * log(factor) + 1
            scale *= mu * mu
        }
        return Float(scale)
    }

    /// Layer `layer` of a DeepSeek-V3 checkpoint (`model.layers.{layer}.self_attn.*`) as MLA weights.
    ///
    /// - `config`: the checkpoint's config.json (keys hidden_size, num_attention_heads, q_lora_rank (null
    ///   selects `q_proj`), kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim).
    /// - `ropeInvFreq` `[qk_rope_head_dim/2]`: the engine's table (plain: `deepSeekInvFreq`; YaRN: the
    ///   runtime's table); `attentionFactor`: the cos/sin multiplier that goes with it.
    /// - `normEps`: eps of `q_a_layernorm` and `kv_a_layernorm`. HF builds both with a constant 1e-6
    ///   whatever `rms_norm_eps` says; vLLM and SGLang use `rms_norm_eps` (docs/method.md §8.c).
    /// - `softmaxScale`: nil computes `deepSeekSoftmaxScale(config:)`.
    ///
    /// `kv_a_proj_with_mqa` `[r + dRope, d]` splits into `kvA` (rows [0, r)) and the single shared rope
    /// key `kRope` (rows [r, r + dRope)); its bias likewise. Biases are read where HF has slots
    /// (`q_a_proj`, `kv_a_proj_with_mqa`, `o_proj`) when present. Rope rows stay interleaved as stored.
    /// `kv_b_proj` [n_h·(dNope+dV), r], or, where a GGUF (llama.cpp `deepseek2`) split it, joined from
    /// `k_b_proj` [n_h, r, dNope] (W_UK,hᵀ per head) and `v_b_proj` [n_h, dV, r] (W_UV,h per head).
    static func deepSeekKVB(store: any TensorStore, prefix: String, heads nh: Int, dNope: Int, dV: Int, rank r: Int) throws -> [Float] {
        guard !store.contains(prefix + "kv_b_proj.weight"), store.contains(prefix + "k_b_proj.weight") else {
            return try store.floats(prefix + "kv_b_proj.weight", shape: [nh * (dNope + dV), r])
        }
        let kB = try store.floats(prefix + "k_b_proj.weight", shape: [nh, r, dNope])
        let vB = try store.floats(prefix + "v_b_proj.weight", shape: [nh, dV, r])
        var kvB = [Float](repeating: 0, count: nh * (dNope + dV) * r)
        for h in 0..<nh {
            let head = h * (dNope + dV) * r
            for i in 0..<dNope { for j in 0..<r { kvB[head + i * r + j] = kB[(h * r + j) * dNope + i] } }
            kvB.replaceSubrange((head + dNope * r)..<(head + (dNope + dV) * r), with: vB[(h * dV * r)..<((h + 1) * dV * r)])
        }
        return kvB
    }

    public static func deepSeekV3Layer(config: JSONValue, store: any TensorStore, layer: Int, ropeInvFreq: [Double],
                                       attentionFactor: Double, normEps: Double = 1e-6,
                                       softmaxScale: Float? = nil) throws -> MLALayerWeights {
        let file = "config.json"
        let d = try configInt(config, "hidden_size", file: file)
        let nh = try configInt(config, "num_attention_heads", file: file)
        let r = try configInt(config, "kv_lora_rank", file: file)
        let dNope = try configInt(config, "qk_nope_head_dim", file: file)
        let dRope = try configInt(config, "qk_rope_head_dim", file: file)
        let dV = try configInt(config, "v_head_dim", file: file)
        for (key, value) in [("hidden_size", d), ("num_attention_heads", nh), ("kv_lora_rank", r),
                             ("qk_nope_head_dim", dNope), ("qk_rope_head_dim", dRope), ("v_head_dim", dV)]
        where value < 0 || value > maxDimension {
            throw CheckpointError.invalidConfig(file: file, key: key, reason: "\(value) is outside 0...\(maxDimension)")
        }
        let prefix = "model.layers.\(layer).self_attn."
        let qRows = nh * (dNope + dRope)
        let query: Query
        if let qRank = config["q_lora_rank"], !qRank.isNull {
            guard let rank = qRank.int, rank > 0, rank <= maxDimension else {
                throw CheckpointError.invalidConfig(file: file, key: "q_lora_rank", reason: "must be null or a positive integer")
            }
            query = .lowRank(rank: rank, a: try store.floats(prefix + "q_a_proj.weight", shape: [rank, d]),
                             aBias: try optional(store, prefix + "q_a_proj.bias", [rank]),
                             norm: try store.floats(prefix + "q_a_layernorm.weight", shape: [rank]),
                             eps: Float(normEps), b: try store.floats(prefix + "q_b_proj.weight", shape: [qRows, rank]))
        } else {
            query = .full(proj: try store.floats(prefix + "q_proj.weight", shape: [qRows, d]), bias: nil)
        }
        let kva = try store.floats(prefix + "kv_a_proj_with_mqa.weight", shape: [r + dRope, d])
        let kvaBias = try optional(store, prefix + "kv_a_proj_with_mqa.bias", [r + dRope])
        guard ropeInvFreq.count == dRope / 2 else {
            throw CheckpointError.invalidConfig(file: file, key: "qk_rope_head_dim", reason: "the RoPE table has \(ropeInvFreq.count) frequencies, qk_rope_head_dim \(dRope) needs \(dRope / 2); build it with the same qk_rope_head_dim")
        }
        let weights = MLALayerWeights(
            label: prefix, hiddenSize: d, numHeads: nh, dNope: dNope, dRope: dRope, dV: dV, kvRank: r,
            nRopeHeads: 1, ropeHeadOfQueryHead: Array(repeating: 0, count: nh), query: query,
            kvA: Array(kva[..<(r * d)]), kvABias: kvaBias.map { Array($0[..<r]) },
            latentNorm: LatentNorm(weight: try store.floats(prefix + "kv_a_layernorm.weight", shape: [r]), eps: Float(normEps)),
            kRope: Array(kva[(r * d)...]), kRopeBias: kvaBias.map { Array($0[r...]) },
            kvB: try deepSeekKVB(store: store, prefix: prefix, heads: nh, dNope: dNope, dV: dV, rank: r),
            oProj: try store.floats(prefix + "o_proj.weight", shape: [d, nh * dV]),
            oBias: try optional(store, prefix + "o_proj.bias", [d]),
            ropeInvFreq: [ropeInvFreq], ropeAttentionFactor: attentionFactor,
            softmaxScale: try softmaxScale ?? deepSeekSoftmaxScale(config: config, file: file))
        try weights.validate()
        return weights
    }

    // MARK: - Native format

    /// Tensor names of the native format relative to a layer prefix (`docs/formats-native-mla.md`).
    public enum NativeName {
        public static let qProj = "q_proj.weight", qBias = "q_proj.bias"
        public static let qA = "q_a_proj.weight", qABias = "q_a_proj.bias", qANorm = "q_a_layernorm.weight"
        public static let qB = "q_b_proj.weight"
        public static let kvA = "kv_a_proj.weight", kvABias = "kv_a_proj.bias", kvANorm = "kv_a_layernorm.weight"
        public static let kRope = "k_rope_proj.weight", kRopeBias = "k_rope_proj.bias"
        public static let kvB = "kv_b_proj.weight", oProj = "o_proj.weight", oBias = "o_proj.bias"
    }

    /// The layer's native tensors, names = `prefix` + `NativeName`: all matrices F32 with the shapes of
    /// `nativeTensorShapes`. Optional tensors (biases, norms, the q path not in use) are omitted.
    public func nativeTensors(prefix: String) -> [(String, Tensor)] {
        nativeParts(kvRank: kvRank).compactMap { name, values, shape in values.map { (prefix + name, Tensor(floats: $0, shape: shape)) } }
    }

    /// Names and shapes of the native tensors of a layer shaped like this one but with latent width
    /// `kvRank` (a streaming writer plans every layer's entries from one converted layer).
    public func nativeTensorShapes(prefix: String, kvRank r: Int) -> [(String, [Int])] {
        nativeParts(kvRank: r).compactMap { name, values, shape in values == nil ? nil : (prefix + name, shape) }
    }

    /// (name, values or nil when absent, shape at latent width r), in one place for both lists above.
    private func nativeParts(kvRank r: Int) -> [(String, [Float]?, [Int])] {
        let d = hiddenSize, qRows = numHeads * qHeadWidth, ropeRows = nRopeHeads * dRope
        var parts: [(String, [Float]?, [Int])] = []
        switch query {
        case let .full(proj, bias):
            parts += [(NativeName.qProj, proj, [qRows, d]), (NativeName.qBias, bias, [qRows])]
        case let .lowRank(rank, a, aBias, norm, _, b):
            parts += [(NativeName.qA, a, [rank, d]), (NativeName.qABias, aBias, [rank]), (NativeName.qANorm, norm, [rank]),
                      (NativeName.qB, b, [qRows, rank])]
        }
        return parts + [
            (NativeName.kvA, kvA, [r, d]), (NativeName.kvABias, kvABias, [r]), (NativeName.kvANorm, latentNorm?.weight, [r]),
            (NativeName.kRope, kRope, [ropeRows, d]), (NativeName.kRopeBias, kRopeBias, [ropeRows]),
            (NativeName.kvB, kvB, [numHeads * (dNope + dV), r]), (NativeName.oProj, oProj, [d, numHeads * dV]),
            (NativeName.oBias, oBias, [d]),
        ]
    }

    /// Names of the bias tensors present, as listed in the native config's per-layer `biases`.
    public var nativeBiasNames: [String] {
        var names: [String] = []
        switch query {
        case let .full(_, bias): if bias != nil { names.append("q_proj") }
        case let .lowRank(_, _, aBias, _, _, _): if aBias != nil { names.append("q_a_proj") }
        }
        if kvABias != nil { names.append("kv_a_proj") }
        if kRopeBias != nil { names.append("k_rope_proj") }
        if oBias != nil { names.append("o_proj") }
        return names
    }

    /// The `mla_convert.attention` object for a model whose layers share this layer's head shape, query
    /// path and softmax scale.
    public var nativeAttentionEntry: JSONValue {
        var qRank = JSONValue.null, qEps = JSONValue.null
        if case let .lowRank(rank, _, _, _, eps, _) = query {
            qRank = JSONValue(rank)
            qEps = JSONValue(Double(eps))
        }
        return .object([
            ("num_heads", JSONValue(numHeads)), ("qk_nope_head_dim", JSONValue(dNope)), ("v_head_dim", JSONValue(dV)),
            ("q_lora_rank", qRank), ("q_norm_eps", qEps), ("softmax_scale", JSONValue(Double(softmaxScale))),
            ("rope_layout", .string("interleaved")),
        ])
    }

    /// The structural part of this layer's `mla_convert.layers[i]` entry, RoPE table included (F64
    /// values in shortest round-trip decimal, so exact); converters add `kept_pairs` and `errors`.
    public var nativeLayerEntry: JSONValue {
        .object([
            ("kv_rank", JSONValue(kvRank)), ("n_rope_heads", JSONValue(nRopeHeads)),
            ("rope_head_of_query_head", .array(ropeHeadOfQueryHead.map { JSONValue($0) })),
            ("rope_dims", JSONValue(dRope)),
            ("latent_norm", latentNorm.map { .object([("eps", JSONValue(Double($0.eps)))]) } ?? .null),
            ("biases", .array(nativeBiasNames.map { .string($0) })),
            ("rope_inv_freq", .array(ropeInvFreq.map { .array($0.map { JSONValue($0) }) })),
            ("rope_attention_factor", JSONValue(ropeAttentionFactor)),
        ])
    }

    /// Layer `layer` of a native MLA checkpoint: `config` is the `mla_convert` object of config.json, tensors
    /// are read from `store` under `model.layers.{layer}.self_attn.`. d is taken from `o_proj`'s shape.
    public static func nativeLayer(config: JSONValue, store: any TensorStore, layer: Int) throws -> MLALayerWeights {
        let shape = try NativeLayerShape(config: config, store: store, layer: layer)
        let (prefix, d, nh, r, nRope, dRope) = (shape.prefix, shape.hiddenSize, shape.numHeads, shape.kvRank, shape.nRopeHeads, shape.dRope)
        let ropeRows = nRope * dRope
        func bias(_ slot: String, _ name: String, _ count: Int) throws -> [Float]? {
            shape.biases.contains(slot) ? try store.floats(prefix + name, shape: [count]) : nil
        }
        let query = try nativeQuery(shape, store: store, bias: bias)
        let latentNorm = try nativeLatentNorm(shape, store: store)
        let (freqs, attentionFactor) = try nativeRopeTable(shape)
        let weights = MLALayerWeights(
            label: prefix, hiddenSize: d, numHeads: nh, dNope: shape.dNope, dRope: dRope, dV: shape.dV, kvRank: r,
            nRopeHeads: nRope, ropeHeadOfQueryHead: shape.ropeHeadOfQueryHead, query: query,
            kvA: try store.floats(prefix + NativeName.kvA, shape: [r, d]),
            kvABias: try bias("kv_a_proj", NativeName.kvABias, r), latentNorm: latentNorm,
            kRope: try store.floats(prefix + NativeName.kRope, shape: [ropeRows, d]),
            kRopeBias: try bias("k_rope_proj", NativeName.kRopeBias, ropeRows),
            kvB: try store.floats(prefix + NativeName.kvB, shape: [nh * (shape.dNope + shape.dV), r]),
            oProj: try store.floats(prefix + NativeName.oProj, shape: [d, nh * shape.dV]),
            oBias: try bias("o_proj", NativeName.oBias, d),
            ropeInvFreq: freqs, ropeAttentionFactor: attentionFactor, softmaxScale: Float(shape.softmaxScale))
        try weights.validate()
        return weights
    }

    /// The dimensions, rope head map and bias slots of one native layer, from the `mla_convert` config
    /// (shared `attention` object and the layer's `layers[i]` entry) and `o_proj`'s shape, each checked.
    private struct NativeLayerShape {
        static let file = "config.json"
        static let biasSlots: Set<String> = ["q_proj", "q_a_proj", "kv_a_proj", "k_rope_proj", "o_proj"]

        let prefix: String, attention: JSONValue, entry: JSONValue, entryPath: String
        let numHeads: Int, dNope: Int, dV: Int, softmaxScale: Double
        let kvRank: Int, nRopeHeads: Int, dRope: Int, ropeHeadOfQueryHead: [Int], biases: Set<String>
        let hiddenSize: Int

        init(config: JSONValue, store: any TensorStore, layer: Int) throws {
            let file = Self.file
            prefix = "model.layers.\(layer).self_attn."
            guard let attention = config["attention"] else {
                throw CheckpointError.missingConfigKey(file: file, key: "mla_convert.attention")
            }
            guard let entries = config["layers"]?.array else {
                throw CheckpointError.missingConfigKey(file: file, key: "mla_convert.layers")
            }
            guard layer >= 0, layer < entries.count else {
                throw CheckpointError.invalidConfig(file: file, key: "mla_convert.layers", reason: "has \(entries.count) entries, layer \(layer) requested")
            }
            self.attention = attention
            entry = entries[layer]
            entryPath = "mla_convert.layers[\(layer)]."
            numHeads = try configInt(attention, "num_heads", file: file, path: "mla_convert.attention.")
            dNope = try configInt(attention, "qk_nope_head_dim", file: file, path: "mla_convert.attention.")
            dV = try configInt(attention, "v_head_dim", file: file, path: "mla_convert.attention.")
            guard let scale = attention["softmax_scale"]?.double else {
                throw CheckpointError.missingConfigKey(file: file, key: "mla_convert.attention.softmax_scale")
            }
            softmaxScale = scale
            guard attention["rope_layout"]?.string == "interleaved" else {
                throw CheckpointError.invalidConfig(file: file, key: "mla_convert.attention.rope_layout", reason: "only \"interleaved\" is defined by format_version 2")
            }
            kvRank = try configInt(entry, "kv_rank", file: file, path: entryPath)
            nRopeHeads = try configInt(entry, "n_rope_heads", file: file, path: entryPath)
            dRope = try configInt(entry, "rope_dims", file: file, path: entryPath)
            guard let map = entry["rope_head_of_query_head"]?.array?.compactMap(\.int), map.count == numHeads else {
                throw CheckpointError.invalidConfig(file: file, key: entryPath + "rope_head_of_query_head", reason: "needs \(numHeads) integers, one per query head")
            }
            ropeHeadOfQueryHead = map
            let biasList = entry["biases"]?.array ?? []
            biases = Set(biasList.compactMap(\.string))
            guard biases.count == biasList.count, biases.isSubset(of: Self.biasSlots) else {
                throw CheckpointError.invalidConfig(file: file, key: entryPath + "biases", reason: "must list distinct names from \(Self.biasSlots.sorted()), found \(biasList.map(\.description))")
            }
            guard let oInfo = store.info(prefix + NativeName.oProj), oInfo.shape.count == 2 else {
                throw CheckpointError.missingTensor(file: store.info(prefix + NativeName.kvA)?.file ?? "<store>", tensor: prefix + NativeName.oProj)
            }
            hiddenSize = oInfo.shape[0]
            for (key, value) in [("num_heads", numHeads), ("qk_nope_head_dim", dNope), ("v_head_dim", dV), ("kv_rank", kvRank),
                                 ("n_rope_heads", nRopeHeads), ("rope_dims", dRope), ("hidden size (o_proj rows)", hiddenSize)]
            where value < 0 || value > maxDimension {
                throw CheckpointError.invalidConfig(file: file, key: key, reason: "\(value) is outside 0...\(maxDimension)")
            }
        }
    }

    /// The query side: q_a/q_a_layernorm/q_b when `q_lora_rank` is set (with its `q_norm_eps`), else q_proj.
    private static func nativeQuery(_ shape: NativeLayerShape, store: any TensorStore,
                                    bias: (String, String, Int) throws -> [Float]?) throws -> Query {
        let (prefix, d) = (shape.prefix, shape.hiddenSize)
        let qRows = shape.numHeads * (shape.dNope + shape.dRope)
        guard let qRank = shape.attention["q_lora_rank"], !qRank.isNull else {
            return .full(proj: try store.floats(prefix + NativeName.qProj, shape: [qRows, d]), bias: try bias("q_proj", NativeName.qBias, qRows))
        }
        guard let rank = qRank.int, rank > 0, rank <= maxDimension, let eps = shape.attention["q_norm_eps"]?.double else {
            throw CheckpointError.invalidConfig(file: NativeLayerShape.file, key: "mla_convert.attention.q_lora_rank", reason: "must be null or a positive integer with a numeric q_norm_eps")
        }
        return .lowRank(rank: rank, a: try store.floats(prefix + NativeName.qA, shape: [rank, d]),
                        aBias: try bias("q_a_proj", NativeName.qABias, rank),
                        norm: try store.floats(prefix + NativeName.qANorm, shape: [rank]), eps: Float(eps),
                        b: try store.floats(prefix + NativeName.qB, shape: [qRows, rank]))
    }

    /// The latent's RMSNorm when the layer entry's `latent_norm` is `{"eps": number}`, nil when null or absent.
    private static func nativeLatentNorm(_ shape: NativeLayerShape, store: any TensorStore) throws -> LatentNorm? {
        guard let norm = shape.entry["latent_norm"], !norm.isNull else { return nil }
        guard let eps = norm["eps"]?.double else {
            throw CheckpointError.invalidConfig(file: NativeLayerShape.file, key: shape.entryPath + "latent_norm", reason: "must be null or {\"eps\": number}")
        }
        return LatentNorm(weight: try store.floats(shape.prefix + NativeName.kvANorm, shape: [shape.kvRank]), eps: Float(eps))
    }

    /// The layer's RoPE table: per rope head dRope/2 inverse frequencies, and the cos/sin attention factor.
    private static func nativeRopeTable(_ shape: NativeLayerShape) throws -> (invFreq: [[Double]], attentionFactor: Double) {
        let (entry, entryPath, nRope, dRope) = (shape.entry, shape.entryPath, shape.nRopeHeads, shape.dRope)
        guard let freqRows = entry["rope_inv_freq"]?.array, freqRows.count == nRope,
              case let freqs = freqRows.map({ $0.array?.compactMap(\.double) ?? [] }),
              freqs.allSatisfy({ $0.count == dRope / 2 }) else {
            throw CheckpointError.invalidConfig(file: NativeLayerShape.file, key: entryPath + "rope_inv_freq", reason: "needs \(nRope) arrays of \(dRope / 2) numbers (radians per position)")
        }
        guard let attentionFactor = entry["rope_attention_factor"]?.double else {
            throw CheckpointError.invalidConfig(file: NativeLayerShape.file, key: entryPath + "rope_attention_factor", reason: "must be a number")
        }
        return (freqs, attentionFactor)
    }

    // MARK: - Helpers

    private static func configInt(_ object: JSONValue, _ key: String, file: String, path: String = "") throws -> Int {
        guard let value = object[key] else { throw CheckpointError.missingConfigKey(file: file, key: path + key) }
        guard let int = value.int else {
            throw CheckpointError.invalidConfig(file: file, key: path + key, reason: "must be an integer")
        }
        return int
    }

    private static func optional(_ store: any TensorStore, _ name: String, _ shape: [Int]) throws -> [Float]? {
        store.contains(name) ? try store.floats(name, shape: shape) : nil
    }
}
