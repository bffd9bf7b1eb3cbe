import Foundation
import MLACheckpoint
import MLALinalg
import MLARuntime

/// One setting an automatic choice can pick: the layer options and the rank allocation, named for
/// the summary.
public struct SearchCandidate: Sendable {
    public let label: String
    public let options: LayerConversionOptions
    public let allocation: RankAllocation
    /// The label of the candidate this one refines (one more lever on top of it), or nil.
    public let refines: String?

    public init(label: String, options: LayerConversionOptions, allocation: RankAllocation, refines: String? = nil) {
        self.label = label
        self.options = options
        self.allocation = allocation
        self.refines = refines
    }
}

/// A candidate's measured score: mean KL(source ‖ candidate) per position on the held-out tokens, of its
/// closed form and, for a finalist (`ConversionSearch.finalists`), after a short refinement.
public struct ScoredCandidate: Sendable {
    public let candidate: SearchCandidate
    public let kl: Double
    public let seconds: Double
    /// Latent rank summed over the layers: candidates with equal sums split the budget between the rope
    /// key and the latent the same way.
    public let latentRanks: Int
    /// The KL after `ConversionSearch.refinedSteps` refinement steps per layer (nil: not refined).
    public internal(set) var refinedKL: Double?
}

/// What an automatic choice measured and kept, for the summary and `--json`.
public struct SearchReport: Sendable {
    /// The settings that were chosen automatically (e.g. "rope dims, rope frequencies, freqfold").
    public let what: String
    /// Held-out tokens each candidate was scored on.
    public let tokens: Int
    /// Every candidate in the order measured.
    public let scored: [ScoredCandidate]
    /// Index into `scored` of the kept candidate (`ConversionSearch.chosenIndex`).
    public let chosen: Int
    /// The relative KL reduction a refinement needs to replace the candidate it refines.
    public let margin: Double
    /// Refinement steps per layer the finalists were scored after (0: no finalists were refined).
    public let refinedSteps: Int
    public let seconds: Double

    public var choice: SearchCandidate { scored[chosen].candidate }

    public var json: JSONValue {
        .object([
            ("chooses", .string(what)), ("held_out_tokens", JSONValue(tokens)),
            ("candidates", .array(scored.map {
                .object([("label", .string($0.candidate.label)), ("kl", JSONValue($0.kl)), ("seconds", JSONValue($0.seconds)),
                         ("latent_ranks", JSONValue($0.latentRanks))]
                        + ($0.refinedKL.map { [("refined_kl", JSONValue($0))] } ?? [])
                        + ($0.candidate.refines.map { [("refines", JSONValue.string($0))] } ?? []))
            })),
            ("refinement_margin", JSONValue(margin)), ("finalist_refinement_steps", JSONValue(refinedSteps)),
            ("chosen", .string(choice.label)), ("seconds", JSONValue(seconds)),
        ])
    }

    /// One line per candidate, the chosen one marked.
    public var lines: [String] {
        let showsRefined = refinedSteps > 0
        return ["auto (\(what)): \(scored.count) candidates, mean KL to the source on \(tokens) held-out calibration tokens, \(String(format: "%.1f", seconds)) s"
                + " (a refinement, marked +, is kept only if it lowers the KL by more than \(Int((margin * 100).rounded())) %)"]
            + (showsRefined ? ["  closed form, then after \(refinedSteps) refinement steps per layer for the finalists (the best of each rope/latent split); the finalist refined best is kept"] : [])
            + scored.enumerated().map { i, s in
                (i == chosen ? "  * " : "    ") + String(format: "%.5f  ", s.kl) + (showsRefined ? (s.refinedKL.map { String(format: "%.5f  ", $0) } ?? "         ") : "")
                    + (s.candidate.refines == nil ? "" : "+ ") + s.candidate.label
            }
    }
}

