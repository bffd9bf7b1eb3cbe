import MLACheckpoint
import MLARuntime
import MLATensor

/// Output formats of a conversion.
public enum MLAOutputFormat: String, Sendable, CaseIterable {
    /// A stock DeepSeek-V3 Hugging Face checkpoint (docs/deepseek-export.md).
    case deepseek
    /// The toolkit's native MLA format (docs/formats-native-mla.md).
    case native
    /// One llama.cpp `deepseek2` GGUF file (docs/gguf-export.md).
    case gguf

    /// DeepSeek-V3 and llama.cpp's deepseek2 fix the softmax scale at 1/√(d_nope + d_rope).
    public var foldsSoftmaxScale: Bool { self != .native }
}

/// Which source frequencies a shared rope key carries (both are DeepSeek-expressible: pair 0 first,
/// an arithmetic progression of pairs).
public enum RopeFrequencyChoice: String, Sendable, CaseIterable {
    /// The fastest rope-dims/2 pairs.
    case high
    /// Every (head_dim / rope dims)-th pair from pair 0 (TransMLA).
    case uniform
}

/// FreqFold (docs/method.md §4.C): how many adjacent frequency pairs share one PCA group of the rope key.
public enum FreqFold: Equatable, Sendable {
    /// Measured with the rope dims and frequencies, or the fixed rule without calibration.
    case auto
    /// This many pairs per group, at least 1 (1: the exact per-frequency rotation).
    case pairs(Int)

    /// The pairs per group when given, nil for auto.
    public var pairs: Int? {
        if case let .pairs(pairs) = self { return pairs }
        return nil
    }
}

/// What the low-rank factorization of mha2mla is fitted to.
public enum FactorInput: String, Sendable, CaseIterable {
    /// Under the calibration activations (the second moment C).
    case activations
    /// The weights alone (MHA2MLA's plain SVD); calibration then only ranks 2-norm pairs.
    case weights
}

/// A request refused before any work. The message names the command-line flag of the setting, so the
/// tools show it as a usage error unchanged.
public struct ConversionPlanError: Error, CustomStringConvertible, Sendable {
    /// The refusal, one line.
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// How the calibration text runs through the layers as they are converted (`CalibratedConversion`).
struct LayerPass {
    let order: CalibrationOrder
    var refitOutput: Bool
    var refinement: AttentionRefinement?
    /// The default stages the calibration windows were too few for, each with why (`fitted`).
    var omitted: [String] = []

    /// This pass on `windows` calibration windows of up to `windowTokens` tokens, of `askedTokens` asked
    /// for (`--calib-tokens`): the o_proj refit needs `OutputRefit.minimumWindows` of them and the refinement
    /// `AttentionRefinement.minimumWindows`. A stage the windows are too few for is refused when its flag
    /// asked for it (`refitAsked`, `refineAsked`), and otherwise left out and named in `omitted`, so that the
    /// summary does not claim it.
    func fitted(windows: Int, windowTokens: Int, askedTokens: Int, refitAsked: Bool, refineAsked: Bool) throws -> LayerPass {
        var pass = self
        /// How many windows there are and the fix, when `needed` are needed: more tokens asked for, or,
        /// when enough were asked for, a longer text.
        func shortfall(_ needed: Int) -> String {
            let tokens = needed * windowTokens
            return askedTokens >= tokens
                ? "the calibration text holds only \(windows): give a longer --calib text (at least \(tokens) tokens)"
                : "--calib-tokens \(askedTokens) gives \(windows): give --calib-tokens \(tokens) or more"
        }
        if pass.refitOutput, windows < OutputRefit.minimumWindows {
            let needs = "at least \(OutputRefit.minimumWindows) calibration windows of up to \(windowTokens) tokens"
            if refitAsked {
                throw ConversionPlanError("--output-refit: the refit scores its ridge on a window it was not fitted on, so it needs " + needs
                                          + "; " + shortfall(OutputRefit.minimumWindows) + ", or --no-output-refit")
            }
            pass.refitOutput = false
            pass.omitted.append("no o_proj refit (it needs " + needs + "; " + shortfall(OutputRefit.minimumWindows) + ")")
        }
        if let refinement = pass.refinement, windows < AttentionRefinement.minimumWindows {
            let needs = "at least \(AttentionRefinement.minimumWindows) calibration windows of up to \(windowTokens) tokens"
            if refineAsked {
                throw ConversionPlanError("--refine-steps \(refinement.steps): the refinement steps on three of every four windows and checks the fourth, "
                                          + "so it needs " + needs + "; " + shortfall(AttentionRefinement.minimumWindows) + ", or --refine-steps 0")
            }
            pass.refinement = nil
            pass.omitted.append("no refinement (it needs " + needs + "; " + shortfall(AttentionRefinement.minimumWindows) + ")")
        }
        return pass
    }

