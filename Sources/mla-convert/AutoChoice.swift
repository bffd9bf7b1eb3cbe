import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLARuntime

/// How the automatic choice of the rope plan and rank allocation is measured.
struct SearchOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Held-out calibration tokens each automatic candidate is scored on: this many tokens' worth of the calibration windows after the ones the statistics used (default: one whole window, --calib-window).",
        discussion: "Settings left at auto are chosen by converting each candidate at the budget's ranks and measuring its mean KL to the source on these tokens (docs/defaults.md). A whole window measures the rope error at every distance the calibration covers."))
    var searchTokens: Int?

    func validate() throws {
        if let searchTokens, searchTokens < 2 { throw ValidationError("--search-tokens must be at least 2, got \(searchTokens)") }
    }

    /// Calibration tokens each candidate's o_proj is refit on (when the conversion refits): the first
    /// windows of the calibration text.
    static let refitTokens = 2048

    /// The refit windows of the search for a conversion whose pass is `pass` (nil: no refit).
    func refitWindows(_ pass: (windows: [[Int]], order: CalibrationOrder, refitOutput: Bool)?) -> [[Int]]? {
        guard let pass, pass.refitOutput else { return nil }
        return truncated(pass.windows, to: Self.refitTokens)
    }

    /// Largest source model (F32 weights) the search holds in memory: 4 GiB, models up to about 1B
    /// parameters. Larger models use the fixed rule until the search streams layers.
    static let sourceBytesLimit = 4 << 30

    /// The held-out windows when the search can run, or why it cannot: no calibration, a source model
    /// too large to hold, or no held-out calibration text (e.g. a checkpoint without a tokenizer).
    func plan(_ calibration: CalibrationOptions, for checkpoint: Checkpoint) -> (windows: [[Int]]?, reason: String?) {
        if calibration.noCalib { return (nil, "without calibration") }
        let c = checkpoint.config
        let bytes = LayerParallelism.sourceLayerBytes(checkpoint) * c.numLayers + 4 * c.vocabSize * c.hiddenSize * (c.tiedEmbeddings ? 1 : 2)
        if bytes > Self.sourceBytesLimit {
            return (nil, "the search would hold the source model's F32 weights (\(formatBytes(bytes))) in memory")
        }
        do {
            return (try windows(calibration, for: checkpoint), nil)
        } catch {
            return (nil, "no held-out calibration text (\(error))")
        }
    }

    /// The held-out windows for `calibration`: whole windows after the statistics', cut to --search-tokens.
    func windows(_ calibration: CalibrationOptions, for checkpoint: Checkpoint) throws -> [[Int]] {
        let tokens = searchTokens ?? calibration.calibWindow
        let held = try calibration.heldOutWindows(for: checkpoint, count: max(1, (tokens + calibration.calibWindow - 1) / calibration.calibWindow))
        return truncated(held, to: tokens)
    }
}

/// The rope plans gqa2mla can choose from, with what the user fixed.
struct SharedRopeSpace {
    let headDim: Int
    /// Fixed by --rope-dim, --rope-frequencies, --freqfold (nil: auto).
    let dims: Int?
    let frequencies: RopeFrequencyChoice?
    let fold: Int?

    var pairs: Int { headDim / 2 }

    /// Rope dims to try: 16, 32 and 64 that fit the head (all its dims when none does).
    var dimCandidates: [Int] {
        if let dims { return [dims] }
        let fitting = [16, 32, 64].filter { $0 <= headDim && pairs % ($0 / 2) == 0 }
        return fitting.isEmpty ? [headDim - headDim % 2] : fitting
    }

    /// The plans for `dims` rope dims: the highest pairs unfolded, and uniform pairs (stride s =
    /// pairs / slots) folded by the smallest multiple of s that is at least 4 (FreqFold 4, TransMLA's
    /// choice; on the sample it beat folds of 2 and 8 at every rope width and budget, docs/defaults.md).
    /// Keeping every pair, the rotation per frequency is exact and only the unfolded plan is kept.
    func plans(dims: Int) -> [(label: String, plan: RopePlan)] {
        let slots = dims / 2
        var out: [(String, RopePlan)] = []
        if frequencies != .uniform, fold == nil || fold == 1 || slots == pairs {
            let f = fold ?? 1
            if pairs % f == 0 { out.append(("rope \(dims), highest pairs" + (f == 1 ? ", no fold" : ", freqfold \(f)"), .shared(dims: dims, stride: 1, fold: f))) }
        }
        guard frequencies != .high, slots < pairs, pairs % slots == 0 else { return out }
        let stride = pairs / slots
        let folds = fold.map { [$0] } ?? [stride * ((4 + stride - 1) / stride)]
        for f in folds where pairs % f == 0 && f % stride == 0 {
            out.append(("rope \(dims), uniform pairs (stride \(stride)), freqfold \(f)", .shared(dims: dims, stride: stride, fold: f)))
        }
        return out
    }

