import MLACheckpoint
@testable import MLARuntime
import MLATensor
import Testing

@Suite("MLA native format")
struct MLANativeFormatTests {
    /// Builds the `mla_convert` object from the writer-side entries, serializes and re-parses it, as a
    /// converter and a loader would.
    static func config(for weights: [MLALayerWeights]) throws -> JSONValue {
        let object = JSONValue.object([
            ("format_version", JSONValue(2)),
            ("attention", weights[0].nativeAttentionEntry),
            ("layers", .array(weights.map(\.nativeLayerEntry))),
        ])
        return try JSONValue.parse(object.serialized(indent: 2))
    }

    @Test("nativeTensors -> store -> nativeLayer gives identical weights", arguments: MLASpec.all)
    func roundTrip(spec: MLASpec) throws {
        var layers = [spec.weights(seed: 21), spec.weights(seed: 22)]
        var store = InMemoryTensorStore(label: "model.safetensors")
        for i in layers.indices {
            layers[i].label = "model.layers.\(i).self_attn."
            for (name, tensor) in layers[i].nativeTensors(prefix: layers[i].label) { store.set(name, tensor) }
        }
        let config = try Self.config(for: layers)
        for i in layers.indices {
            let loaded = try MLALayerWeights.nativeLayer(config: config, store: store, layer: i)
            #expect(loaded == layers[i])
        }
        let prefix = "model.layers.0.self_attn."
        // The RoPE table travels in config.json as decimal text and must come back bit for bit.
        let loaded = try MLALayerWeights.nativeLayer(config: config, store: store, layer: 0)
        #expect(loaded.ropeInvFreq == spec.freqs)
        #expect(!store.names.contains { $0.contains("rope_inv_freq") })
        #expect(layers[0].nativeTensorShapes(prefix: prefix, kvRank: spec.r).map(\.1)
                == layers[0].nativeTensors(prefix: prefix).map(\.1.shape))
        #expect(layers[0].nativeTensorShapes(prefix: prefix, kvRank: spec.r + 3).first { $0.0.hasSuffix("kv_b_proj.weight") }?.1.last == spec.r + 3)
        #expect(store.contains(prefix + "kv_a_layernorm.weight") == spec.latentNorm)
        #expect(store.contains(prefix + "q_proj.weight") == (spec.qRank == nil))
        #expect(store.info(prefix + "k_rope_proj.weight")?.shape == [spec.nRope * spec.dRope, spec.d])
        #expect(store.info(prefix + "kv_a_proj.weight")?.shape == [spec.r, spec.d])
    }

    @Test("config entries carry the cache layout; a malformed rope_inv_freq is refused by name")
    func entriesAndRefusal() throws {
        let spec = MLASpec.all[1]
        var w = spec.weights(seed: 23)
        w.label = "model.layers.0.self_attn."
        let entry = w.nativeLayerEntry
        #expect(entry["kv_rank"]?.int == spec.r)
        #expect(entry["n_rope_heads"]?.int == 2)
        #expect(entry["rope_head_of_query_head"] == .array([0, 0, 1, 1].map { JSONValue($0) }))
        #expect(entry["latent_norm"]?.isNull == true)
        #expect(w.nativeAttentionEntry["q_lora_rank"]?.int == spec.qRank)

        var store = InMemoryTensorStore(label: "model.safetensors")
        for (name, tensor) in w.nativeTensors(prefix: w.label) { store.set(name, tensor) }
        let good = try Self.config(for: [w])
        guard case var .array(layers) = good["layers"] else { Issue.record("no layers"); return }
        layers[0] = layers[0].setting("rope_inv_freq", .array([.array([JSONValue(1.0)])]))
        let bad = good.setting("layers", .array(layers))
        do {
            _ = try MLALayerWeights.nativeLayer(config: bad, store: store, layer: 0)
            Issue.record("expected a short rope_inv_freq to be refused")
        } catch {
            let message = String(describing: error)
            #expect(message.contains("config.json") && message.contains("mla_convert.layers[0].rope_inv_freq"))
        }
    }
}