    /// Whether the pass does anything the statistics alone do not (else they calibrate, `layerPass`).
    var runs: Bool { order == .sequential || refitOutput || refinement != nil }
}

/// The layer pass as it runs on one model's calibration windows (`ConversionPlan.layerPass(for:)`).
struct FittedLayerPass {
    /// The plan's pass with its stages fitted to `textWindows` (`LayerPass.fitted`); nil when the plan has none.
    let fitted: LayerPass?
    /// The calibration text's windows.
    let textWindows: [[Int]]

    /// The pass when it does more than the statistics alone (`LayerPass.runs`), else nil.
    var pass: LayerPass? { fitted?.runs == true ? fitted : nil }
    /// The calibration windows the pass runs on (nil when `pass` is).
    var windows: [[Int]]? { pass == nil ? nil : textWindows }
    /// The default stages the windows were too few for, each with why.
    var omitted: [String] { fitted?.omitted ?? [] }
}

/// The rope settings of gqa2mla (one shared rope key, TransMLA); nil is auto.
public struct SharedRopeRequest: Sendable {
    /// Dims of the shared rope key (even, at most the head dim).
    public var dims: Int?
    /// Which source frequencies the rope key carries.
    public var frequencies: RopeFrequencyChoice?
    /// Pairs per PCA group of the rope key.
    public var freqfold: FreqFold
    /// q_lora_rank of a low-rank query; nil keeps the full q_proj.
    public var queryRank: Int?

    public init(dims: Int? = nil, frequencies: RopeFrequencyChoice? = nil, freqfold: FreqFold = .auto, queryRank: Int? = nil) {
        self.dims = dims
        self.frequencies = frequencies
        self.freqfold = freqfold
        self.queryRank = queryRank
    }

    /// Whether every rope setting is given (nothing about the rope is chosen automatically).
    var isFixed: Bool { dims != nil && frequencies != nil && freqfold != .auto }
}

/// The rope and factorization settings of mha2mla (partial RoPE per KV head, MHA2MLA); nil is auto.
public struct PartialRopeRequest: Sendable {
    /// Which pairs keep RoPE (high, low, uniform, 2-norm, rorope).
    public var strategy: PartialRopeStrategy?
    /// Frequency pairs (2 dims each) kept with RoPE per KV head.
    public var pairs: Int?
    /// First pair of the uniform strategy.
    public var uniformStart: Int
    /// How 2-norm combines query and key norms.
    public var combination: NormCombination
    /// One latent for NoPE keys and values (joint) or one each with half the rank (split).
    public var factorization: FactorizationMode
    /// Where the singular values go (kv_a, kv_b or split).
    public var sigma: SigmaPlacement
    /// What the factorization is fitted to.
    public var factorOn: FactorInput

    public init(strategy: PartialRopeStrategy? = nil, pairs: Int? = nil, uniformStart: Int = 0, combination: NormCombination = .product,
                factorization: FactorizationMode = .joint, sigma: SigmaPlacement = .down, factorOn: FactorInput = .activations) {
        self.strategy = strategy
        self.pairs = pairs
        self.uniformStart = uniformStart
        self.combination = combination
        self.factorization = factorization
        self.sigma = sigma
        self.factorOn = factorOn
    }

