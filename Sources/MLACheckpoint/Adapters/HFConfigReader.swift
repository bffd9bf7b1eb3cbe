/// Typed access to a Hugging Face `config.json` object with errors that name the file and key.
/// Defaults follow the reference `configuration_*.py` files (transformers 4.57 and 5.24, see
/// `formats.md` §3), not guesses: absent `tie_word_embeddings` is false, absent `rms_norm_eps` 1e-6.
struct HFConfigReader {
    let json: JSONValue
    let file: String

    init(json: JSONValue, file: String) throws {
        guard json.object != nil else {
            throw CheckpointError.malformed(file: file, reason: "config is not a JSON object")
        }
        self.json = json
        self.file = file
    }

    func has(_ key: String) -> Bool { json[key].map { !$0.isNull } ?? false }

    func int(_ key: String) throws -> Int {
        guard let value = json[key], !value.isNull else { throw CheckpointError.missingConfigKey(file: file, key: key) }
        return try Self.int(value, key: key, file: file)
    }

    func int(_ key: String, default fallback: Int) throws -> Int {
        guard let value = json[key], !value.isNull else { return fallback }
        return try Self.int(value, key: key, file: file)
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard let value = json[key], !value.isNull else { return nil }
        // eos_token_id may be a list; the first entry is the primary one.
        if let list = value.array, let first = list.first { return try Self.int(first, key: key, file: file) }
        return try Self.int(value, key: key, file: file)
    }