/// Scores candidate conversions end to end: each is converted at the budget's actual ranks (the rope
/// dims trade against the latent rank, which a full-rank measurement cannot see), run on held-out
/// calibration tokens, and compared with the source by the mean KL of the next-token distributions.
/// The source is read a layer at a time (`StreamedModel`), never held whole; its states on the held-out
/// windows come from one layer-major pass shared by every candidate, its attention's inputs and outputs
/// on the calibration windows that candidates are refit and refined on from the statistics pass
/// (`WindowSamples`), and its next-token distributions are computed once (`ReferenceDistributions`).
/// Candidates are scored in closed form (`score`); the finalists among them can then be scored again
/// after a short refinement through the softmax (`scoreRefined`).
public final class ConversionSearch: @unchecked Sendable {
    // @unchecked: immutable after init except `scored` and `refinedSteps` (the calling thread only) and
    // `ridges` (its lock).
    public let config: ModelConfig
    let store: any TensorStore
    let statistics: CalibrationStatistics?
    let budget: CacheBudget
    /// Held-out windows, each run from position 0 (as one batch).
    let windows: [[Int]]
    var tokens: Int { windows.reduce(0) { $0 + $1.count } }
    let source: any LayerwiseModel
    /// The source's next-token distributions on the held-out tokens, computed once (a candidate's KL
    /// then needs its own logits only; no [T × vocab] table is held).
    let reference: ReferenceDistributions
    /// Layers converted at once, each on one BLAS thread.
    let workers: Int
    /// The source attention's inputs and outputs on the first calibration windows, per layer, read a
    /// layer at a time: the refit's (`refitRows`) and the finalists' (`finalistWindows`).
    let samples: WindowSamples?
    /// When the final conversion refits o_proj, each candidate's layers are refit too (`OutputRefit`), on
    /// the first tokens of `samples`: these rows of its first windows (empty: no refit).
    let refitRows: [Int]
    /// Each layer's refit ridge, chosen by cross-validation for the first candidate and reused by the
    /// others in the closed-form stage (the cross-validation's F64 solves per layer were 60 % of that
    /// stage). The finalists choose their own (`scoreRefined`): a ridge carried over from another plan
    /// misjudged a plan by 2x on the sample.
    private let ridges = LayerRidges()
    public private(set) var scored: [ScoredCandidate] = []
    /// Refinement steps per layer the finalists were scored after (0: none were).
    public private(set) var refinedSteps = 0
    let start = Date()

    /// - `source`: the source model (a `StreamedModel`, or a loaded `DecoderModel`).
    /// - `windows`: the held-out windows candidates are scored on.
    /// - `samples`: the source attention's samples on the first calibration windows (the statistics
    ///   pass's, `collectCalibration(streaming:samples:)`), needed to refit and to score finalists refined.
    /// - `refitTokens`: how many of their first tokens to refit each candidate's o_proj on (0: no refit;
    ///   the windows they reach must be sampled). The refit runs on the source model's states (parallel
    ///   order) so that they are computed once; the final conversion's sequential pass is measured to rank
    ///   candidates the same way (docs/defaults.md).
    public init(source: any LayerwiseModel, store: any TensorStore, statistics: CalibrationStatistics?, budget: CacheBudget,
                windows: [[Int]], samples: WindowSamples? = nil, refitTokens: Int = 0,
                workers: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        refitRows = CalibrationText.truncatedLengths(samples?.windowTokens ?? [], to: refitTokens)
        precondition(refitTokens == 0 || !refitRows.isEmpty, "ConversionSearch: refitting on \(refitTokens) tokens needs their samples")
        config = source.config
        self.source = source
        self.store = store
        self.statistics = statistics
        self.budget = budget
        self.windows = windows
        self.samples = samples
        self.workers = max(1, workers)
        // The source's final-normed states on the held-out windows, [T × d]: one layer-major pass.
        var states = try WindowStates(model: source, windows: windows)
        for l in 0..<config.numLayers { try states.advance(through: try source.layer(l), eps: config.rmsNormEps, workers: self.workers) }
        reference = try ReferenceDistributions(normed: states.normed(finalNorm: source.finalNorm, eps: config.rmsNormEps),
                                               rows: windows.reduce(0) { $0 + $1.count }, model: source, workers: self.workers)
    }