    /// Whether the strategy and the pairs are both given.
    var isFixed: Bool { strategy != nil && pairs != nil }
}

/// The conversion method and its own settings.
public enum ConversionMethod: Sendable {
    case gqa2mla(SharedRopeRequest)
    case mha2mla(PartialRopeRequest)

    /// Which converter, without its settings.
    public enum Kind: String, Sendable, CaseIterable {
        case gqa2mla, mha2mla
    }

    public var kind: Kind {
        switch self {
        case .gqa2mla: return .gqa2mla
        case .mha2mla: return .mha2mla
        }
    }
}

/// Where the activation statistics come from.
public enum CalibrationSource: Sendable {
    /// Calibration text run through the source model.
    case text(CalibrationText)
    /// Statistics saved by `mla-convert calibrate` (a safetensors file); `heldOut` is the text whose
    /// windows after its first `tokens` score the automatic candidates.
    case statistics(path: String, heldOut: CalibrationText)
    /// Weights only (C = I).
    case none
}

/// Everything a conversion is asked to do, before the model is seen. `validate()` refuses what no model
/// could satisfy; `run` (ConversionRun.swift) checks the rest against the model before any work, makes the
/// automatic choices, converts and writes. Settings left nil are chosen automatically (docs/defaults.md).
public struct ConversionPlan: Sendable {
    /// gqa2mla or mha2mla, with its rope settings.
    public var method: ConversionMethod
    /// The cache to fit per token per layer; `CacheBudget.rank` turns it into the latent rank.
    public var budget: CacheBudget = .fraction(0.5)
    /// Key error the factorization minimizes; nil: plain, and query measured against it when the rope is auto.
    public var keyWeighting: LatentWeighting.Keys?
    /// Value error the factorization minimizes: plain, or after o_proj (output, default).
    public var valueWeighting: LatentWeighting.Values = .output
    /// Rank per layer; nil: uniform and greedy measured in the native format, uniform in DeepSeek-V3.
    public var allocation: RankAllocation?
    /// The output format (`writeModel` is the one place that knows them).
    public var format: MLAOutputFormat
    /// Output tensor dtype (f32 or bf16, and f16 for GGUF); nil: the source's float type (F16 and quantized -> F32).
    public var dtype: DType?
    /// `--dtype q8_0`, GGUF only: 2-D tensors stored as llama.cpp's Q8_0 blocks of their F32 values (`dtype` F32).
    public var q8_0 = false
    /// Where the activation statistics come from (default: the sample data's calibration mix, 8,192 tokens).
    public var calibration: CalibrationSource = .text(CalibrationText())
    /// Which states the layers are calibrated on; nil: sequential with calibration text, parallel otherwise.
    public var calibrationOrder: CalibrationOrder?
    /// Whether o_proj is refit on the calibration tokens; nil: with calibration text only.
    public var outputRefit: Bool?
    /// Adam steps per layer on the attention-output error after the closed-form conversion
    /// (`AttentionRefinement`, `--refine-steps`); 0: none; nil: `AttentionRefinement.defaultSteps` with
    /// calibration text, none otherwise.
    public var refineSteps: Int?
    /// Adam's step size relative to each refined matrix's RMS value (`--refine-rate`).
    public var refineRate = AttentionRefinement.defaultLearningRate
    /// Held-out tokens each automatic candidate is scored on; nil: one calibration window.
    public var searchTokens: Int?
    /// Layers converted at once; nil: chosen by `LayerParallelism.choose`.
    public var layerWorkers: Int?
    /// BLAS threads the caller fixed (`--threads`), which `LayerParallelism.choose` respects.
    public var threads: Int?

