#if canImport(Glibc)
import MLATestSupport
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MLACheckpoint
@testable import MLARuntime
import MLATensor
import Testing

/// A tiny DeepSeek-V3 attention layer held as HF tensors, plus the float64 forward pass written
/// directly from HF `DeepseekV3Attention` (de-interleave with `apply_rotary_pos_emb_interleave`, then
/// rotate-half), independent of `MLALayerWeights`.
struct TinyDeepSeek {
    let nh = 3, dn = 6, dr = 4, dv = 5, r = 8
    let d: Int
    let qRank: Int?
    let biases: Bool
    var tensors: [String: [Float]] = [:]
    let prefix: String

    init(qRank: Int?, biases: Bool, seed: UInt64, hiddenSize: Int = 20, layer: Int = 1) {
        self.qRank = qRank
        self.biases = biases
        d = hiddenSize
        prefix = "model.layers.\(layer).self_attn."
        var g = SplitMix64(seed: seed)
        func w(_ rows: Int, _ cols: Int) -> [Float] { g.floats(rows * cols, scale: 1 / Float(cols).squareRoot()) }
        let qRows = nh * (dn + dr)
        if let qRank {
            tensors["q_a_proj.weight"] = w(qRank, d)
            tensors["q_a_layernorm.weight"] = (0..<qRank).map { _ in 1 + g.float(0.3) }
            tensors["q_b_proj.weight"] = w(qRows, qRank)
            if biases { tensors["q_a_proj.bias"] = g.floats(qRank, scale: 0.5) }
        } else {
            tensors["q_proj.weight"] = w(qRows, d)
        }
        tensors["kv_a_proj_with_mqa.weight"] = w(r + dr, d)
        tensors["kv_a_layernorm.weight"] = (0..<r).map { _ in 1 + g.float(0.3) }
        tensors["kv_b_proj.weight"] = w(nh * (dn + dv), r)
        tensors["o_proj.weight"] = w(d, nh * dv)
        if biases {
            tensors["kv_a_proj_with_mqa.bias"] = g.floats(r + dr, scale: 0.5)
            tensors["o_proj.bias"] = g.floats(d, scale: 0.5)
        }
    }

    var config: JSONValue {
        get throws {
            try JSONValue.parse("""
            {"model_type": "deepseek_v3", "hidden_size": \(d), "num_attention_heads": \(nh), "num_key_value_heads": \(nh),
             "q_lora_rank": \(qRank.map(String.init) ?? "null"), "kv_lora_rank": \(r), "qk_nope_head_dim": \(dn),
             "qk_rope_head_dim": \(dr), "v_head_dim": \(dv), "rope_theta": 10000.0, "rope_scaling": null,
             "rms_norm_eps": 1e-05, "attention_bias": \(biases)}
            """)
        }
    }

    var store: InMemoryTensorStore {
        var store = InMemoryTensorStore(label: "tiny-deepseek.safetensors")
        let shapes: [String: [Int]] = [
            "q_a_proj.weight": [qRank ?? 0, d], "q_a_layernorm.weight": [qRank ?? 0], "q_a_proj.bias": [qRank ?? 0],
            "q_b_proj.weight": [nh * (dn + dr), qRank ?? 0], "q_proj.weight": [nh * (dn + dr), d],
            "kv_a_proj_with_mqa.weight": [r + dr, d], "kv_a_proj_with_mqa.bias": [r + dr],
            "kv_a_layernorm.weight": [r], "kv_b_proj.weight": [nh * (dn + dv), r],
            "o_proj.weight": [d, nh * dv], "o_proj.bias": [d],
        ]
        for (name, values) in tensors.sorted(by: { $0.key < $1.key }) {
            store.set(prefix + name, Tensor(floats: values, shape: shapes[name] ?? [values.count]))
        }
        return store
    }