    /// Whether `options` fit the budget and the model (`ModelConversion.checkPlan`).
    public func fits(_ options: LayerConversionOptions) -> Bool {
        (try? ModelConversion.checkPlan(config: config, options: options, budget: budget)) != nil
    }

    /// Converts and scores `candidate` (once per label; a repeated label returns the earlier score).
    @discardableResult
    public func score(_ candidate: SearchCandidate) throws -> Double {
        if let earlier = scored.first(where: { $0.candidate.label == candidate.label }) { return earlier.kl }
        let began = Date()
        let conversion = ModelConversion(config: config, store: store, statistics: statistics, options: candidate.options)
        let ranks = try conversion.ranks(budget: budget, allocation: candidate.allocation)
        var x = try source.embed(windows.flatMap { $0 })
        // Layer-major: `workers` layers read, converted (and refit) at once, one BLAS thread each, the
        // windows passed through them, then released, so only those layers are ever held.
        for first in stride(from: 0, to: config.numLayers, by: workers) {
            let chunk = first..<min(first + workers, config.numLayers)
            let layers = try parallelMap(chunk.count, workers: workers) { i in
                let l = chunk.lowerBound + i
                return (try self.source.layer(l), try self.converted(conversion, layer: l, rank: ranks[l]))
            }
            for (sourceLayer, weights) in layers { try advanceHeldOut(&x, through: sourceLayer, attention: weights) }
        }
        let kl = try meanKL(ofStates: x)
        scored.append(ScoredCandidate(candidate: candidate, kl: kl, seconds: Date().timeIntervalSince(began), latentRanks: ranks.reduce(0, +)))
        return kl
    }

    /// Advances the held-out windows' states `x` [tokens × d] through `sourceLayer` with its attention
    /// replaced by the converted `attention` (naive form).
    private func advanceHeldOut(_ x: inout [Float], through sourceLayer: DecoderLayer, attention weights: MLALayerWeights) throws {
        let attention = MLAAttentionBlock(weights: weights, form: .naive), sequences = windows.map(\.count)
        try sourceLayer.weights.forward(&x, rows: tokens, eps: config.rmsNormEps) { h in try attention.forward(h, sequences: sequences) }
    }

    /// Mean KL(source ‖ candidate) on the held-out tokens, from the candidate's states after the last layer [tokens × d].
    private func meanKL(ofStates x: [Float]) throws -> Double {
        try reference.meanKL(Kernels.rmsNorm(x, tokens: tokens, weight: source.finalNorm, eps: config.rmsNormEps), model: source, workers: workers)
    }

    /// Layer `l` of `conversion` at `rank`, its o_proj refit on the refit windows when there are any.
    private func converted(_ conversion: ModelConversion, layer l: Int, rank: Int) throws -> MLALayerWeights {
        var (weights, report) = try conversion.layer(l, upToRank: rank).weights(rank: rank)
        if !refitRows.isEmpty, let samples {
            let refit = try refitRows.enumerated().map { try samples.read(layer: l, window: $0, rows: $1) }
            try self.refit(&weights, &report, layer: l, inputs: refit.map(\.input), targets: refit.map(\.output), ridges: ridges)
        }
        return weights
    }

    /// Refits layer `l`'s o_proj on windows whose attention inputs are `inputs` and source attention
    /// outputs `targets`: with the ridge of `ridges` that the layer's first refit chose by
    /// cross-validation, or (nil) with its own.
    private func refit(_ weights: inout MLALayerWeights, _ report: inout LayerConversionReport, layer l: Int, inputs: [[Float]], targets: [[Float]],
                       ridges: LayerRidges?) throws {
        let known = ridges?.ridge(layer: l)
        // The search keeps the weights only: the refit's errors (for the summary) are not measured.
        let stages = CalibratedStages(refit: known.map { .fixed($0) } ?? .crossValidated, measuringRefitErrors: false,
                                      refinement: nil, workers: 1)
        _ = try stages.apply(to: &weights, report: &report, inputs: inputs, targets: targets, returningHeads: false)
        if known == nil { ridges?.record(report.outputRidge, layer: l) }
    }