    /// A plan with every other setting at its default; the format defaults to DeepSeek-V3 for gqa2mla and
    /// native for mha2mla.
    public init(method: ConversionMethod, format: MLAOutputFormat? = nil) {
        self.method = method
        if case .gqa2mla = method { self.format = format ?? .deepseek } else { self.format = format ?? .native }
    }

    /// The factorization's weighting, key weighting plain unless given.
    var weighting: LatentWeighting { LatentWeighting(keys: keyWeighting ?? .plain, values: valueWeighting) }

    /// The rank allocations the conversion may try: the given one, or uniform and (native only) greedy.
    var allocations: [RankAllocation] {
        if let allocation { return [allocation] }
        return format == .native ? [.uniform, .greedy] : [.uniform]
    }

    /// The calibration text, when text is run through the model.
    var calibrationText: CalibrationText? {
        if case let .text(text) = calibration { return text }
        return nil
    }

    /// The text the automatic choice takes its held-out windows from (none without calibration).
    var heldOutText: CalibrationText? {
        switch calibration {
        case let .text(text), let .statistics(_, text): return text
        case .none: return nil
        }
    }

    /// Refuses what no model can satisfy: budgets outside their range, a greedy allocation in DeepSeek-V3,
    /// odd rope dims, non-positive ranks, pairs or worker counts, 2-norm without calibration, and a layer
    /// pass without calibration text.
    public func validate() throws {
        switch budget {
        case let .rank(r): if r < 1 { throw ConversionPlanError("--kv-lora-rank must be positive, got \(r)") }
        case let .fraction(f): if !(f > 0 && f <= 1) { throw ConversionPlanError("--kv-budget must be in (0, 1], got \(f)") }
        }
        if format == .deepseek, allocation == .greedy {
            throw ConversionPlanError("--rank-allocation greedy gives layers different ranks, which DeepSeek-V3 cannot hold; use --format native")
        }
        if format != .gguf, dtype == .f16 {
            throw ConversionPlanError("--dtype f16 is written only with --format gguf (the HF formats' latent-norm scales do not fit in f16)")
        }
        if format != .gguf, q8_0 {
            throw ConversionPlanError("--dtype q8_0 is written only with --format gguf (llama.cpp's Q8_0 blocks); use f32 or bf16")
        }
        if q8_0, let dtype, dtype != .f32 {
            throw ConversionPlanError("--dtype q8_0 quantizes the F32 values; leave the plan's dtype F32, not \(dtype.rawValue)")
        }
        switch method {
        case let .gqa2mla(r):
            if let d = r.dims, d < 2 || d % 2 != 0 { throw ConversionPlanError("--rope-dim must be even and at least 2, got \(d)") }
            if let q = r.queryRank, q < 1 { throw ConversionPlanError("--q-lora-rank must be positive, got \(q)") }
        case let .mha2mla(r):
            if let p = r.pairs, p < 1 { throw ConversionPlanError("--rope-pairs must be positive, got \(p)") }
            if r.uniformStart < 0 { throw ConversionPlanError("--uniform-start must be 0 or more, got \(r.uniformStart)") }
            if r.strategy == .twoNorm, case .none = calibration {
                throw ConversionPlanError("--rope-strategy 2-norm ranks pairs by calibration norms; drop --no-calib or choose another strategy")
            }
        }
        if let s = searchTokens, s < 2 { throw ConversionPlanError("--search-tokens must be at least 2, got \(s)") }
        if let w = layerWorkers, w < 1 { throw ConversionPlanError("--layer-workers must be at least 1") }
        try heldOutText?.validate()
        _ = try layerPass()
    }

