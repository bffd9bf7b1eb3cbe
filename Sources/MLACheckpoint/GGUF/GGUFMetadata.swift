/// HF config.json and tokenizer data from GGUF metadata (docs/formats.md "GGUF": llama/qwen2 keys → HF config,
/// "Tokenizer keys").
extension GGUFFile {
    /// Architectures `hfConfig()` maps, with their HF class names.
    static let hfArchitectures: [String: String] = ["llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"]

    /// An HF `config.json` object for a llama or qwen2 file (transformers 4.x layout: top-level
    /// `rope_theta`/`rope_scaling`, `torch_dtype` "float32" since quantized weights decode to F32).
    ///
    /// `rms_norm_eps` and other f32 metadata are written as the shortest decimal that round-trips the
    /// Float (`1e-05`, not 9.99999974738e-06). Throws `CheckpointError.unsupportedModel` for unknown
    /// architectures, per-layer KV head counts, partial rotary (rope.dimension_count < head_dim),
    /// value_length ≠ key_length, unknown rope scaling types, and Llama-3 `rope_freqs.weight`
    /// frequency factors (not mapped yet); `missingConfigKey`/`invalidConfig` for absent or ill-typed keys.
    public func hfConfig() throws -> JSONValue {
        guard let arch = architecture else { throw CheckpointError.missingConfigKey(file: path, key: "general.architecture") }
        if arch == "deepseek2" { return try deepSeek2Config() }
        guard let hfClass = Self.hfArchitectures[arch] else {
            throw CheckpointError.unsupportedModel(file: path, reason: "architecture '\(arch)' is not supported (llama, qwen2 and dense MLA deepseek2 are)")
        }
        let layers = try requiredInt("\(arch).block_count")
        let hidden = try requiredInt("\(arch).embedding_length")
        let ffn = try requiredInt("\(arch).feed_forward_length")
        let context = try requiredInt("\(arch).context_length")
        let heads = try requiredInt("\(arch).attention.head_count")
        let kvHeads = try kvHeadCount(arch: arch, heads: heads)
        let headDim = try headDimension(arch: arch, hidden: hidden, heads: heads)
        try checkRopeCoversHead(arch: arch, headDim: headDim)
        let eps = try requiredNumber("\(arch).attention.layer_norm_rms_epsilon")
        let theta = try value("\(arch).rope.freq_base").map { try number($0, key: "\(arch).rope.freq_base") } ?? JSONValue(10000.0)
        let vocab = try vocabularySize(arch: arch)

        var members: [(String, JSONValue)] = [
            ("architectures", .array([.string(hfClass)])),
            ("model_type", .string(arch)),
            ("num_hidden_layers", JSONValue(layers)),
            ("hidden_size", JSONValue(hidden)),
            ("intermediate_size", JSONValue(ffn)),
            ("num_attention_heads", JSONValue(heads)),
            ("num_key_value_heads", JSONValue(kvHeads)),
            ("head_dim", JSONValue(headDim)),
            ("max_position_embeddings", JSONValue(context)),
            ("rope_theta", theta),
            ("rope_scaling", try ropeScaling(arch: arch)),
            ("rms_norm_eps", eps),
            ("vocab_size", JSONValue(vocab)),
            ("hidden_act", .string("silu")),
            ("tie_word_embeddings", .bool(tensorInfo("output.weight") == nil)),
        ]
        if arch == "qwen2" {
            members.append(("attention_bias", .bool(true)))
            members.append(("use_sliding_window", .bool(false)))
        } else {
            members.append(("attention_bias", .bool(try llamaAttentionBias())))
            members.append(("mlp_bias", .bool(tensorInfo("blk.0.ffn_up.bias") != nil)))
        }
        for (key, hfKey) in [("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")] {
            if let v = value(key) { members.append((hfKey, JSONValue(try nonNegativeInt(v, key: key)))) }
        }
        members.append(("torch_dtype", .string("float32")))
        return .object(members)
    }

    /// `head_count_kv` (default: `head_count`): one number for every layer, dividing the head count.
    private func kvHeadCount(arch: String, heads: Int) throws -> Int {
        var kvHeads = heads
        if let v = value("\(arch).attention.head_count_kv") {
            if v.array != nil {
                throw CheckpointError.unsupportedModel(file: path, reason: "\(arch).attention.head_count_kv is a per-layer array; models with varying KV heads per layer are not supported")
            }
            kvHeads = try positiveInt(v, key: "\(arch).attention.head_count_kv")
        }
        guard heads % kvHeads == 0 else {
            throw CheckpointError.invalidConfig(file: path, key: "\(arch).attention.head_count_kv", reason: "\(kvHeads) does not divide head_count \(heads)")
        }
        return kvHeads
    }