    /// Refinement steps per layer each finalist is scored after. The refinement gains more on some rope
    /// plans than on others (at the sample's 18.75 % the closed form's third choice was the best refined
    /// plan), so finalists are ranked refined; 8 steps on 6 windows ranked the sample's plans as the full
    /// 32 steps on 24 windows did, and 4 steps barely (docs/defaults.md).
    public static let finalistSteps = 8
    /// A finalist's closed-form KL is at most this many times the best candidate's.
    public static let finalistFactor = 2.0
    /// Finalists refined at most: two, one per core of a 2-core machine (a third would take a second
    /// round). On the sample the third finalist (mha2mla's 4 pairs per head, closed-form KL 1.8x the best)
    /// scored last refined too.
    public static let maxFinalists = 2

    /// The candidates to score refined: of the candidates that refine nothing, the best of each
    /// rope/latent split (`latentRanks`) whose closed-form KL is within `finalistFactor` of the best, the
    /// `maxFinalists` best of those. Within one split the closed form's order is kept: on the sample the
    /// refinement reordered splits (rope 16 against 32 at 18.75 %), while rope 32 on uniform against
    /// highest pairs kept its closed-form order or stayed within a few per cent (docs/results.md).
    public var finalists: [Int] {
        let base = scored.indices.filter { scored[$0].candidate.refines == nil }
        guard let best = base.map({ scored[$0].kl }).min() else { return [] }
        let bestOfSplit = Dictionary(grouping: base) { scored[$0].latentRanks }.values.compactMap { $0.min { scored[$0].kl < scored[$1].kl } }
        return Array(bestOfSplit.filter { scored[$0].kl <= best * Self.finalistFactor }.sorted { scored[$0].kl < scored[$1].kl }.prefix(Self.maxFinalists))
    }

    /// Calibration windows the finalists are refit and refined on: 6 to step on and 2 held out (with 4,
    /// i.e. 3 to step on, the short refinement ranked the sample's plans as the closed form did).
    public static let finalistWindows = 8

    /// Scores the candidates at `indices` of `scored` again after `refinement` (its steps capped at
    /// `finalistSteps`), each layer refit (when the search refits, with its own cross-validated ridge)
    /// and refined on the first `finalistWindows` windows of `samples`. Like the closed-form stage it
    /// works on the source's states (parallel order) under the search's statistics; the conversion's
    /// own pass is sequential. One layer-major pass: each finalist's held-out states advance through its
    /// own converted layer, so only one layer's samples are held. `progress` gets the number of layers
    /// done after each.
    public func scoreRefined(_ indices: [Int], refinement: AttentionRefinement, progress: (Int) -> Void = { _ in }) throws {
        precondition((samples?.windowTokens.count ?? 0) >= Self.finalistWindows, "scoreRefined: \(Self.finalistWindows) sampled windows are needed")
        guard !indices.isEmpty, let samples else { return }
        let heldOut = windows.flatMap { $0 }
        let shortRefinement = AttentionRefinement(steps: min(refinement.steps, Self.finalistSteps), learningRate: refinement.learningRate,
                                                  windowsPerStep: refinement.windowsPerStep)
        let conversions = indices.map { ModelConversion(config: config, store: store, statistics: statistics, options: scored[$0].candidate.options) }
        let ranks = try indices.indices.map { try conversions[$0].ranks(budget: budget, allocation: scored[indices[$0]].candidate.allocation) }
        var finalistStates = try indices.map { _ in try source.embed(heldOut) }
        let stages = CalibratedStages(refit: refitRows.isEmpty ? nil : .crossValidated, measuringRefitErrors: false,
                                      refinement: shortRefinement, workers: 1)
        for l in 0..<config.numLayers {
            let layer = try source.layer(l)
            let read = try (0..<Self.finalistWindows).map { try samples.read(layer: l, window: $0) }
            let inputs = read.map(\.input), targets = read.map(\.output)
            let current = finalistStates
            // One finalist per worker, each on one BLAS thread. Each cross-validates its own ridge: with
            // another plan's ridge, rope 16 at the sample's 18.75 % scored as badly as its closed form
            // (KL 1.92 against 0.81 refined with its own; docs/defaults.md).
            finalistStates = try parallelMap(indices.count, workers: workers) { k in
                var (weights, report) = try conversions[k].layer(l, upToRank: ranks[k][l]).weights(rank: ranks[k][l])
                _ = try stages.apply(to: &weights, report: &report, inputs: inputs, targets: targets, returningHeads: false)
                var x = current[k]
                try self.advanceHeldOut(&x, through: layer, attention: weights)
                return x
            }
            progress(l + 1)
        }
        for (k, i) in indices.enumerated() { scored[i].refinedKL = try meanKL(ofStates: finalistStates[k]) }
        refinedSteps = shortRefinement.steps
    }