    func positiveInt(_ key: String) throws -> Int {
        let v = try int(key)
        guard v > 0 else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "must be positive, found \(v)") }
        return v
    }

    func double(_ key: String, default fallback: Double) throws -> Double {
        guard let value = json[key], !value.isNull else { return fallback }
        guard let d = value.double, d.isFinite else {
            throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected a number")
        }
        return d
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = json[key], !value.isNull else { return fallback }
        guard let b = value.bool else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected true or false") }
        return b
    }

    func string(_ key: String) -> String? { json[key]?.string }

    private static func int(_ value: JSONValue, key: String, file: String) throws -> Int {
        guard let i = value.int else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected an integer") }
        return i
    }

    /// RoPE base and scaling from either layout: transformers ≤ 4 (`rope_theta` + `rope_scaling`) or
    /// transformers 5 (`rope_parameters` {rope_theta, rope_type, ...}). `type` is an old alias of `rope_type`.
    func rope(maxPositions: Int) throws -> (theta: Double, scaling: RopeScaling) {
        let params = json["rope_parameters"].flatMap { $0.isNull ? nil : $0 }
        let scalingObject = params ?? json["rope_scaling"].flatMap { $0.isNull ? nil : $0 }
        var theta = try double("rope_theta", default: 10000)
        if let p = params, let t = p["rope_theta"]?.double { theta = t }
        guard theta > 0 else { throw CheckpointError.invalidConfig(file: file, key: "rope_theta", reason: "must be positive") }
        guard let s = scalingObject else { return (theta, .none) }
        let key = params != nil ? "rope_parameters" : "rope_scaling"
        guard s.object != nil else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected an object") }
        let type = s["rope_type"]?.string ?? s["type"]?.string ?? "default"
        func number(_ name: String) throws -> Double? {
            guard let v = s[name], !v.isNull else { return nil }
            guard let d = v.double, d.isFinite else {
                throw CheckpointError.invalidConfig(file: file, key: "\(key).\(name)", reason: "expected a number")
            }
            return d
        }
        func required(_ name: String) throws -> Double {
            guard let v = try number(name) else { throw CheckpointError.missingConfigKey(file: file, key: "\(key).\(name)") }
            return v
        }
        switch type {
        case "default":
            return (theta, .none)
        case "linear":
            let f = try required("factor")
            guard f > 0 else { throw CheckpointError.invalidConfig(file: file, key: "\(key).factor", reason: "must be positive") }
            return (theta, .linear(factor: f))
        case "llama3":
            let original = try number("original_max_position_embeddings").map { Int($0) } ?? maxPositions
            return (theta, .llama3(factor: try required("factor"), lowFreqFactor: try required("low_freq_factor"),
                                   highFreqFactor: try required("high_freq_factor"), originalMaxPositions: original))
        case "yarn":
            let original = try number("original_max_position_embeddings").map { Int($0) } ?? maxPositions
            return (theta, .yarn(factor: try required("factor"), originalMaxPositions: original,
                                 betaFast: try number("beta_fast") ?? 32, betaSlow: try number("beta_slow") ?? 1,
                                 attentionFactor: try number("attention_factor"), mscale: try number("mscale"),
                                 mscaleAllDim: try number("mscale_all_dim"),
                                 truncate: s["truncate"]?.bool ?? true))
        default:
            throw CheckpointError.unsupportedModel(
                file: file, reason: "RoPE scaling '\(type)' is position-dependent or unknown; supported: linear, llama3, yarn")
        }
    }

    /// The fields every llama-like family shares; the family adapter fills in biases and checks.
    func commonConfig(family: ModelFamily, qkvBias: Bool, outputBias: Bool, mlpBias: Bool) throws -> ModelConfig {
        if has("text_config") {
            throw CheckpointError.unsupportedModel(
                file: file, reason: "multimodal wrapper (text_config); convert the text model's own config")
        }
        if let prf = json["partial_rotary_factor"]?.double, prf < 1 {
            throw CheckpointError.unsupportedModel(
                file: file, reason: "partial_rotary_factor \(prf) < 1 (partial RoPE sources are not supported)")
        }
        let hidden = try positiveInt("hidden_size")
        let heads = try positiveInt("num_attention_heads")
        let kvHeads = try int("num_key_value_heads", default: heads)
        guard kvHeads > 0, heads % kvHeads == 0 else {
            throw CheckpointError.invalidConfig(
                file: file, key: "num_key_value_heads",
                reason: "\(kvHeads) does not divide num_attention_heads \(heads)")
        }
        let headDim: Int
        if has("head_dim") {
            headDim = try positiveInt("head_dim")
        } else {
            guard hidden % heads == 0 else {
                throw CheckpointError.invalidConfig(file: file, key: "head_dim",
                                                    reason: "absent and hidden_size \(hidden) is not divisible by \(heads) heads")
            }
            headDim = hidden / heads
        }
        guard headDim % 2 == 0 else {
            throw CheckpointError.invalidConfig(file: file, key: "head_dim", reason: "RoPE needs an even head dim, found \(headDim)")
        }
        let maxPositions = try int("max_position_embeddings", default: 2048)
        let (theta, scaling) = try rope(maxPositions: maxPositions)
        let eps = try double("rms_norm_eps", default: 1e-6)
        guard eps > 0 else { throw CheckpointError.invalidConfig(file: file, key: "rms_norm_eps", reason: "must be positive") }
        if let act = string("hidden_act"), act != "silu" {
            throw CheckpointError.unsupportedModel(file: file, reason: "hidden_act '\(act)' (only silu/SwiGLU MLPs are supported)")
        }
        return ModelConfig(
            family: family, numLayers: try positiveInt("num_hidden_layers"), hiddenSize: hidden,
            intermediateSize: try positiveInt("intermediate_size"), numHeads: heads, numKVHeads: kvHeads,
            headDim: headDim, vocabSize: try positiveInt("vocab_size"), maxPositions: maxPositions,
            ropeTheta: theta, ropeScaling: scaling, rmsNormEps: eps, qkvBias: qkvBias, outputBias: outputBias,
            mlpBias: mlpBias, tiedEmbeddings: try bool("tie_word_embeddings", default: false),
            bosTokenId: try optionalInt("bos_token_id"), eosTokenId: try optionalInt("eos_token_id"), raw: json)
    }
}
