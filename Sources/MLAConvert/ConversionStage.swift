/// How far a stage changes the function the model computes (docs/method.md §10).
public enum StageExactness: String, Sendable, CaseIterable {
    /// The same function in exact arithmetic: only float rounding differs.
    case exact
    /// Exact when the rank is the largest the layer has; below it, lossy by the dropped eigenvalues.
    case exactAtFullRank = "exact at full rank"
    /// Changes every output by at most the relative bound the stage's description states.
    case exactToBound = "exact to a bound"
    /// Changes the function; the loss is reported (energies per layer) and measured by `mla-verify`.
    case lossy
}

/// The steps a conversion runs, in pipeline order. `LayerConversion.stages` lists the ones a layer
/// goes through, `OutputRefit.apply` and `AttentionRefinement.apply` add their own, and `MLAOutputFormat.stages` those of the writer's
/// encoder; the summary prints them with their exactness. `ConversionTests.stageIsAsExactAsDeclared`
/// (Tests/MLAConvertTests/StageExactnessTests.swift) checks every stage that is not lossy on the real
/// sample model, one case per stage.
public enum ConversionStage: String, Sendable, CaseIterable {
    /// RoRoPE (`RopeSplit.rotated`): an orthogonal change of basis of the stacked keys per frequency pair.
    case ropeRotation = "rope rotation"
    /// MHA2MLA's partial RoPE (`PartialRope.keptPairs`, `RopeSplit.partial`): a permutation of the stacked keys.
    case partialRope = "partial rope"
    /// FreqFold: adjacent pairs share one PCA and one representative frequency.
    case freqFold = "freqfold"
    /// The key components outside the rope key become NoPE and lose their position dependence.
    case ropeTruncation = "rope truncation"
    /// The balanced, weighted factorization of [NoPE keys; values] (`LatentFactorization`).
    case latentFactorization = "latent factorization"
    /// Key and value biases: the NoPE key bias dropped, the value bias moved into o_proj's bias.
    case biasMove = "bias move"
    /// The change of softmax scale to (d_nope + d_rope)^-½ folded into the query rows.
    case softmaxScaleFold = "softmax scale fold"
    /// The low-rank query path q_a_proj → q_a_layernorm → q_b_proj (`LowRankQuery`).
    case lowRankQuery = "low-rank query"
    /// The closed-form ridge refit of o_proj on the calibration tokens (`OutputRefit`).
    case outputRefit = "o_proj refit"
    /// Adam steps on the attention-output error through the softmax (`AttentionRefinement`).
    case refinement = "refinement"
    /// A latent RMSNorm kept in its linear regime (`LinearRegimeNorm`).
    case linearRegimeNorm = "linear-regime norm"
    /// The residual stream scaled by α with every norm's eps scaled by α², so that every norm's output is unchanged.
    case residualRescale = "residual rescale"

    public var exactness: StageExactness {
        switch self {
        case .ropeRotation, .partialRope, .biasMove, .softmaxScaleFold, .residualRescale: return .exact
        case .latentFactorization, .lowRankQuery, .outputRefit: return .exactAtFullRank
        case .linearRegimeNorm: return .exactToBound
        case .freqFold, .ropeTruncation, .refinement: return .lossy
        }
    }

    /// What the stage does, one line, with the section of docs/method.md that explains it.
    public var explanation: String {
        switch self {
        case .ropeRotation: return "RoRoPE: each frequency pair's key energy rotated into the rope key's components (§4.B)"
        case .partialRope: return "each KV head's kept frequency pairs moved to its rope key, a permutation (§5)"
        case .freqFold: return "adjacent pairs folded into one PCA group at one representative frequency (§4.C)"
        case .ropeTruncation: return "key components outside the rope key become NoPE (§4.C, §5)"
        case .latentFactorization: return "keys and values balanced, then one weighted low-rank factorization of [NoPE keys; values] (§4.D-E, §6)"
        case .biasMove: return "NoPE key bias dropped, value bias moved into o_proj's bias (§8.d)"
        case .softmaxScaleFold: return "query rows times d_h^-½ / (d_nope + d_rope)^-½ (§7)"
        case .lowRankQuery: return "activation-aware factorization of the query rows (§7)"
        case .outputRefit: return "o_proj refit by cross-validated ridge regression on the calibration tokens (§6.a)"
        case .refinement: return "latent, up-projections and rope key moved by Adam steps on the attention-output error, the held-out best kept (§6.c)"
        case .linearRegimeNorm: return "rows scaled so the latent norm deviates from the identity by at most 2^-24 (DeepSeek-V3) or 2^-10 (GGUF) (§8.b)"
        case .residualRescale: return "embeddings, o_proj and down_proj times α, every norm's eps times α² (§8.c)"
        }
    }
}

extension MLAOutputFormat {
    /// The stages its encoder runs on every converted layer: DeepSeek-V3 (`DeepSeekV3Encoder`) and GGUF
    /// (`GGUFEncoder`) keep kv_a_layernorm linear and rescale the residual stream; the native format
    /// stores the layers as converted.
    public var stages: [ConversionStage] {
        switch self {
        case .native: return []
        case .deepseek, .gguf: return [.linearRegimeNorm, .residualRescale]
        }
    }
}