    /// Each layer's refit ridge as the first candidate chose it (nil: o_proj kept); throws when a layer
    /// has none yet (no candidate scored, or no refit).
    public func chosenRidges() throws -> [Double?] {
        try (0..<config.numLayers).map { l in
            guard let ridge = ridges.ridge(layer: l) else { throw ConversionPlanError("the search has not refit layer \(l)") }
            return ridge
        }
    }

    /// The relative KL reduction a refinement needs to replace the candidate it refines: smaller
    /// differences are within what the held-out sample's size moves (docs/defaults.md).
    public static let refinementMargin = 0.05

    /// The kept candidate: among the candidates that refine nothing, the finalist with the smallest refined
    /// KL when finalists were refined, else the smallest KL; then, in the order measured, each refinement of
    /// the kept one that lowers its (closed-form) KL by more than `refinementMargin`.
    public var chosenIndex: Int? {
        let base = scored.indices.filter { scored[$0].candidate.refines == nil }
        let refined = base.compactMap { i in scored[i].refinedKL.map { (index: i, kl: $0) } }
        guard var kept = refined.count > 1 ? refined.min(by: { $0.kl < $1.kl })?.index
                                           : base.min(by: { scored[$0].kl < scored[$1].kl }) else { return nil }
        for i in scored.indices where scored[i].candidate.refines == scored[kept].candidate.label
            && scored[i].kl < scored[kept].kl * (1 - Self.refinementMargin) {
            kept = i
        }
        return kept
    }

    /// The kept candidate so far.
    public var best: ScoredCandidate? { chosenIndex.map { scored[$0] } }

    /// The report of everything scored, `what` naming the settings chosen.
    public func report(what: String) -> SearchReport? {
        guard let kept = chosenIndex else { return nil }
        return SearchReport(what: what, tokens: tokens, scored: scored, chosen: kept, margin: Self.refinementMargin,
                            refinedSteps: refinedSteps, seconds: Date().timeIntervalSince(start))
    }
}

/// Each layer's refit ridge once chosen: nil until recorded, then the relative ridge or nil (o_proj kept).
private final class LayerRidges: @unchecked Sendable {
    // @unchecked: `chosen` is read and written under `lock` only.
    private let lock = NSLock()
    private var chosen: [Int: Double?] = [:]

    func ridge(layer: Int) -> Double?? {
        lock.lock()
        defer { lock.unlock() }
        return chosen[layer]
    }

    func record(_ ridge: Double?, layer: Int) {
        lock.lock()
        defer { lock.unlock() }
        chosen[layer] = ridge
    }
}