    /// HF DeepseekV3Attention in float64, eps 1e-6 for both latent norms, scale (dn+dr)^-½ · `scaleFactor`.
    func reference(x: [Float], tokens: Int, positions: [Int], invFreq: [Double], factor: Double,
                   scaleFactor: Double = 1) -> [Double] {
        let eps = 1e-6, qw = dn + dr, kvw = dn + dv
        func linear(_ name: String, _ v: [Double], _ rows: Int) -> [Double] {
            let m = tensors[name + ".weight"] ?? [], bias = tensors[name + ".bias"], cols = v.count
            return (0..<rows).map { i -> Double in
                var sum: Double = bias.map { Double($0[i]) } ?? 0
                for j in 0..<cols { sum += Double(m[i * cols + j]) * v[j] }
                return sum
            }
        }
        func rmsNorm(_ name: String, _ v: [Double]) -> [Double] {
            let w = tensors[name + ".weight"] ?? []
            let sumSquares: Double = v.reduce(0) { $0 + $1 * $1 }
            let inverseRMS: Double = 1 / (sumSquares / Double(v.count) + eps).squareRoot()
            return v.indices.map { Double(w[$0]) * v[$0] * inverseRMS }
        }
        // apply_rotary_pos_emb_interleave: view (d/2, 2), transpose, then q·cos + rotate_half(q)·sin with
        // emb = cat(freqs, freqs).
        func rope(_ v: [Double], _ pos: Int) -> [Double] {
            let half = dr / 2
            let deinterleaved = (0..<half).map { v[2 * $0] } + (0..<half).map { v[2 * $0 + 1] }
            let rotated = (0..<half).map { -deinterleaved[half + $0] } + (0..<half).map { deinterleaved[$0] }
            return (0..<dr).map { i in
                let angle = Double(pos) * invFreq[i % half]
                return deinterleaved[i] * cos(angle) * factor + rotated[i] * sin(angle) * factor
            }
        }
        var queries: [[[Double]]] = [], keys: [[[Double]]] = [], values: [[[Double]]] = []
        for t in 0..<tokens {
            let xt = (0..<d).map { Double(x[t * d + $0]) }
            let q = qRank.map { linear("q_b_proj", rmsNorm("q_a_layernorm", linear("q_a_proj", xt, $0)), nh * qw) }
                ?? linear("q_proj", xt, nh * qw)
            let compressed = linear("kv_a_proj_with_mqa", xt, r + dr)
            let kv = linear("kv_b_proj", rmsNorm("kv_a_layernorm", Array(compressed[..<r])), nh * kvw)
            let kRot = rope(Array(compressed[r...]), positions[t])
            queries.append((0..<nh).map { h in Array(q[(h * qw)..<(h * qw + dn)]) + rope(Array(q[(h * qw + dn)..<((h + 1) * qw)]), positions[t]) })
            keys.append((0..<nh).map { h in Array(kv[(h * kvw)..<(h * kvw + dn)]) + kRot })
            values.append((0..<nh).map { h in Array(kv[(h * kvw + dn)..<((h + 1) * kvw)]) })
        }
        let scale = scaleFactor / Double(qw).squareRoot()
        var out: [Double] = []
        for m in 0..<tokens {
            var attn = [Double](repeating: 0, count: nh * dv)
            for h in 0..<nh {
                let s = (0...m).map { n in zip(queries[m][h], keys[n][h]).reduce(0) { $0 + $1.0 * $1.1 } * scale }
                let top = s.max() ?? 0, e = s.map { exp($0 - top) }, total = e.reduce(0, +)
                for i in 0..<dv { attn[h * dv + i] = (0...m).reduce(0) { $0 + e[$1] / total * values[$1][h][i] } }
            }
            out += linear("o_proj", attn, d)
        }
        return out
    }
}

