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
    ]

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
