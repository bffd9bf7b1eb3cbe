import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLARuntime

extension MLAConvertCommand {
    struct GQA2MLA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gqa2mla",
            abstract: "Convert GQA/MHA attention to MLA with one shared rope key (TransMLA pipeline) and write a stock DeepSeek-V3 checkpoint.",
            discussion: """
            Stages (docs/method.md §4), on the keys and values of all KV heads stacked (already MLA, §4.A): RoRoPE: per \
            frequency, rotate the keys across KV heads so positional energy concentrates in one component (exact); keep one shared rope \
            key of --rope-dim dims (the rest of the key becomes NoPE: lossy); balance keys against values (exact); \
            factor [NoPE keys; values] jointly to kv_lora_rank, minimizing the score error under the calibration \
            queries and the value error after o_proj (activation-aware; weights only with --no-calib).

            The default output is a DeepSeek-V3 checkpoint that HF transformers (>= 4.53), vLLM and SGLang load \
            without custom code; --format native writes the toolkit's native MLA format instead, --format gguf one \
            llama.cpp deepseek2 file (-o OUT.gguf) that llama.cpp runs with its latent cache (docs/gguf-export.md).
            """)

        @OptionGroup var source: SourceModelArgument

        @OptionGroup var output: ConversionOutputOptions

        @Option(help: "Output format: deepseek (stock DeepSeek-V3), native, or gguf (llama.cpp deepseek2, one file).")
        var format: MLAOutputFormat = .deepseek

        @OptionGroup var budget: BudgetOptions

        @Option(help: "Dims of the shared rope key (even; default auto: 16, 32 and 64 measured at the budget, see --search-tokens).")
        var ropeDim: Int?

        @Option(help: "Which source frequencies the rope key carries: high (the fastest rope-dim/2 pairs) or uniform (every (head_dim/rope-dim)-th pair from pair 0, TransMLA); default auto (measured).")
        var ropeFrequencies: RopeFrequencyChoice?

        @Option(help: ArgumentHelp("FreqFold: pairs folded into one PCA group (1 = exact per-frequency rotation), or auto (default): measured with the rope dims and frequencies, each candidate converted at the budget and scored by KL to the source on held-out calibration text.", valueName: FreqFold.valueName))
        var freqfold = FreqFold.auto

        @OptionGroup var weighting: WeightingOptions

        @Option(help: "Low-rank query of this rank (q_lora_rank); default: full q_proj.")
        var qLoraRank: Int?

        @OptionGroup var calibration: CalibrationOptions
        @OptionGroup var layerPassOptions: LayerPassOptions

        @OptionGroup var runtime: RuntimeOptions

        @OptionGroup var search: SearchOptions

        func validate() throws {
            try budget.check(format: format)
            if let ropeDim, ropeDim < 2 || ropeDim % 2 != 0 { throw ValidationError("--rope-dim must be even and at least 2, got \(ropeDim)") }
            if let qLoraRank, qLoraRank < 1 { throw ValidationError("--q-lora-rank must be positive, got \(qLoraRank)") }
        }

        func run() throws {
            let start = MonotonicClock.now()
            runtime.apply()
            let plan = try output.plan(inputs: [source.model] + calibration.inputs, format: format)
            let passPlan = try layerPassOptions.plan(calibration)
            let checkpoint = try source.open()
            let c = checkpoint.config
            let hd = c.headDim, pairs = hd / 2
            if let ropeDim { guard ropeDim <= hd else { throw ValidationError("--rope-dim \(ropeDim) exceeds the head dim \(hd)") } }
            let space = SharedRopeSpace(headDim: hd, dims: ropeDim, frequencies: ropeFrequencies, fold: freqfold.pairs)
            if let dRope = ropeDim, ropeFrequencies == .uniform, pairs % (dRope / 2) != 0 {
                throw ValidationError("--rope-frequencies uniform needs rope-dim/2 (\(dRope / 2)) to divide the \(pairs) pairs per head")
            }
            let fixed = ropeDim != nil && ropeFrequencies != nil && freqfold != .auto
            let allocations = allocationCandidates(fixed: budget.rankAllocation, format: format)
            var options = LayerConversionOptions(
                rope: .shared(dims: min(ropeDim ?? 32, hd), stride: 1, fold: 1),
                weighting: weighting.weighting, queryRank: qLoraRank,
                foldSoftmaxScale: format.foldsSoftmaxScale)
            var allocation = allocations[0]
            let searchPlan = fixed && allocations.count == 1 ? (windows: nil, reason: nil) : search.plan(calibration, for: checkpoint)
            var ropeLabel: String
            if fixed, let dRope = ropeDim, let freq = ropeFrequencies, let fold = freqfold.pairs {
                let stride = freq == .high ? 1 : pairs / (dRope / 2)
                guard pairs % fold == 0, fold % stride == 0 else {
                    throw ValidationError("--freqfold \(fold) must divide the \(pairs) pairs per head and be a multiple of the stride \(stride)")
                }
                options.rope = .shared(dims: dRope, stride: stride, fold: max(fold, stride))
                ropeLabel = "\(freq.rawValue) pairs, stride \(stride), freqfold \(max(fold, stride)) (as given)"
            } else if let reason = searchPlan.reason {
                guard let rule = space.fixedRule() else { throw ValidationError("no rope plan fits --rope-dim/--rope-frequencies/--freqfold as given") }
                options.rope = rule.plan
                ropeLabel = rule.label + " (fixed rule: \(reason), docs/defaults.md)"
            } else {
                ropeLabel = ""
            }
            let base = options, first = allocations[0]
            let candidates: [SearchCandidate] = fixed
                ? [SearchCandidate(label: "rope \(ropeLabel)", options: base, allocation: first)]
                : space.dimCandidates.flatMap { d in space.plans(dims: d).map { p -> SearchCandidate in
                    var o = base
                    o.rope = p.plan
                    return SearchCandidate(label: p.label, options: o, allocation: first)
                } }
            // Refused before any work: a fixed plan that does not fit, or no candidate that does.
            try checkBeforeWork(config: c, budget: budget.budget,
                                plans: fixed || searchPlan.windows == nil ? [options] : candidates.map(\.options))
            let layerPass = try passPlan.map { (windows: try calibration.windows(for: checkpoint), order: $0.order, refitOutput: $0.refitOutput) }
            // The layer pass measures each layer's moment itself; the statistics serve the search and greedy ranks.
            let stats = layerPass != nil && searchPlan.windows == nil && allocations == [.uniform] ? nil : try calibration.statistics(for: checkpoint)
            var searchReport: SearchReport?
            if let windows = searchPlan.windows {
                let searcher = try ConversionSearch(config: c, store: checkpoint.store, statistics: stats, budget: budget.budget,
                                                    windows: windows, refitWindows: search.refitWindows(layerPass))
                let what = [fixed ? nil : "rope plan", fixed || weighting.keyWeighting != nil ? nil : "key weighting",
                            allocations.count > 1 ? "rank allocation" : nil].compactMap { $0 }.joined(separator: ", ")
                let report = try runSearch(search: searcher, allocations: allocations, keyWeightingFixed: fixed || weighting.keyWeighting != nil, what: what) { measure in
                    try Self.exploreByWidth(candidates, measure: measure)
                }
                options = report.choice.options
                allocation = report.choice.allocation
                ropeLabel = report.choice.label + " (auto)"
                searchReport = report
            }
            guard case let .shared(dRope, _, _) = options.rope else { preconditionFailure("gqa2mla keeps one shared rope key") }
            let conversion = ModelConversion(config: c, store: checkpoint.store, statistics: stats, options: options)
            let settings: [(String, String)] = [
                ("rope", "one shared key of \(dRope) dims = \(dRope / 2) frequency pairs, \(ropeLabel)"),
                ("latent", "joint [NoPE keys; values], \(WeightingOptions.describe(options.weighting)), \(allocation.rawValue) ranks"),
                ("query", qLoraRank.map { "low rank \($0)" } ?? "full"),
            ]
            try ConversionRunner(method: "gqa2mla", checkpoint: checkpoint, conversion: conversion, budget: budget.budget,
                                 allocation: allocation, format: format, output: output, plan: plan, settings: settings,
                                 calibration: LayerPassOptions.describe(calibration, passPlan), threads: runtime.threads, search: searchReport,
                                 layerPass: layerPass).run(start: start)
        }

        /// The rope plans measured, staged: each rope width with its last plan (uniform pairs folded, or
        /// the one plan that keeps every pair), then the other plans of the best width.
        static func exploreByWidth(_ candidates: [SearchCandidate], measure: (SearchCandidate) throws -> Double?) throws {
            let byDims = Dictionary(grouping: candidates) { candidate -> Int in
                if case let .shared(dims, _, _) = candidate.options.rope { return dims }
                return 0
            }
            var bestDims: Int?, bestKL = Double.infinity
            for dims in byDims.keys.sorted() {
                guard let last = byDims[dims]?.last, let kl = try measure(last) else { continue }
                if kl < bestKL { (bestDims, bestKL) = (dims, kl) }
            }
            for candidate in (bestDims.flatMap { byDims[$0] } ?? []).dropLast() { _ = try measure(candidate) }
        }
    }
}

/// Which source frequencies a shared rope key carries (both are DeepSeek-expressible: pair 0 first,
/// an arithmetic progression of pairs).
enum RopeFrequencyChoice: String, CaseIterable {
    case high, uniform
}

/// FreqFold (docs/method.md §4.C): how many adjacent frequency pairs share one PCA group of the rope key.
enum FreqFold: Equatable {
    /// Measured with the rope dims and frequencies (`SharedRopeSpace`), or the fixed rule without calibration.
    case auto
    /// This many pairs per group, at least 1 (1: the exact per-frequency rotation).
    case pairs(Int)

    /// The pairs per group when given, nil for auto.
    var pairs: Int? {
        if case let .pairs(pairs) = self { return pairs }
        return nil
    }
}
