import ArgumentParser
import MLACheckpoint
import MLATensor

extension MLAConvertCommand {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Describe a checkpoint: architecture, attention kind, RoPE, parameters and KV-cache size.",
            discussion: "Reads headers and metadata only; no weights are loaded.")

        @Argument(help: "The checkpoint (HF directory, .safetensors, .gguf or .h5).")
        var model: String

        @Flag(help: "Also list every tensor with its stored type, shape and size.")
        var tensors = false

        @Flag(help: "Print JSON instead of text.")
        var json = false

        func run() throws {
            let checkpoint = try Checkpoint.open(model)
            let report = CheckpointReport(checkpoint: checkpoint)
            print(json ? try report.json(includeTensors: tensors).serialized(indent: 2) : report.text(includeTensors: tensors))
        }
    }
}

/// What `inspect` reports, computed once and rendered as text or JSON.
struct CheckpointReport {
    let checkpoint: Checkpoint
    var config: ModelConfig { checkpoint.config }

    /// The dtype the weights are stored in, as the token embedding's (every format has one; quantized
    /// GGUF tensors dequantize to F32). An MLA model has no k_proj, which this was read from.
    var weightDType: DType { checkpoint.store.info(ModelTensorNames.embedding)?.dtype ?? .f32 }

    /// How the rope rows of queries and keys pair their dims: the sources' rotate-half (pair i is dims i
    /// and i + d/2), or interleaved (dims 2i and 2i + 1) in the MLA formats this toolkit writes and reads.
    var ropeLayout: String {
        switch config.family {
        case .deepseekV3: return config.raw["rope_interleave"]?.bool == false ? "rotate-half layout" : "interleaved layout"
        case .mlaNative: return "interleaved layout"
        default: return "rotate-half layout"
        }
    }

    var storedTypes: String {
        var counts: [String: Int] = [:]
        for name in checkpoint.store.names { counts[checkpoint.store.info(name)?.storedType ?? "?", default: 0] += 1 }
        return counts.sorted { $0.value > $1.value }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
    }

    var ropeDescription: String {
        var s = "base \(formatNumber(config.ropeTheta)), \(ropePairs), scaling \(config.ropeScaling.typeName)"
        switch config.ropeScaling {
        case .none: break
        case let .linear(f): s += " (factor \(f))"
        case let .llama3(f, lo, hi, o): s += " (factor \(f), low \(lo), high \(hi), original context \(o))"
        case let .yarn(f, o, bf, bs, _, _, _, _): s += " (factor \(f), original context \(o), beta \(bf)/\(bs))"
        }
        return s
    }

    /// RoPE pairs per key head: an MLA model rotates only its rope key (qk_rope_head_dim), and the
    /// native format sets that per layer.
    var ropePairs: String {
        switch config.family {
        case .deepseekV3: return "\((deepSeekLatent?.rope ?? 0) / 2) pairs (qk_rope_head_dim)"
        case .mlaNative: return "pairs set per layer"
        default: return "\(config.headDim / 2) pairs"
        }
    }

    /// A DeepSeek-V3 model's one latent rank and rope key width (the native format sets them per layer).
    var deepSeekLatent: (rank: Int, rope: Int)? {
        guard config.family == .deepseekV3, let rank = config.raw["kv_lora_rank"]?.int, let rope = config.raw["qk_rope_head_dim"]?.int else { return nil }
        return (rank, rope)
    }

    var biases: String {
        var parts: [String] = []
        if config.qkvBias { parts.append("q, k, v") }
        if config.outputBias { parts.append("o") }
        if config.mlpBias { parts.append("mlp") }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }

