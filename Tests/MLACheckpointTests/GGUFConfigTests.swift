import Foundation
import MLACheckpoint
import MLATensor
import Testing

/// hfConfig() mapping and refusals, and the llama-only Q/K un-permutation, on hand-built files.
@Suite("GGUF config mapping and permutation")
struct GGUFConfigTests {
    typealias B = GGUFBuilder

    /// llama-style metadata: 1 layer, hidden 64, FFN 128, 4 heads / 2 KV heads, context 512.
    static func metadata(arch: String = "llama", extra: [[UInt8]] = []) -> GGUFBuilder {
        var g = GGUFBuilder()
        g.kvs = [
            B.kvString("general.architecture", arch), B.kvU32("\(arch).block_count", 1),
            B.kvU32("\(arch).embedding_length", 64), B.kvU32("\(arch).feed_forward_length", 128),
            B.kvU32("\(arch).context_length", 512), B.kvU32("\(arch).attention.head_count", 4),
            B.kvU32("\(arch).attention.head_count_kv", 2), B.kvU32("\(arch).vocab_size", 100),
            B.kvF32("\(arch).attention.layer_norm_rms_epsilon", 1e-6), B.kvF32("\(arch).rope.freq_base", 500_000),
        ] + extra
        return g
    }

    func file(_ g: GGUFBuilder) throws -> (GGUFFile, String) {
        let dir = try GGUFTestSupport.tempDir()
        let path = dir + "/m.gguf"
        try GGUFTestSupport.write(g.build(), to: path)
        return (try GGUFFile(path: path), dir)
    }

    func config(_ g: GGUFBuilder) throws -> JSONValue {
        let (f, dir) = try file(g)
        defer { cleanup(dir) }
        return try f.hfConfig()
    }

    /// Expects `unsupportedModel` whose message names the file and contains `mentions`.
    func expectRefused(_ g: GGUFBuilder, mentions: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (f, dir) = try file(g)
        defer { cleanup(dir) }
        let error = #expect(throws: CheckpointError.self, sourceLocation: sourceLocation) { try f.hfConfig() }
        guard case .unsupportedModel = error else {
            Issue.record("expected unsupportedModel, got \(String(describing: error))", sourceLocation: sourceLocation)
            return
        }
        let text = error?.description ?? ""
        #expect(text.hasPrefix(f.path) && text.contains(mentions), "\(text)", sourceLocation: sourceLocation)
    }

    @Test("llama defaults and derived values")
    func llama() throws {
        let c = try config(Self.metadata())
        #expect(c["head_dim"]?.int == 16)
        #expect(c["num_key_value_heads"]?.int == 2)
        #expect(c["rms_norm_eps"] == .number("1e-06"))
        #expect(c["rope_theta"]?.double == 500_000)
        #expect(c["vocab_size"]?.int == 100)
        #expect(c["tie_word_embeddings"]?.bool == true)
        #expect(c["attention_bias"]?.bool == false)
        #expect(c["rope_scaling"]?.isNull == true)
        #expect(c["bos_token_id"] == nil)
    }

    @Test("qwen2")
    func qwen2() throws {
        let c = try config(Self.metadata(arch: "qwen2"))
        #expect(c["architectures"] == .array([.string("Qwen2ForCausalLM")]))
        #expect(c["model_type"]?.string == "qwen2")
        #expect(c["attention_bias"]?.bool == true)
    }

    @Test("linear and yarn rope scaling")
    func scaling() throws {
        let linear = try config(Self.metadata(extra: [B.kvString("llama.rope.scaling.type", "linear"),
                                                      B.kvF32("llama.rope.scaling.factor", 2)]))
        #expect(linear["rope_scaling"] == .object([("rope_type", .string("linear")), ("factor", .number("2.0"))]))
        let yarn = try config(Self.metadata(extra: [B.kvString("llama.rope.scaling.type", "yarn"),
                                                    B.kvF32("llama.rope.scaling.factor", 4),
                                                    B.kvU32("llama.rope.scaling.original_context_length", 128)]))
        #expect(yarn["rope_scaling"]?["rope_type"]?.string == "yarn")
        #expect(yarn["rope_scaling"]?["factor"]?.double == 4)
        #expect(yarn["rope_scaling"]?["original_max_position_embeddings"]?.int == 128)
        try expectRefused(Self.metadata(extra: [B.kvString("llama.rope.scaling.type", "longrope"),
                                                B.kvF32("llama.rope.scaling.factor", 4)]), mentions: "'longrope'")
    }

