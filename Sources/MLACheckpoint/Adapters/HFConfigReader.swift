/// Typed access to a Hugging Face `config.json` object with errors that name the file and key.
/// Defaults follow the reference `configuration_*.py` files (transformers 4.57 and 5.24, see
/// docs/formats.md "Hugging Face `config.json`"), not guesses: absent `tie_word_embeddings` is false, absent `rms_norm_eps` 1e-6.
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

    func positiveInt(_ key: String) throws -> Int { try positive(try int(key), key: key) }

    func positiveInt(_ key: String, default fallback: Int) throws -> Int { try positive(try int(key, default: fallback), key: key) }

    private func positive(_ v: Int, key: String) throws -> Int {
        guard v > 0 else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "must be positive, found \(v)") }
        return v
    }

    func double(_ key: String, default fallback: Double) throws -> Double {
        guard let value = json[key], !value.isNull else { return fallback }
        return try Self.finite(value, key: key, file: file)
    }

    /// A finite number > 0 (`rms_norm_eps`, `rope_theta`, scaling factors); `1e999` parses to
    /// infinity and is refused here, not carried into the tables and the output's JSON.
    func positiveDouble(_ key: String, default fallback: Double) throws -> Double {
        let d = try double(key, default: fallback)
        guard d > 0 else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "must be positive, found \(d)") }
        return d
    }

    /// `num_hidden_layers`: positive and at most `maxLayers`, since per-layer tables are sized by it
    /// before any tensor is looked at.
    func layerCount() throws -> Int {
        let n = try positiveInt("num_hidden_layers")
        guard n <= Self.maxLayers else {
            throw CheckpointError.invalidConfig(file: file, key: "num_hidden_layers", reason: "\(n) is more than the \(Self.maxLayers) layers this toolkit reads")
        }
        return n
    }

    /// Most decoder layers a config may declare (real models have at most a few hundred).
    static let maxLayers = 65_536

    /// Throws an error naming the keys when the product of `factors` (config keys and their values)
    /// times 8 (the widest element) overflows. Adapters check every product of sizes that later code
    /// forms (q = heads × head_dim, a weight's rows × columns, the KV cache per token), so that code
    /// can multiply them, and by a dtype size, without overflow checks of its own.
    func requireProductFits(_ factors: [(key: String, value: Int)]) throws {
        var product = 8
        for f in factors {
            let (p, overflow) = product.multipliedReportingOverflow(by: f.value)
            guard !overflow else {
                throw CheckpointError.invalidConfig(
                    file: file, key: factors.map(\.key).joined(separator: " × "),
                    reason: "the product \(factors.map { String($0.value) }.joined(separator: " × ")) overflows; the config is corrupt")
            }
            product = p
        }
    }

    /// The sum `a + b` of two config-derived sizes, or an error naming `key` when it overflows.
    func checkedSum(_ a: Int, _ b: Int, key: String) throws -> Int {
        let (s, overflow) = a.addingReportingOverflow(b)
        guard !overflow else {
            throw CheckpointError.invalidConfig(file: file, key: key, reason: "\(a) + \(b) overflows; the config is corrupt")
        }
        return s
    }

    /// A finite JSON number; `key` and `file` name it in the error.
    static func finite(_ value: JSONValue, key: String, file: String) throws -> Double {
        guard let d = value.double else {
            throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected a number, found \(value.description)")
        }
        guard d.isFinite else {
            throw CheckpointError.invalidConfig(file: file, key: key, reason: "\(value.description) is not a finite number")
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
        var theta = try positiveDouble("rope_theta", default: 10000)
        if let p = params, let t = p["rope_theta"], !t.isNull {
            theta = try Self.finite(t, key: "rope_parameters.rope_theta", file: file)
            guard theta > 0 else {
                throw CheckpointError.invalidConfig(file: file, key: "rope_parameters.rope_theta", reason: "must be positive, found \(theta)")
            }
        }
        guard let s = scalingObject else { return (theta, .none) }
        let key = params != nil ? "rope_parameters" : "rope_scaling"
        guard s.object != nil else { throw CheckpointError.invalidConfig(file: file, key: key, reason: "expected an object") }
        let type = s["rope_type"]?.string ?? s["type"]?.string ?? "default"
        func number(_ name: String) throws -> Double? {
            guard let v = s[name], !v.isNull else { return nil }
            return try Self.finite(v, key: "\(key).\(name)", file: file)
        }
        func required(_ name: String) throws -> Double {
            guard let v = try number(name) else { throw CheckpointError.missingConfigKey(file: file, key: "\(key).\(name)") }
            return v
        }
        func positive(_ name: String) throws -> Double {
            let v = try required(name)
            guard v > 0 else { throw CheckpointError.invalidConfig(file: file, key: "\(key).\(name)", reason: "must be positive, found \(v)") }
            return v
        }
        /// `original_max_position_embeddings`: an exact positive integer (1e300 is refused, not converted).
        func originalContext() throws -> Int {
            let name = "original_max_position_embeddings"
            guard let v = s[name], !v.isNull else { return maxPositions }
            guard let i = v.int, i > 0 else {
                throw CheckpointError.invalidConfig(file: file, key: "\(key).\(name)", reason: "\(v.description) is not a positive integer")
            }
            return i
        }
        switch type {
        case "default":
            return (theta, .none)
        case "linear":
            return (theta, .linear(factor: try positive("factor")))
        case "llama3":
            let low = try positive("low_freq_factor"), high = try positive("high_freq_factor")
            guard high > low else {
                throw CheckpointError.invalidConfig(file: file, key: "\(key).high_freq_factor", reason: "\(high) must exceed low_freq_factor \(low)")
            }
            return (theta, .llama3(factor: try positive("factor"), lowFreqFactor: low,
                                   highFreqFactor: high, originalMaxPositions: try originalContext()))
        case "yarn":
            return (theta, .yarn(factor: try positive("factor"), originalMaxPositions: try originalContext(),
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
        let maxPositions = try positiveInt("max_position_embeddings", default: 2048)
        let (theta, scaling) = try rope(maxPositions: maxPositions)
        let eps = try positiveDouble("rms_norm_eps", default: 1e-6)
        let layers = try layerCount()
        let intermediate = ("intermediate_size", try positiveInt("intermediate_size"))
        let hiddenSize = ("hidden_size", hidden), vocab = ("vocab_size", try positiveInt("vocab_size"))
        try requireProductFits([("num_attention_heads", heads), ("head_dim", headDim), hiddenSize])
        try requireProductFits([("num_key_value_heads", kvHeads), ("head_dim", headDim), hiddenSize])
        try requireProductFits([vocab, hiddenSize])
        try requireProductFits([intermediate, hiddenSize])
        if let act = string("hidden_act"), act != "silu" {
            throw CheckpointError.unsupportedModel(file: file, reason: "hidden_act '\(act)' (only silu/SwiGLU MLPs are supported)")
        }
        return ModelConfig(
            family: family, numLayers: layers, hiddenSize: hidden,
            intermediateSize: intermediate.1, numHeads: heads, numKVHeads: kvHeads,
            headDim: headDim, vocabSize: vocab.1, maxPositions: maxPositions,
            ropeTheta: theta, ropeScaling: scaling, rmsNormEps: eps, qkvBias: qkvBias, outputBias: outputBias,
            mlpBias: mlpBias, tiedEmbeddings: try bool("tie_word_embeddings", default: false),
            bosTokenId: try optionalInt("bos_token_id"), eosTokenId: try optionalInt("eos_token_id"), raw: json)
    }
}
