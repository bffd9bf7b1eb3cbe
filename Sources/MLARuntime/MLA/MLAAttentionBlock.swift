import MLACheckpoint

/// One layer's MLA attention as the decoder runs it, in the naive or the absorbed form.
public struct MLAAttentionBlock: AttentionBlock {
    public let weights: MLALayerWeights
    public let form: MLAAttention.Form

    public init(weights: MLALayerWeights, form: MLAAttention.Form) {
        self.weights = weights
        self.form = form
    }

    /// Each sequence of the batch runs on its own.
    public func forward(_ x: [Float], sequences: [Int]) throws -> [Float] {
        if sequences.count == 1 { return try forward(sequence: x, tokens: sequences[0]) }
        let d = weights.hiddenSize
        var out: [Float] = []
        out.reserveCapacity(x.count)
        var first = 0
        for T in sequences {
            out += try forward(sequence: Array(x[(first * d)..<((first + T) * d)]), tokens: T)
            first += T
        }
        return out
    }

    private func forward(sequence x: [Float], tokens: Int) throws -> [Float] {
        let positions = Array(0..<tokens)
        switch form {
        case .naive: return try MLAAttention.naive(weights, x: x, tokens: tokens, positions: positions)
        case .absorbed: return try MLAAttention.absorbed(weights, x: x, tokens: tokens, positions: positions)
        }
    }
}

extension DecoderModel {
    /// Loads any checkpoint this toolkit runs: source models with their own attention, DeepSeek-V3
    /// dense and native MLA models with MLA attention in the given form.
    public static func load(_ checkpoint: Checkpoint, mlaForm: MLAAttention.Form = .absorbed) throws -> DecoderModel {
        let config = checkpoint.config
        guard config.family.isMLA else { return try DecoderModel(config: config, store: checkpoint.store) }
        let layers = try mlaLayers(checkpoint)
        return try DecoderModel(config: config, store: checkpoint.store,
                                attention: layers.map { MLAAttentionBlock(weights: $0, form: mlaForm) })
    }

    /// The MLA attention weights of every layer of a DeepSeek-V3 or native MLA checkpoint.
    public static func mlaLayers(_ checkpoint: Checkpoint) throws -> [MLALayerWeights] {
        let reader = try MLALayerReader(checkpoint)
        return try (0..<checkpoint.config.numLayers).map { try reader.layer($0) }
    }
}

/// Reads the MLA attention weights of one layer at a time from a DeepSeek-V3 or native MLA checkpoint.
public struct MLALayerReader: Sendable {
    public let checkpoint: Checkpoint
    /// DeepSeek-V3's RoPE table (b^(-2i/d_rope) with the source scaling applied over d_rope dims);
    /// native checkpoints store theirs per layer.
    private let deepSeekRope: RopeFrequencies?

    /// Throws `CheckpointError.unsupportedModel` for a checkpoint without MLA attention.
    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let config = checkpoint.config
        switch config.family {
        case .deepseekV3:
            deepSeekRope = RopeFrequencies(headDim: config.raw["qk_rope_head_dim"]?.int ?? 0, theta: config.ropeTheta,
                                           scaling: config.ropeScaling, maxPositions: config.maxPositions)
        case .mlaNative:
            deepSeekRope = nil
        default:
            throw CheckpointError.unsupportedModel(file: checkpoint.path, reason: "\(config.family.rawValue) has no MLA attention")
        }
    }

    /// The epsilon of a DeepSeek-V3 checkpoint's latent norms (`kv_a_layernorm`, `q_a_layernorm`): HF
    /// builds them with 1e-6 whatever `rms_norm_eps` says (docs/method.md §8.c), while llama.cpp applies a
    /// GGUF's one epsilon to every norm (docs/gguf-export.md).
    public static func latentNormEps(_ checkpoint: Checkpoint) -> Double {
        checkpoint.format == .gguf ? checkpoint.config.rmsNormEps : hfLatentNormEps
    }

    /// The latent norms' epsilon in a Hugging Face DeepSeek-V3 checkpoint.
    public static let hfLatentNormEps = 1e-6

    /// Layer `layer`'s MLA attention weights (F32).
    public func layer(_ layer: Int) throws -> MLALayerWeights {
        let config = checkpoint.config
        if let rope = deepSeekRope {
            return try MLALayerWeights.deepSeekV3Layer(config: config.raw, store: checkpoint.store, layer: layer,
                                                       ropeInvFreq: rope.inverseFrequencies, attentionFactor: rope.attentionFactor,
                                                       normEps: Self.latentNormEps(checkpoint))
        }
        return try MLALayerWeights.nativeLayer(config: config.raw["mla_convert"] ?? .null, store: checkpoint.store, layer: layer)
    }
}