    /// Without calibration nothing can be measured: rope head_dim/2 dims (or the fixed dims) on
    /// uniform pairs folded as above (TransMLA's setting), else the first valid plan.
    func fixedRule() -> (label: String, plan: RopePlan)? {
        let all = plans(dims: dims ?? max(2, (headDim / 2) & ~1))
        return all.first { if case let .shared(_, s, _) = $0.plan { return s > 1 } else { return false } } ?? all.first
    }
}

/// The rank allocations a conversion may try: the fixed one, or uniform and (native only) greedy.
func allocationCandidates(fixed: RankAllocation?, format: MLAOutputFormat) -> [RankAllocation] {
    if let fixed { return [fixed] }
    return format == .native ? [.uniform, .greedy] : [.uniform]
}

/// Runs an automatic choice: `explore` measures the rope candidates it wants through `measure`
/// (which returns nil for a candidate that does not fit the budget and may look at the best so far),
/// then, as refinements of the kept candidate (`ConversionSearch.chosenIndex`), query-weighted keys
/// (unless `keyWeightingFixed`) and every other allocation in `allocations`.
func runSearch(search: ConversionSearch, allocations: [RankAllocation], keyWeightingFixed: Bool, what: String,
               explore: (_ measure: (SearchCandidate) throws -> Double?) throws -> Void) throws -> SearchReport {
    let start = MonotonicClock.now()
    func measure(_ candidate: SearchCandidate) throws -> Double? {
        guard search.fits(candidate.options) else { return nil }
        let kl = try search.score(candidate)
        writeStandardError("auto: KL \(String(format: "%.5f", kl))  \(candidate.label)\n")
        return kl
    }
    try explore(measure)
    if !keyWeightingFixed, let best = search.best, best.candidate.options.weighting.keys == .plain {
        var o = best.candidate.options
        o.weighting = LatentWeighting(keys: .query, values: o.weighting.values)
        _ = try measure(SearchCandidate(label: best.candidate.label + ", query-weighted keys", options: o, allocation: best.candidate.allocation,
                                        refines: best.candidate.label))
    }
    if let best = search.best, allocations.count > 1 {
        for allocation in allocations where allocation != best.candidate.allocation {
            _ = try measure(SearchCandidate(label: best.candidate.label + ", \(allocation.rawValue) ranks", options: best.candidate.options,
                                            allocation: allocation, refines: best.candidate.label))
        }
    }
    writeStandardError("auto: \(search.scored.count) candidates in \(String(format1: MonotonicClock.now() - start)) s\n")
    guard let report = search.report(what: what) else {
        throw ValidationError("no automatic candidate fits this budget; raise the budget or fix the rope settings")
    }
    return report
}

/// `windows` cut to `tokens` tokens in all (the last one shortened; at least 2 tokens each).
func truncated(_ windows: [[Int]], to tokens: Int) -> [[Int]] {
    var left = tokens, out: [[Int]] = []
    for w in windows where left >= 2 {
        out.append(Array(w.prefix(left)))
        left -= min(left, w.count)
    }
    return out
}

/// Throws the plan check's refusal unless at least one of `plans` fits (`ModelConversion.checkPlan`),
/// so impossible requests fail before calibration.
func checkBeforeWork(config: ModelConfig, budget: CacheBudget, plans: [LayerConversionOptions]) throws {
    guard !plans.isEmpty else { throw ValidationError("no rope plan fits the rope flags as given (--rope-dim, --rope-frequencies, --freqfold)") }
    var refusal: (any Error)?
    for plan in plans {
        do {
            try ModelConversion.checkPlan(config: config, options: plan, budget: budget)
            return
        } catch {
            refusal = refusal ?? error
        }
    }
    if let refusal { throw refusal }
}