    @Test("unknown architecture is named")
    func unknownArch() throws {
        try expectRefused(Self.metadata(arch: "gemma2"), mentions: "'gemma2'")
    }

    @Test("per-layer KV head counts are refused")
    func perLayerKV() throws {
        var g = Self.metadata()
        g.kvs[6] = B.kvU32Array("llama.attention.head_count_kv", [2, 1])
        try expectRefused(g, mentions: "per-layer")
    }

    @Test("partial rotary is refused")
    func partialRotary() throws {
        try expectRefused(Self.metadata(extra: [B.kvU32("llama.rope.dimension_count", 8)]), mentions: "partial rotary")
    }

    @Test("Llama-3 rope_freqs.weight is refused")
    func ropeFreqs() throws {
        var g = Self.metadata()
        g.tensors = [B.TensorSpec(name: "rope_freqs.weight", ne: [8], type: 0, offset: 0)]
        g.dataBytes = 32
        try expectRefused(g, mentions: "rope_freqs.weight")
    }

    @Test("missing required key")
    func missingKey() throws {
        var g = Self.metadata()
        g.kvs.remove(at: 1)
        let (f, dir) = try file(g)
        defer { cleanup(dir) }
        let error = #expect(throws: CheckpointError.self) { try f.hfConfig() }
        guard case let .missingConfigKey(file, key) = error else {
            Issue.record("expected missingConfigKey, got \(String(describing: error))")
            return
        }
        #expect(file == f.path && key == "llama.block_count")
    }

    /// q (2 heads of d = 4), k (1 KV head) and the q bias hold their GGUF row index as every value, so
    /// the returned order is the permutation itself. Hand-derived from HF row h·d + t·d/2 + i = GGUF row
    /// h·d + 2i + t: [0, 2, 1, 3, 4, 6, 5, 7] for q (2 heads) and [0, 2, 1, 3] for k (1 KV head).
    @Test("llama q/k rows are un-permuted; qwen2 rows are not", arguments: ["llama", "qwen2"])
    func permutation(arch: String) throws {
        var g = GGUFBuilder()
        g.kvs = [B.kvString("general.architecture", arch), B.kvU32("\(arch).attention.head_count", 2),
                 B.kvU32("\(arch).attention.head_count_kv", 1)]
        // attn_q.weight ne [2, 8] F32 (64 B), attn_k.weight ne [2, 4] F16 (16 B), attn_q.bias ne [8] F32 (32 B).
        g.tensors = [B.TensorSpec(name: "blk.0.attn_q.weight", ne: [2, 8], type: 0, offset: 0),
                     B.TensorSpec(name: "blk.0.attn_k.weight", ne: [2, 4], type: 1, offset: 64),
                     B.TensorSpec(name: "blk.0.attn_q.bias", ne: [8], type: 0, offset: 96)]
        var data = [UInt8]()
        for r in 0..<8 { for _ in 0..<2 { data += B.u32(Float(r).bitPattern) } }
        for r in 0..<4 { for _ in 0..<2 { data += withUnsafeBytes(of: Float16(Float(r)).bitPattern.littleEndian) { Array($0) } } }
        data += [UInt8](repeating: 0, count: 96 - data.count)
        for r in 0..<8 { data += B.u32(Float(r).bitPattern) }
        g.data = data
        let (f, dir) = try file(g)
        defer { cleanup(dir) }
        let store = try GGUFTensorStore(file: f)
        let q = try store.tensor("model.layers.0.self_attn.q_proj.weight")
        let k = try store.tensor("model.layers.0.self_attn.k_proj.weight")
        let b = try store.tensor("model.layers.0.self_attn.q_proj.bias")
        #expect(q.shape == [8, 2] && k.shape == [4, 2] && b.shape == [8])
        #expect(k.dtype == .f16)
        let qRows = stride(from: 0, to: 16, by: 2).map { Int(q.floats()[$0]) }
        let kRows = stride(from: 0, to: 8, by: 2).map { Int(k.floats()[$0]) }
        let bRows = b.floats().map { Int($0) }
        if arch == "llama" {
            #expect(qRows == [0, 2, 1, 3, 4, 6, 5, 7])
            #expect(kRows == [0, 2, 1, 3])
            #expect(bRows == [0, 2, 1, 3, 4, 6, 5, 7])
        } else {
            #expect(qRows == Array(0..<8))
            #expect(kRows == Array(0..<4))
            #expect(bRows == Array(0..<8))
        }
    }
}
