import Foundation
import Testing
import MLACheckpoint
import MLATensor
import MLATestSupport
@testable import MLARuntime

/// Whole DeepSeek-V3 dense checkpoints (config.json + safetensors on disk, 2 layers) run through
/// `Checkpoint.open` + `DecoderModel.load`, against an independent float64 computation: the test's
/// own llama-style decoder with HF `DeepseekV3Attention` transcribed in float64 (`TinyDeepSeek`),
/// YaRN frequencies and mscale written from the formulas here.
@Suite struct DeepSeekModelTests {
    static let tokens = [5, 17, 3, 96, 42, 42, 0, 64, 11, 7]

    @Test(arguments: [(nil, false), (7, false), (nil, true), (7, true)] as [(Int?, Bool)])
    func forwardMatchesFloat64(qRank: Int?, yarn: Bool) throws {
        let (_, sourceStore) = SyntheticModel.make(heads: 4, kvHeads: 4)
        let layers = (0..<2).map { TinyDeepSeek(qRank: qRank, biases: false, seed: UInt64(10 + $0), hiddenSize: 64, layer: $0) }
        var store = InMemoryTensorStore(label: "deepseek")
        for name in sourceStore.names where !name.contains("self_attn") { store.set(name, try sourceStore.tensor(name)) }
        for layer in layers { for (name, t) in layer.store.names.map({ ($0, try! layer.store.tensor($0)) }) { store.set(name, t) } }
        let scaling = yarn ? #"{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}"# : "null"
        let config = """
        {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 97, "hidden_size": 64,
         "intermediate_size": 96, "moe_intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
         "num_key_value_heads": 3, "q_lora_rank": \(qRank.map(String.init) ?? "null"), "kv_lora_rank": 8,
         "qk_nope_head_dim": 6, "qk_rope_head_dim": 4, "v_head_dim": 5, "n_routed_experts": 1, "n_shared_experts": 1,
         "num_experts_per_tok": 1, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 2, "moe_layer_freq": 1,
         "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
         "rope_scaling": \(scaling), "attention_bias": false, "tie_word_embeddings": true}
        """
        let dir = NSTemporaryDirectory() + "deepseek-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        try SafetensorsWriter.writeDirectory(dir, entries: store.names.map { TensorWriteEntry(name: $0, dtype: .f32, shape: store.info($0)!.shape) },
                                             metadata: [:], maxShardBytes: nil) { try store.tensor($0) }
        let checkpoint = try Checkpoint.open(dir)
        #expect(checkpoint.config.family == .deepseekV3 && checkpoint.config.cacheValuesPerLayer == [12, 12])

        // Independent frequencies: DeepSeek's table over d_rope = 4 dims, YaRN ramp and mscale by formula.
        var invFreq = (0..<2).map { pow(10000.0, -2 * Double($0) / 4) }
        var scaleFactor = 1.0
        if yarn {
            let dim = { (beta: Double) in 4 * log(16 / (beta * 2 * Double.pi)) / (2 * log(10000.0)) }
            let low = max(floor(dim(32)), 0), high = min(ceil(dim(1)), 3)
            invFreq = invFreq.enumerated().map { i, f in
                let ramp = min(max((Double(i) - low) / (high == low ? 0.001 : high - low), 0), 1)
                return f / 4 * ramp + f * (1 - ramp)
            }
            let mscale = 0.1 * log(4.0) + 1
            scaleFactor = mscale * mscale
        }
        var reference = ReferenceForward(config: checkpoint.config, store: store)
        reference.attention = { layer, inputs in
            let x = inputs.flatMap { $0.map(Float.init) }
            let out = layers[layer].reference(x: x, tokens: inputs.count, positions: Array(0..<inputs.count),
                                              invFreq: invFreq, factor: 1, scaleFactor: scaleFactor)
            return (0..<inputs.count).map { Array(out[($0 * 64)..<(($0 + 1) * 64)]) }
        }
        let expected = try reference.logits(Self.tokens)
        for form in [MLAAttention.Form.absorbed, .naive] {
            let logits = try DecoderModel.load(checkpoint, mlaForm: form).logits(Self.tokens)
            #expect(relativeError(logits, expected) < 1e-5, "\(form) q_lora \(qRank.map(String.init) ?? "off") yarn \(yarn)")
        }
    }
}