    /// The layer-by-layer calibration pass (`CalibratedConversion`, docs/method.md §6.a), or nil when the
    /// statistics alone calibrate (parallel, no refit); refuses an explicit sequential order, refit or
    /// refinement without calibration text.
    func layerPass() throws -> LayerPass? {
        if let steps = refineSteps, steps < 0 { throw ConversionPlanError("--refine-steps must be 0 or more, got \(steps)") }
        guard refineRate > 0, refineRate.isFinite else { throw ConversionPlanError("--refine-rate must be positive, got \(refineRate)") }
        guard calibrationText != nil else {
            if calibrationOrder == .sequential || outputRefit == true || (refineSteps ?? 0) > 0 {
                throw ConversionPlanError("--calib-order sequential, --output-refit and --refine-steps run the calibration text through the layers; they cannot use --no-calib or --calib-stats")
            }
            return nil
        }
        let steps = refineSteps ?? AttentionRefinement.defaultSteps
        let pass = LayerPass(order: calibrationOrder ?? .sequential, refitOutput: outputRefit ?? true,
                             refinement: steps > 0 ? AttentionRefinement(steps: steps, learningRate: refineRate) : nil)
        return pass.runs ? pass : nil
    }

    /// The layer pass on `checkpoint`'s calibration windows (the text tokenized), its stages fitted to
    /// how many there are (`LayerPass.fitted`): throws when a flag asked for a stage they are too few for.
    func layerPass(for checkpoint: Checkpoint) throws -> FittedLayerPass {
        guard let pass = try layerPass(), let text = calibrationText else { return FittedLayerPass(fitted: nil, textWindows: []) }
        let windows = try text.windows(for: checkpoint)
        return FittedLayerPass(fitted: try pass.fitted(windows: windows.count, windowTokens: text.window, askedTokens: text.tokens,
                                                       refitAsked: outputRefit == true, refineAsked: (refineSteps ?? 0) > 0),
                               textWindows: windows)
    }

    /// The summary's description of the calibration and of `pass`, the layer pass as it ran on `tokens`
    /// calibration tokens (when known), with the stages it left out (`omitted`).
    func calibrationDescription(pass: LayerPass?, tokens: Int?, omitted: [String]) -> String {
        switch calibration {
        case .none: return "none (weights only)"
        case let .statistics(path, _): return "statistics \(path)"
        case let .text(text):
            let stages = pass.map { pass in
                pass.order.rawValue + (pass.refitOutput ? ", o_proj refit" : "") + (pass.refinement.map { ", \($0.steps) refinement steps" } ?? "")
            } ?? "parallel"
            let shortfall = tokens.map { $0 < text.tokens ? " (the text gives \($0))" : "" } ?? ""
            return ([text.description + shortfall + ", " + stages] + omitted).joined(separator: "; ")
        }
    }

    /// Refuses, before any work, a rope request the model's heads cannot hold, then unless one of
    /// `plans` fits the budget (`ModelConversion.checkPlan`, which runs `CacheBudget.rank`), then a
    /// non-finite value in a tensor the output copies (`Checkpoint.checkPassThroughValues`).
    static func checkBeforeWork(checkpoint: Checkpoint, budget: CacheBudget, plans: [LayerConversionOptions]) throws {
        try checkSomePlanFits(checkpoint: checkpoint, budget: budget, plans: plans)
        try checkpoint.checkPassThroughValues()
    }

    /// Returns when one of `plans` fits; else throws the first one's refusal, named for the model.
    private static func checkSomePlanFits(checkpoint: Checkpoint, budget: CacheBudget, plans: [LayerConversionOptions]) throws {
        guard !plans.isEmpty else { throw ConversionPlanError("no rope plan fits the rope flags as given (--rope-dim, --rope-frequencies, --freqfold)") }
        var refusal: ConversionPlanError?
        for plan in plans {
            do {
                try ModelConversion.checkPlan(config: checkpoint.config, options: plan, budget: budget)
                return
            } catch let error as ConversionPlanError {
                refusal = refusal ?? error
            }
        }
        if let refusal { throw Self.naming(checkpoint, refusal) }
    }

    /// `refusal` of a request that `checkpoint`'s model cannot hold, prefixed with the model file, since
    /// the limit is the model's.
    static func naming(_ checkpoint: Checkpoint, _ refusal: ConversionPlanError) -> ConversionPlanError {
        ConversionPlanError("\(checkpoint.path): \(refusal)")
    }
}
