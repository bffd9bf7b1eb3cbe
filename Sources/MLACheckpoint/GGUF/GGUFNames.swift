/// GGUF ↔ Hugging Face tensor names for llama-family models (docs/formats.md "GGUF"), kept as
/// data as in gguf-py's `tensor_mapping.py`.
public enum GGUFNames {
    /// Whole-model tensors.
    static let global: [String: String] = [
        "token_embd": "model.embed_tokens",
        "output_norm": "model.norm",
        "output": "lm_head",
    ]

    /// Per-block tensors; `blk.N.` becomes `model.layers.N.`.
    static let block: [String: String] = [
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        // deepseek2 (MLA); k_b_proj / v_b_proj are HF's kv_b_proj split per head (`MLALayerWeights.deepSeekKVB`).
        "attn_q_a": "self_attn.q_a_proj",
        "attn_q_a_norm": "self_attn.q_a_layernorm",
        "attn_q_b": "self_attn.q_b_proj",
        "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa",
        "attn_kv_a_norm": "self_attn.kv_a_layernorm",
        "attn_k_b": "self_attn.k_b_proj",
        "attn_v_b": "self_attn.v_b_proj",
    ]

    /// The GGUF name of HF tensor `name` (`model.layers.3.mlp.up_proj.weight` → `blk.3.ffn_up.weight`),
    /// or nil when the tables have none.
    public static func ggufName(_ name: String) -> String? {
        let suffix = name.hasSuffix(".weight") ? "weight" : name.hasSuffix(".bias") ? "bias" : nil
        guard let suffix else { return nil }
        let base = String(name.dropLast(suffix.count + 1))
        if let global = global.first(where: { $0.value == base }) { return "\(global.key).\(suffix)" }
        guard let layer = LayerTensorNames.layer(of: name) else { return nil }
        let inner = String(base.dropFirst("model.layers.\(layer).".count))
        return block.first { $0.value == inner }.map { "blk.\(layer).\($0.key).\(suffix)" }
    }

    /// The HF name of GGUF tensor `name` (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`).
    /// Names outside the table (for example `rope_freqs.weight`) are returned unchanged.
    public static func hfName(_ name: String) -> String {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard let suffix = parts.last, suffix == "weight" || suffix == "bias" else { return name }
        if parts.count == 2, let base = global[String(parts[0])] {
            return "\(base).\(suffix)"
        }
        if parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0, String(layer) == parts[1],
           let base = block[String(parts[2])] {
            return "model.layers.\(layer).\(base).\(suffix)"
        }
        return name
    }

    /// For `blk.N.attn_q.*` / `blk.N.attn_k.*` returns which head count permutes its rows in a llama
    /// file: `.query` or `.key`; nil for every other tensor.
    static func ropeRole(_ name: String) -> RopeRole? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", Int(parts[1]) != nil, parts[3] == "weight" || parts[3] == "bias" else {
            return nil
        }
        switch parts[2] {
        case "attn_q": return .query
        case "attn_k": return .key
        default: return nil
        }
    }

    enum RopeRole { case query, key }
}