    func text(includeTensors: Bool) -> String {
        let c = config
        let perLayer = c.kvCacheValuesPerTokenPerLayer
        let total = c.kvCacheValuesPerToken
        var lines: [(String, String)] = [
            ("checkpoint", "\(checkpoint.path) (\(checkpoint.format.rawValue))"),
            ("stored types", storedTypes),
            ("family", c.family.rawValue),
            ("attention", c.family.isMLA
                ? "MLA: \(c.numHeads) heads, \(deepSeekLatent.map { "kv_lora_rank \($0.rank) + rope key \($0.rope) dims, " } ?? "")cache values per layer (latent + rope key) \(c.cacheValuesPerLayer.map(String.init).joined(separator: " "))"
                : "\(c.attentionKind): \(c.numHeads) heads, \(c.numKVHeads) KV heads (group \(c.groupSize)), head dim \(c.headDim)"),
            ("layers", "\(c.numLayers)"),
            ("hidden size", "\(c.hiddenSize) (MLP \(c.intermediateSize))"),
            ("vocab", "\(c.vocabSize), context \(c.maxPositions)"),
            ("RoPE", ropeDescription + ", " + ropeLayout),
            ("norm eps", formatNumber(c.rmsNormEps)),
            ("biases", biases),
            ("embeddings", c.tiedEmbeddings ? "tied (LM head = token embedding)" : "separate LM head"),
            ("parameters", groupDigits(checkpoint.parameterCount)),
            ("KV cache/token", c.family.isMLA
                ? "\(groupDigits(perLayer)) values per layer at most (latent + rope keys), \(groupDigits(total)) in all \(c.numLayers) layers"
                : "\(groupDigits(perLayer)) values per layer (2 × \(c.numKVHeads) × \(c.headDim)), \(groupDigits(total)) in all \(c.numLayers) layers"),
            ("  bytes", (weightDType == .bf16 ? "" : "\(groupDigits(total * weightDType.byteSize)) at \(weightDType.rawValue), ")
                + "\(groupDigits(total * 2)) at BF16 (\(groupDigits(perLayer * 2)) per layer\(c.family.isMLA ? " at most" : ""))"),
        ]
        for w in checkpoint.warnings { lines.append(("warning", w)) }
        let width = lines.map(\.0.count).max() ?? 0
        var out = lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
        if includeTensors {
            out += "\n\ntensors (\(checkpoint.store.names.count)):"
            for name in checkpoint.store.names {
                guard let info = checkpoint.store.info(name) else { continue }
                out += "\n  \(name)  \(info.storedType)  \(info.shape)  \(groupDigits(info.storedBytes)) B"
            }
        }
        return out
    }

    func json(includeTensors: Bool) -> JSONValue {
        let c = config
        var members: [(String, JSONValue)] = [
            ("path", .string(checkpoint.path)),
            ("format", .string(checkpoint.format.rawValue)),
            ("family", .string(c.family.rawValue)),
            ("attention_kind", .string(c.attentionKind)),
            ("num_layers", JSONValue(c.numLayers)),
            ("hidden_size", JSONValue(c.hiddenSize)),
            ("intermediate_size", JSONValue(c.intermediateSize)),
            ("num_heads", JSONValue(c.numHeads)),
            ("num_kv_heads", JSONValue(c.numKVHeads)),
            ("head_dim", JSONValue(c.headDim)),
            ("vocab_size", JSONValue(c.vocabSize)),
            ("max_position_embeddings", JSONValue(c.maxPositions)),
            ("rope_theta", JSONValue(c.ropeTheta)),
            ("rope_scaling", .string(c.ropeScaling.typeName)),
            ("rms_norm_eps", JSONValue(c.rmsNormEps)),
            ("qkv_bias", .bool(c.qkvBias)),
            ("o_bias", .bool(c.outputBias)),
            ("tied_embeddings", .bool(c.tiedEmbeddings)),
            ("parameters", JSONValue(checkpoint.parameterCount)),
            ("kv_cache_values_per_token_per_layer", JSONValue(c.kvCacheValuesPerTokenPerLayer)),
            ("cache_values_per_layer", .array(c.cacheValuesPerLayer.map { JSONValue($0) })),
            ("kv_cache_values_per_token", JSONValue(c.kvCacheValuesPerToken)),
            ("kv_cache_bytes_per_token_bf16", JSONValue(c.kvCacheValuesPerToken * 2)),
            ("kv_cache_bytes_per_token_stored", JSONValue(c.kvCacheValuesPerToken * weightDType.byteSize)),
            ("kv_cache_stored_dtype", .string(weightDType.rawValue)),
            ("warnings", .array(checkpoint.warnings.map { .string($0) })),
        ]
        if let latent = deepSeekLatent { members += [("kv_lora_rank", JSONValue(latent.rank)), ("qk_rope_head_dim", JSONValue(latent.rope))] }
        if includeTensors {
            members.append(("tensors", .array(checkpoint.store.names.compactMap { name in
                guard let info = checkpoint.store.info(name) else { return nil }
                return .object([("name", .string(name)), ("type", .string(info.storedType)),
                                ("shape", .array(info.shape.map { JSONValue($0) })), ("bytes", JSONValue(info.storedBytes))])
            })))
        }
        return .object(members)
    }
}

/// Integers without ".0", other values in Swift's shortest form (1e-05).
func formatNumber(_ x: Double) -> String {
    x.rounded() == x && abs(x) < 1e15 ? String(Int(x)) : "\(x)"
}
