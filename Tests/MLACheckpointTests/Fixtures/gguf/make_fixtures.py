#!/usr/bin/env python3
"""Writes the GGUF test fixtures with gguf-py (pip package `gguf`, made with 0.19.0), an implementation
independent of ours.

Dequantization fixtures, one pair per ggml type:
  dequant_<TYPE>.raw  raw stored blocks (random bytes with sane f16 scales, plus one all-zero block)
  dequant_<TYPE>.f32  gguf.quants.dequantize of those bytes, little-endian float32

Tiny model:
  tiny_llama.gguf       written by GGUFWriter: llama arch, 2 layers, hidden 32, 4 heads / 2 KV heads of
                        head dim 8, FFN 32, vocab 16; Q8_0 / F16 / BF16 / F32 tensors; tokenizer keys.
                        attn_q / attn_k (and their biases) are stored permuted as llama.cpp's
                        LlamaModel.permute does.
  tiny_expected.f32     every tensor in Hugging Face layout and order (PyTorch shapes), dequantized with
                        gguf-py and un-permuted with numpy, concatenated as float32; the plain Q8_0 MLP
                        weights are left out to keep the file small (their decode is covered above)
  tiny_expected.json    [{"name", "shape", "offset" (in floats, -1 when values are left out)}]

Run from this directory: python3 make_fixtures.py
Golden numbers for the real sample model: python3 make_fixtures.py --sample-golden .cache/sample.gguf
"""
import json

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

rng = np.random.default_rng(20251125)


def sane_f16(n):
    return (rng.standard_normal(n) * 0.05).astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(qtype, n_blocks):
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if qtype == T.F16:
        vals = (rng.standard_normal(n_blocks) * 3).astype(np.float16)
        vals[:4] = [0.0, -0.0, np.inf, -np.inf]
        vals[4] = np.float16(6.0e-8)  # subnormal
        return vals.view(np.uint8).copy()
    if qtype == T.BF16:
        vals = (rng.standard_normal(n_blocks) * 3).astype(np.float32)
        vals[:3] = [0.0, -0.0, np.inf]
        return (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).copy()
    if qtype == T.F32:
        return (rng.standard_normal(n_blocks) * 3).astype(np.float32).view(np.uint8).copy()
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    # Overwrite the f16 scale fields with sane values (random bytes would give NaN/huge scales).
    if qtype in (T.Q4_0, T.Q5_0, T.Q8_0):
        blocks[:, 0:2] = sane_f16(n_blocks)
    elif qtype in (T.Q4_1, T.Q5_1, T.Q4_K):
        blocks[:, 0:2] = sane_f16(n_blocks)
        blocks[:, 2:4] = sane_f16(n_blocks)
    elif qtype == T.Q6_K:
        blocks[:, block_bytes - 2:block_bytes] = sane_f16(n_blocks)
    blocks[1, :] = 0  # an all-zero block
    return blocks.reshape(-1)


def write_dequant_fixtures():
    counts = {T.F32: 64, T.F16: 64, T.BF16: 64, T.Q4_0: 6, T.Q4_1: 6, T.Q5_0: 6, T.Q5_1: 6, T.Q8_0: 6,
              T.Q4_K: 3, T.Q6_K: 3}
    for qtype, n in counts.items():
        raw = random_blocks(qtype, n)
        out = gguf.quants.dequantize(raw, qtype).astype('<f4').reshape(-1)
        raw.tofile(f"dequant_{qtype.name}.raw")
        out.tofile(f"dequant_{qtype.name}.f32")


