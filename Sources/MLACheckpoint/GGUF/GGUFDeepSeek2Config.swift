/// HF config.json for a llama.cpp `deepseek2` GGUF with MLA tensors (docs/gguf-export.md): the DeepSeek-V3
/// config the runtime reads, so `mla-verify` runs such a file.
extension GGUFFile {
    /// A DeepSeek-V3 config object (dense, `first_k_dense_replace` = layers) from the `deepseek2.*` keys.
    /// Refuses files with experts, without `key_length_mla` / `value_length_mla` (the legacy non-MLA
    /// layout) and with rope scaling.
    func deepSeek2Config() throws -> JSONValue {
        let a = "deepseek2."
        let layers = try requiredInt(a + "block_count")
        let dense = try value(a + "leading_dense_block_count").map { try nonNegativeInt($0, key: a + "leading_dense_block_count") } ?? 0
        guard dense == layers else {
            throw CheckpointError.unsupportedModel(file: path, reason: "deepseek2 with mixture-of-experts layers (leading_dense_block_count \(dense) of \(layers)) is not supported; only dense MLA files are")
        }
        guard value(a + "attention.key_length_mla") != nil, value(a + "attention.value_length_mla") != nil else {
            throw CheckpointError.unsupportedModel(file: path, reason: "deepseek2 without attention.key_length_mla/value_length_mla (the legacy non-MLA layout) is not supported")
        }
        if let type = value(a + "rope.scaling.type")?.string, type != "none" {
            throw CheckpointError.unsupportedModel(file: path, reason: "deepseek2 rope scaling '\(type)' is not supported")
        }
        let rope = try requiredInt(a + "rope.dimension_count")
        let keyLength = try requiredInt(a + "attention.key_length_mla")
        guard keyLength > rope else {
            throw CheckpointError.invalidConfig(file: path, key: a + "attention.key_length_mla", reason: "\(keyLength) leaves no nope dimensions after rope.dimension_count \(rope)")
        }
        let qRank = try value(a + "attention.q_lora_rank").map { try nonNegativeInt($0, key: a + "attention.q_lora_rank") } ?? 0
        let ffn = try requiredInt(a + "feed_forward_length")
        let vocab = try value(a + "vocab_size").map { try positiveInt($0, key: a + "vocab_size") }
            ?? value("tokenizer.ggml.tokens")?.array?.count ?? tensorInfo("token_embd.weight")?.ne.last ?? 0
        guard vocab > 0 else { throw CheckpointError.missingConfigKey(file: path, key: a + "vocab_size") }
        let heads = try requiredInt(a + "attention.head_count")
        var members: [(String, JSONValue)] = [
            ("architectures", .array([.string("DeepseekV3ForCausalLM")])), ("model_type", .string("deepseek_v3")),
            ("vocab_size", JSONValue(vocab)), ("hidden_size", JSONValue(try requiredInt(a + "embedding_length"))),
            ("intermediate_size", JSONValue(ffn)), ("moe_intermediate_size", JSONValue(ffn)),
            ("num_hidden_layers", JSONValue(layers)), ("num_attention_heads", JSONValue(heads)),
            ("num_key_value_heads", JSONValue(heads)), ("q_lora_rank", qRank > 0 ? JSONValue(qRank) : .null),
            ("kv_lora_rank", JSONValue(try requiredInt(a + "attention.kv_lora_rank"))),
            ("qk_nope_head_dim", JSONValue(keyLength - rope)), ("qk_rope_head_dim", JSONValue(rope)),
            ("v_head_dim", JSONValue(try requiredInt(a + "attention.value_length_mla"))),
            ("n_routed_experts", JSONValue(1)), ("n_shared_experts", JSONValue(1)), ("num_experts_per_tok", JSONValue(1)),
            ("n_group", JSONValue(1)), ("topk_group", JSONValue(1)), ("first_k_dense_replace", JSONValue(layers)),
            ("moe_layer_freq", JSONValue(1)), ("hidden_act", .string("silu")),
            ("max_position_embeddings", JSONValue(try requiredInt(a + "context_length"))),
            ("rms_norm_eps", try requiredNumber(a + "attention.layer_norm_rms_epsilon")),
            ("rope_theta", try value(a + "rope.freq_base").map { try number($0, key: a + "rope.freq_base") } ?? JSONValue(10000.0)),
            ("rope_scaling", .null), ("rope_interleave", .bool(true)), ("attention_bias", .bool(false)),
            ("tie_word_embeddings", .bool(tensorInfo("output.weight") == nil)),
        ]
        for (key, hfKey) in [("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")] {
            if let v = value(key) { members.append((hfKey, JSONValue(try nonNegativeInt(v, key: key)))) }
        }
        members.append(("torch_dtype", .string("float32")))
        return .object(members)
    }
}
