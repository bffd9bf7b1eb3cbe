import MLACheckpoint
import MLATensor
import Testing

/// The tiny llama written by gguf-py's GGUFWriter (fixtures/gguf/make_fixtures.py), read back and compared
/// with the HF-layout values the script computed with numpy (dequantized by gguf-py, un-permuted).
@Suite("GGUF tiny llama fixture")
struct GGUFTinyModelTests {
    let path = GGUFTestSupport.fixtures + "/tiny_llama.gguf"

    @Test("header, metadata and tensor infos")
    func header() throws {
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.alignment == 32)
        #expect(f.dataOffset % 32 == 0)
        #expect(f.architecture == "llama")
        // gguf-py's GGUFReader lists 22 KV pairs, from general.architecture to tokenizer.chat_template.
        #expect(f.metadata.count == 22)
        #expect(f.metadata.first?.key == "general.architecture")
        #expect(f.metadata.last?.key == "tokenizer.chat_template")
        #expect(f.value("llama.block_count")?.int == 2)
        #expect(f.value("llama.attention.head_count_kv")?.int == 2)
        #expect(f.value("llama.attention.layer_norm_rms_epsilon") == .float32(1e-5))
        #expect(f.tensors.count == 1 + 2 * 13 + 2)
        let q = try #require(f.tensorInfo("blk.0.attn_q.weight"))
        #expect(q.ne == [32, 32] && q.type == .f16 && q.byteCount == 2048)
        let k = try #require(f.tensorInfo("blk.1.attn_k.weight"))
        #expect(k.ne == [32, 16] && k.type == .bf16)
        #expect(f.tensorInfo("token_embd.weight")?.type == .q8_0)
    }

    @Test("every tensor matches the gguf-py/numpy HF-layout values")
    func values() throws {
        let store = try GGUFTensorStore(path: path)
        let index = try JSONValue.parse(GGUFTestSupport.bytes("tiny_expected.json"))
        let expected = try GGUFTestSupport.floats("tiny_expected.f32")
        let entries = try #require(index.array)
        #expect(store.names == entries.compactMap { $0["name"]?.string })
        var compared = 0
        for entry in entries {
            let name = try #require(entry["name"]?.string)
            let dims = try #require(entry["shape"]?.array)
            let shape = dims.compactMap { $0.int }
            let offset = try #require(entry["offset"]?.int)
            let info = try #require(store.info(name), "\(name) missing")
            #expect(info.shape == shape, "\(name)")
            let t = try store.tensor(name)
            #expect(t.shape == shape, "\(name)")
            guard offset >= 0 else { continue }
            let want = expected[offset..<(offset + t.elementCount)]
            let got = t.floats()
            let bad = zip(got, want).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            #expect(bad == 0, "\(name) (\(info.storedType)): \(bad) of \(got.count) values differ")
            compared += 1
        }
        #expect(compared == entries.count - 6)
    }

    @Test("dtypes and stored types; unpermuted plain tensors stay mapped")
    func dtypes() throws {
        let store = try GGUFTensorStore(path: path)
        let q0 = try #require(store.info("model.layers.0.self_attn.q_proj.weight"))
        #expect(q0.dtype == .f16 && q0.storedType == "F16" && q0.storedBytes == 2048)
        #expect(store.info("model.layers.1.self_attn.k_proj.weight")?.dtype == .bf16)
        #expect(store.info("model.embed_tokens.weight")?.dtype == .f32)
        #expect(store.info("model.embed_tokens.weight")?.storedType == "Q8_0")
        let o = try store.tensor("model.layers.0.self_attn.o_proj.weight")
        guard case .mapped = o.storage else {
            Issue.record("unpermuted F16 tensor was copied instead of mapped")
            return
        }
        let q = try store.tensor("model.layers.0.self_attn.q_proj.weight")
        guard case .owned = q.storage else {
            Issue.record("permuted tensor must be an owned copy")
            return
        }
        #expect(throws: CheckpointError.self) { try store.tensor("model.layers.9.self_attn.q_proj.weight") }
    }

    @Test("HF config from metadata")
    func config() throws {
        let c = try GGUFFile(path: path).hfConfig()
        // The script's inputs: hidden 32, 4 heads / 2 KV heads, head dim 8, FFN 32, vocab 16, context 256.
        #expect(c["model_type"]?.string == "llama")
        #expect(c["architectures"] == .array([.string("LlamaForCausalLM")]))
        #expect(c["num_hidden_layers"]?.int == 2)
        #expect(c["hidden_size"]?.int == 32)
        #expect(c["intermediate_size"]?.int == 32)
        #expect(c["num_attention_heads"]?.int == 4)
        #expect(c["num_key_value_heads"]?.int == 2)
        #expect(c["head_dim"]?.int == 8)
        #expect(c["max_position_embeddings"]?.int == 256)
        #expect(c["rope_theta"] == .number("10000.0"))
        #expect(c["rms_norm_eps"] == .number("1e-05"))
        #expect(c["vocab_size"]?.int == 16)
        #expect(c["tie_word_embeddings"]?.bool == false)
        #expect(c["attention_bias"]?.bool == true)
        #expect(c["rope_scaling"]?.isNull == true)
        #expect(c["bos_token_id"]?.int == 0)
        #expect(c["eos_token_id"]?.int == 1)
        #expect(c["torch_dtype"]?.string == "float32")
        // Must survive a strict JSON round trip.
        #expect(try JSONValue.parse(c.serialized(indent: 2)) == c)
    }

    @Test("tokenizer data")
    func tokenizer() throws {
        let t = try #require(try GGUFFile(path: path).tokenizerData())
        #expect(t.model == "gpt2" && t.pre == "smollm")
        #expect(t.tokens.count == 16)
        #expect(t.tokens[7] == "\u{120}a")
        #expect(t.merges == ["a b", "ab c", "x y", "xy z"])
        #expect(t.tokenTypes == [3, 3] + [Int32](repeating: 1, count: 12) + [3, 2])
        #expect(t.bosTokenId == 0 && t.eosTokenId == 1 && t.paddingTokenId == 14 && t.unknownTokenId == 15)
        #expect(t.addBosToken == false && t.addEosToken == false)
        #expect(t.chatTemplate == "{{ messages }}")
    }
}