@Suite("MLA DeepSeek-V3 mapping")
struct MLADeepSeekTests {
    @Test("deepSeekV3Layer + naive/absorbed equal the HF DeepseekV3Attention formula in float64",
          arguments: [(Int?.none, false), (Int?.some(7), true), (Int?.none, true), (Int?.some(5), false)])
    func matchesHFFormula(qRank: Int?, biases: Bool) throws {
        let tiny = TinyDeepSeek(qRank: qRank, biases: biases, seed: 11)
        let invFreq = MLALayerWeights.deepSeekInvFreq(theta: 10000, dRope: tiny.dr)
        let w = try MLALayerWeights.deepSeekV3Layer(config: try tiny.config, store: tiny.store, layer: 1,
                                                    ropeInvFreq: invFreq, attentionFactor: 1.1)
        #expect(w.nRopeHeads == 1 && w.kvRank == tiny.r && w.latentNorm?.eps == 1e-6)
        #expect(w.nativeBiasNames == (biases ? (qRank == nil ? ["kv_a_proj", "k_rope_proj", "o_proj"]
                                                            : ["q_a_proj", "kv_a_proj", "k_rope_proj", "o_proj"]) : []))
        var g = SplitMix64(seed: 12)
        let tokens = 6, positions = testPositions(tokens)
        let x = g.floats(tokens * tiny.d, scale: 1)
        let reference = tiny.reference(x: x, tokens: tokens, positions: positions, invFreq: invFreq, factor: 1.1)
        let naive = try MLAAttention.naive(w, x: x, tokens: tokens, positions: positions)
        let absorbed = try MLAAttention.absorbed(w, x: x, tokens: tokens, positions: positions)
        #expect(relativeError(naive, reference) < 1e-5)
        #expect(relativeError(absorbed, reference) < 1e-5)
    }

    @Test("DeepSeek RoPE table is theta^(-2i/d_rope)")
    func invFreq() {
        let table = MLALayerWeights.deepSeekInvFreq(theta: 10000, dRope: 64)
        #expect(table.count == 32)
        #expect(table[0] == 1)
        // 10000^(-2/64) = 10^(-1/8) and 10000^(-62/64) = 10^(-31/8).
        #expect(abs(table[1] - 0.7498942093324559) < 1e-15)
        #expect(abs(table[31] / 1.333521432163324e-4 - 1) < 1e-13)
    }

    @Test("softmax scale: (dn+dr)^-½, times mscale² under yarn with mscale_all_dim")
    func softmaxScale() throws {
        // DeepSeek-V3: dn 128, dr 64, yarn factor 40, mscale_all_dim 1.0 →
        // 192^-½ · (0.1·ln 40 + 1)² = 0.1352337788608801 (computed in Python).
        let v3 = try JSONValue.parse("""
        {"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rope_scaling": {"type": "yarn", "factor": 40,
         "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}
        """)
        #expect(abs(try MLALayerWeights.deepSeekSoftmaxScale(config: v3) - 0.1352337788608801) < 1e-8)
        // transformers 5 rope_parameters, factor 4, mscale_all_dim 0.707: 40^-½ · (0.0707·ln 4 + 1)².
        let v5 = try JSONValue.parse("""
        {"qk_nope_head_dim": 32, "qk_rope_head_dim": 8, "rope_scaling": null,
         "rope_parameters": {"rope_type": "yarn", "factor": 4, "mscale_all_dim": 0.707, "rope_theta": 10000}}
        """)
        #expect(abs(try MLALayerWeights.deepSeekSoftmaxScale(config: v5) - 0.19062655316300048) < 1e-8)
        let plain = try JSONValue.parse(#"{"qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "rope_scaling": null}"#)
        #expect(abs(try MLALayerWeights.deepSeekSoftmaxScale(config: plain) - Float(1 / 96.0.squareRoot())) < 1e-8)
    }

    @Test("a wrong tensor shape is reported with the file and tensor name")
    func shapeError() throws {
        let tiny = TinyDeepSeek(qRank: nil, biases: false, seed: 13)
        var store = tiny.store
        store.set(tiny.prefix + "kv_b_proj.weight", Tensor(floats: [Float](repeating: 0, count: 10), shape: [2, 5]))
        do {
            _ = try MLALayerWeights.deepSeekV3Layer(config: try tiny.config, store: store, layer: 1,
                                                    ropeInvFreq: [1, 0.01], attentionFactor: 1)
            Issue.record("expected a shape error")
        } catch {
            let message = String(describing: error)
            #expect(message.contains("tiny-deepseek.safetensors") && message.contains("kv_b_proj.weight"))
        }
    }
}
