import Foundation
import MLACheckpoint
import MLATensor
import Testing
import MLATestSupport

/// The real SmolLM2-135M-Instruct Q4_1 GGUF (docs/samples.md "Sample model"). Skipped, visibly, when the cache
/// lacks it; `scripts/test` fails under `CI=true` when any test was skipped.
@Suite("GGUF real sample model", .needsSampleData)
struct GGUFRealModelTests {
    let path = GGUFTestSupport.samplePath

    func open() throws -> GGUFFile {
        try GGUFFile(path: path)
    }

    @Test("header numbers from docs/samples.md")
    func header() throws {
        let f = try open()
        #expect(f.version == 3)
        #expect(f.metadata.count == 33)
        #expect(f.tensors.count == 272)
        #expect(f.alignment == 32)
        #expect(f.dataOffset == 1_785_664)
        #expect(f.architecture == "llama")
        #expect(f.value("general.license")?.string == "apache-2.0")
        let byType = Dictionary(grouping: f.tensors, by: \.type).mapValues(\.count)
        #expect(byType == [.q4_1: 210, .f32: 61, .q8_0: 1])
        #expect(f.tensors.reduce(0) { $0 + $1.ne.reduce(1, *) } == 134_515_008)
        #expect(f.tensorInfo("blk.0.attn_k.weight")?.ne == [576, 192])
        #expect(f.tensorInfo("output.weight") == nil)
    }

    @Test("HF config from metadata")
    func config() throws {
        let c = try open().hfConfig()
        #expect(c["architectures"] == .array([.string("LlamaForCausalLM")]))
        #expect(c["num_hidden_layers"]?.int == 30)
        #expect(c["hidden_size"]?.int == 576)
        #expect(c["intermediate_size"]?.int == 1536)
        #expect(c["num_attention_heads"]?.int == 9)
        #expect(c["num_key_value_heads"]?.int == 3)
        #expect(c["head_dim"]?.int == 64)
        #expect(c["rope_theta"]?.double == 100_000)
        #expect(c["rms_norm_eps"] == .number("1e-05"))
        #expect(c["vocab_size"]?.int == 49152)
        #expect(c["max_position_embeddings"]?.int == 8192)
        #expect(c["tie_word_embeddings"]?.bool == true)
        #expect(c["attention_bias"]?.bool == false)
        #expect(c["rope_scaling"]?.isNull == true)
        #expect(c["bos_token_id"]?.int == 1 && c["eos_token_id"]?.int == 2)
    }

    @Test("tokenizer data")
    func tokenizer() throws {
        let t = try #require(try open().tokenizerData())
        #expect(t.model == "gpt2" && t.pre == "smollm")
        #expect(t.tokens.count == 49152 && t.merges.count == 48900 && t.tokenTypes.count == 49152)
        #expect(t.tokens[0] == "<|endoftext|>" && t.tokens[1] == "<|im_start|>" && t.tokens[2] == "<|im_end|>")
        #expect(t.bosTokenId == 1 && t.eosTokenId == 2 && t.paddingTokenId == 2)
        #expect(t.addBosToken == false)
    }

    /// Golden numbers from gguf-py + numpy (`make_fixtures.py --sample-golden`): the row-order-sensitive
    /// checksum Σ_r (r+1)·Σ_c W[r,c] in float64 of the HF-layout tensor, and W[0,0].
    @Test("tensor values and Q/K un-permutation against gguf-py", arguments: [
        ("model.layers.0.self_attn.q_proj.weight", [576, 576], 25935.41357421875, -0.0963134765625),
        ("model.layers.0.self_attn.k_proj.weight", [192, 576], 4799.570251464844, -0.1552734375),
        ("model.layers.29.self_attn.k_proj.weight", [192, 576], 11887.494506835938, 0.062408447265625),
        ("model.layers.0.self_attn.v_proj.weight", [192, 576], -857.3757057189941, 0.10547637939453125),
        ("model.embed_tokens.weight", [49152, 576], -312521510.5772147, -0.10654449462890625),
        ("model.layers.0.input_layernorm.weight", [576], 191.47268676757812, 0.01397705078125),
    ])
    func values(name: String, shape: [Int], checksum: Double, first: Double) throws {
        let store = try GGUFTensorStore(file: try open())
        let t = try store.tensor(name)
        #expect(t.shape == shape)
        let w = t.floats()
        let cols = shape.count == 2 ? shape[1] : 1
        var sum = 0.0
        for r in 0..<shape[0] {
            var row = 0.0
            for c in 0..<cols { row += Double(w[r * cols + c]) }
            sum += Double(r + 1) * row
        }
        // Float64 sums of the same F32 values in a different order: relative error ≲ n·2⁻⁵³.
        #expect(abs(sum - checksum) <= 1e-9 * max(1, abs(checksum)), "\(name): \(sum) vs \(checksum)")
        #expect(Double(w[0]) == first)
    }

    static func rssKiB() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    /// Numbers are clean only when run alone (`--filter GGUFRealModelTests/performance`): other suites run
    /// in parallel in the same process and move VmRSS.
    @Test("open + one tensor is cheap; Q4_1 dequantization throughput")
    func performance() throws {
        _ = try open()  // warm the page cache and the code paths
        let rss0 = Self.rssKiB()
        let clock = ContinuousClock()
        var store: GGUFTensorStore?
        let openTime = try clock.measure { store = try GGUFTensorStore(path: path) }
        let s = try #require(store)
        var k: Tensor?
        let readTime = try clock.measure { k = try s.tensor("model.layers.0.self_attn.k_proj.weight") }
        let rss1 = Self.rssKiB()
        #expect(k?.elementCount == 192 * 576)
        print("GGUF sample: open \(openTime), read k_proj \(readTime), VmRSS delta \(rss1 - rss0) KiB")
        #expect(openTime < .seconds(2))
        #expect(readTime < .milliseconds(200))

        let q41 = s.names.filter { s.info($0)?.storedType == "Q4_1" }
        #expect(q41.count == 210)
        var elements = 0
        let decodeTime = try clock.measure {
            for name in q41 { elements += try s.tensor(name).elementCount }
        }
        let seconds = Double(decodeTime.components.seconds) + Double(decodeTime.components.attoseconds) * 1e-18
        print("GGUF sample: dequantized \(elements) Q4_1 elements in \(decodeTime): \(Double(elements) / seconds / 1e6) M elements/s")
        #expect(elements == 134_515_008 - 49152 * 576 - 61 * 576)
    }
}