def llama_permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half rows -> GGUF adjacent pairs)
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_unpermute(w, n_head):
    # formats.md: W.reshape(n, half, 2, in).swapaxes(1, 2)
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_tiny_model():
    hidden, n_head, n_kv, head_dim, ffn, vocab, layers = 32, 4, 2, 8, 32, 16, 2
    w = gguf.GGUFWriter("tiny_llama.gguf", "llama")
    w.add_name("tiny test llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    tokens = ["<s>", "</s>", "a", "b", "c", "ab", "abc", "\u0120a", "\u0120b", "x", "y", "z", "xy", "xyz",
              "<pad>", "<unk>"]
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * 12 + [3, 2])
    w.add_token_merges(["a b", "ab c", "x y", "xy z"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(14)
    w.add_unk_token_id(15)
    w.add_add_bos_token(False)
    w.add_chat_template("{{ messages }}")

    expected = []  # (hf name, float32 array in HF layout)

    def add(gguf_name, hf_name, hf_value, qtype, permute_heads=None, keep_values=True):
        stored = hf_value if permute_heads is None else llama_permute(hf_value, permute_heads)
        stored = stored.astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(gguf_name, stored)
            back = stored
        elif qtype == T.F16:
            w.add_tensor(gguf_name, stored.astype(np.float16))
            back = stored.astype(np.float16).astype(np.float32)
        else:
            q = gguf.quants.quantize(stored, qtype)
            w.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=qtype)
            back = gguf.quants.dequantize(q, qtype).reshape(stored.shape)
        if permute_heads is not None:
            back = llama_unpermute(back, permute_heads)
        expected.append((hf_name, back.astype(np.float32), keep_values))

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.5

    add("token_embd.weight", "model.embed_tokens.weight", r(vocab, hidden), T.Q8_0)
    for i in range(layers):
        p, hp = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", hp + "input_layernorm.weight", r(hidden), T.F32)
        add(p + "attn_q.weight", hp + "self_attn.q_proj.weight", r(n_head * head_dim, hidden),
            T.F16 if i == 0 else T.Q8_0, permute_heads=n_head)
        add(p + "attn_q.bias", hp + "self_attn.q_proj.bias", r(n_head * head_dim), T.F32, permute_heads=n_head)
        add(p + "attn_k.weight", hp + "self_attn.k_proj.weight", r(n_kv * head_dim, hidden),
            T.Q8_0 if i == 0 else T.BF16, permute_heads=n_kv)
        add(p + "attn_k.bias", hp + "self_attn.k_proj.bias", r(n_kv * head_dim), T.F32, permute_heads=n_kv)
        add(p + "attn_v.weight", hp + "self_attn.v_proj.weight", r(n_kv * head_dim, hidden), T.Q8_0)
        add(p + "attn_v.bias", hp + "self_attn.v_proj.bias", r(n_kv * head_dim), T.F32)
        add(p + "attn_output.weight", hp + "self_attn.o_proj.weight", r(hidden, n_head * head_dim), T.F16)
        add(p + "attn_output.bias", hp + "self_attn.o_proj.bias", r(hidden), T.F32)
        add(p + "ffn_norm.weight", hp + "post_attention_layernorm.weight", r(hidden), T.F32)
        add(p + "ffn_gate.weight", hp + "mlp.gate_proj.weight", r(ffn, hidden), T.Q8_0, keep_values=False)
        add(p + "ffn_up.weight", hp + "mlp.up_proj.weight", r(ffn, hidden), T.Q8_0, keep_values=False)
        add(p + "ffn_down.weight", hp + "mlp.down_proj.weight", r(hidden, ffn), T.Q8_0, keep_values=False)
    add("output_norm.weight", "model.norm.weight", r(hidden), T.F32)
    add("output.weight", "lm_head.weight", r(vocab, hidden), T.Q8_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    index, offset, chunks = [], 0, []
    for name, arr, keep in expected:
        index.append({"name": name, "shape": list(arr.shape), "offset": offset if keep else -1})
        if keep:
            offset += arr.size
            chunks.append(arr.astype('<f4').reshape(-1))
    np.concatenate(chunks).tofile("tiny_expected.f32")
    with open("tiny_expected.json", "w") as f:
        json.dump(index, f, indent=1)


def sample_golden(path):
    """Prints the golden numbers GGUFRealModelTests hard-codes for the SmolLM2 sample (data.md §1):
    row-order-sensitive checksums sum_r (r+1)·sum(row r) in float64 of HF-layout tensors."""
    r = gguf.GGUFReader(path)
    heads = {"attn_q": 9, "attn_k": 3}
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.attn_k.weight", "blk.0.attn_v.weight",
                 "token_embd.weight", "blk.0.attn_norm.weight"]:
        t = next(t for t in r.tensors if t.name == name)
        shape = [int(x) for x in reversed(t.shape)]
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape).astype(np.float64)
        kind = name.split(".")[-2]
        if kind in heads:
            w = llama_unpermute(w, heads[kind])
        w2 = w.reshape(shape[0], -1)
        weights = np.arange(1, shape[0] + 1, dtype=np.float64)
        print(name, t.tensor_type.name, shape, repr(float((w2.sum(axis=1) * weights).sum())), repr(float(w2[0, 0])))


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--sample-golden":
        sample_golden(sys.argv[2])
    else:
        write_dequant_fixtures()
        write_tiny_model()