    /// `key_length` (default: hidden / heads when that divides), which `value_length` must equal.
    private func headDimension(arch: String, hidden: Int, heads: Int) throws -> Int {
        let headDim: Int
        if let v = value("\(arch).attention.key_length") {
            headDim = try positiveInt(v, key: "\(arch).attention.key_length")
        } else {
            guard hidden % heads == 0 else {
                throw CheckpointError.missingConfigKey(file: path, key: "\(arch).attention.key_length")
            }
            headDim = hidden / heads
        }
        if let v = value("\(arch).attention.value_length"), try positiveInt(v, key: "\(arch).attention.value_length") != headDim {
            throw CheckpointError.unsupportedModel(file: path, reason: "\(arch).attention.value_length \(v) differs from key_length \(headDim)")
        }
        return headDim
    }

    /// RoPE over the whole head, with no per-frequency factors: partial rotary and Llama-3
    /// `rope_freqs.weight` have no HF mapping here yet.
    private func checkRopeCoversHead(arch: String, headDim: Int) throws {
        if let v = value("\(arch).rope.dimension_count") {
            let rot = try positiveInt(v, key: "\(arch).rope.dimension_count")
            guard rot >= headDim else {
                throw CheckpointError.unsupportedModel(file: path, reason: "partial rotary embedding (rope.dimension_count \(rot) < head_dim \(headDim)) is not supported")
            }
        }
        if tensorInfo("rope_freqs.weight") != nil {
            throw CheckpointError.unsupportedModel(file: path, reason: "tensor 'rope_freqs.weight' (Llama-3 rope frequency factors) is not mapped to an HF rope_scaling yet; convert from the HF checkpoint instead")
        }
    }

    /// `vocab_size`, else the tokenizer's token count, else the embedding's rows.
    private func vocabularySize(arch: String) throws -> Int {
        if let v = value("\(arch).vocab_size") {
            return try positiveInt(v, key: "\(arch).vocab_size")
        } else if let tokens = value("tokenizer.ggml.tokens")?.array {
            return tokens.count
        } else if let embd = tensorInfo("token_embd.weight"), embd.ne.count == 2 {
            return embd.ne[1]
        }
        throw CheckpointError.missingConfigKey(file: path, key: "\(arch).vocab_size")
    }

    /// Llama's `attention_bias` puts biases on q, k, v and o together; any other mix cannot be expressed.
    private func llamaAttentionBias() throws -> Bool {
        let present = ["attn_q", "attn_k", "attn_v", "attn_output"].map { tensorInfo("blk.0.\($0).bias") != nil }
        guard present.allSatisfy({ $0 == present[0] }) else {
            throw CheckpointError.unsupportedModel(file: path, reason: "llama file has biases on only some of attn_q/k/v/output (\(present)); LlamaConfig.attention_bias covers all four")
        }
        return present[0]
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*` (or the legacy `rope.scale_linear`); null when none.
    private func ropeScaling(arch: String) throws -> JSONValue {
        let typeKey = "\(arch).rope.scaling.type"
        var type = try value(typeKey).map { v -> String in
            guard let s = v.string else { throw CheckpointError.invalidConfig(file: path, key: typeKey, reason: "is \(v.typeName), expected a string") }
            return s
        }
        var factor = try value("\(arch).rope.scaling.factor").map { try number($0, key: "\(arch).rope.scaling.factor") }
        if type == nil, let legacy = value("\(arch).rope.scale_linear") {
            type = "linear"
            factor = try number(legacy, key: "\(arch).rope.scale_linear")
        }
        switch type {
        case nil, "none":
            return .null
        case "linear":
            guard let factor else { throw CheckpointError.missingConfigKey(file: path, key: "\(arch).rope.scaling.factor") }
            return .object([("rope_type", .string("linear")), ("factor", factor)])
        case "yarn":
            guard let factor else { throw CheckpointError.missingConfigKey(file: path, key: "\(arch).rope.scaling.factor") }
            let origKey = "\(arch).rope.scaling.original_context_length"
            var members: [(String, JSONValue)] = [("rope_type", .string("yarn")), ("factor", factor)]
            if let v = value(origKey) { members.append(("original_max_position_embeddings", JSONValue(try positiveInt(v, key: origKey)))) }
            return .object(members)
        case let other?:
            throw CheckpointError.unsupportedModel(file: path, reason: "rope scaling type '\(other)' is not supported (none, linear, yarn are)")
        }
    }

    func requiredInt(_ key: String) throws -> Int {
        guard let v = value(key) else { throw CheckpointError.missingConfigKey(file: path, key: key) }
        return try positiveInt(v, key: key)
    }

    func positiveInt(_ v: GGUFValue, key: String) throws -> Int {
        guard let n = v.int, n > 0 else {
            throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName) \(v), expected a positive integer")
        }
        return n
    }

    func nonNegativeInt(_ v: GGUFValue, key: String) throws -> Int {
        guard let n = v.int, n >= 0 else {
            throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName) \(v), expected a non-negative integer")
        }
        return n
    }

    func requiredNumber(_ key: String) throws -> JSONValue {
        guard let v = value(key) else { throw CheckpointError.missingConfigKey(file: path, key: key) }
        return try number(v, key: key)
    }

    /// A float or integer as a JSON number; f32 values use the Float's shortest round-trip decimal.
    func number(_ v: GGUFValue, key: String) throws -> JSONValue {
        switch v {
        case let .float32(f) where f.isFinite: return .number(f.description)
        case let .float64(d) where d.isFinite: return JSONValue(d)
        default:
            if let n = v.int { return JSONValue(n) }
            throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName) \(v), expected a finite number")
        }
    }

    /// The embedded tokenizer (`tokenizer.ggml.*`), or nil when the file has no `tokenizer.ggml.model`.
    /// Throws `invalidConfig` when a present key has the wrong type (for example tokens that are not
    /// strings) or the token types do not match the token count.
    public func tokenizerData() throws -> GGUFTokenizerData? {
        guard let modelValue = value("tokenizer.ggml.model") else { return nil }
        let model = try stringValue(modelValue, key: "tokenizer.ggml.model")
        guard let tokens = try stringArray("tokenizer.ggml.tokens") else {
            throw CheckpointError.missingConfigKey(file: path, key: "tokenizer.ggml.tokens")
        }
        var tokenTypes: [Int32] = []
        if let v = value("tokenizer.ggml.token_type") {
            guard let items = v.array else {
                throw CheckpointError.invalidConfig(file: path, key: "tokenizer.ggml.token_type", reason: "is \(v.typeName), expected an integer array")
            }
            tokenTypes.reserveCapacity(items.count)
            for item in items {
                guard let n = item.int, let t = Int32(exactly: n) else {
                    throw CheckpointError.invalidConfig(file: path, key: "tokenizer.ggml.token_type", reason: "holds \(item.typeName) \(item), expected i32")
                }
                tokenTypes.append(t)
            }
            guard tokenTypes.count == tokens.count else {
                throw CheckpointError.invalidConfig(file: path, key: "tokenizer.ggml.token_type", reason: "has \(tokenTypes.count) entries for \(tokens.count) tokens")
            }
        }
        func optionalId(_ key: String) throws -> Int? {
            guard let v = value(key) else { return nil }
            let id = try nonNegativeInt(v, key: key)
            guard id < tokens.count else {
                throw CheckpointError.invalidConfig(file: path, key: key, reason: "token id \(id) is outside the \(tokens.count)-token vocabulary")
            }
            return id
        }
        func flag(_ key: String) throws -> Bool {
            guard let v = value(key) else { return false }
            guard let b = v.bool else { throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName), expected bool") }
            return b
        }
        return GGUFTokenizerData(
            model: model,
            pre: try value("tokenizer.ggml.pre").map { try stringValue($0, key: "tokenizer.ggml.pre") },
            tokens: tokens,
            merges: try stringArray("tokenizer.ggml.merges") ?? [],
            tokenTypes: tokenTypes,
            bosTokenId: try optionalId("tokenizer.ggml.bos_token_id"),
            eosTokenId: try optionalId("tokenizer.ggml.eos_token_id"),
            unknownTokenId: try optionalId("tokenizer.ggml.unknown_token_id"),
            paddingTokenId: try optionalId("tokenizer.ggml.padding_token_id"),
            addBosToken: try flag("tokenizer.ggml.add_bos_token"),
            addEosToken: try flag("tokenizer.ggml.add_eos_token"),
            chatTemplate: try value("tokenizer.chat_template").map { try stringValue($0, key: "tokenizer.chat_template") })
    }

    private func stringValue(_ v: GGUFValue, key: String) throws -> String {
        guard let s = v.string else { throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName), expected a string") }
        return s
    }

    private func stringArray(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let items = v.array else {
            throw CheckpointError.invalidConfig(file: path, key: key, reason: "is \(v.typeName), expected a string array")
        }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let s = item.string else {
                throw CheckpointError.invalidConfig(file: path, key: key, reason: "holds \(item.typeName), expected strings")
            }
            out.append(s)
        }
        return out
    }
}
