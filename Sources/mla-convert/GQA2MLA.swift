import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLARuntime
import MLAVerify

extension MLAConvertCommand {
    struct GQA2MLA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gqa2mla",
            abstract: "Convert GQA/MHA attention to MLA with one shared rope key (TransMLA pipeline) and write a stock DeepSeek-V3 checkpoint.",
            discussion: """
            Stages (mla-math.md §4): merge the KV heads into one latent (exact); RoRoPE: per frequency, rotate the \
            keys across KV heads so positional energy concentrates in one component (exact); keep one shared rope \
            key of --rope-dim dims (the rest of the key becomes NoPE: lossy); balance keys against values (exact); \
            factor [NoPE keys; values] jointly to kv_lora_rank, minimizing the score error under the calibration \
            queries and the value error after o_proj (activation-aware; weights only with --no-calib).

            The default output is a DeepSeek-V3 checkpoint that HF transformers (>= 4.53), vLLM and SGLang load \
            without custom code; --format native writes the toolkit's native MLA format instead.
            """)

        @OptionGroup var source: SourceModelArgument

        @OptionGroup var output: ConversionOutputOptions

        @Option(help: "Output format: deepseek (stock DeepSeek-V3) or native.")
        var format: MLAOutputFormat = .deepseek

        @OptionGroup var budget: BudgetOptions

        @Option(help: "Dims of the shared rope key (even; default min(64, head_dim)).")
        var ropeDim: Int?

        @Option(help: "Which source frequencies the rope key carries: high (the fastest rope-dim/2 pairs) or uniform (every (head_dim/rope-dim)-th pair from pair 0, TransMLA).")
        var ropeFrequencies: RopeFrequencyChoice = .high

        @Option(help: "FreqFold: pairs folded into one PCA group (1 = exact per-frequency rotation), or auto: measure the rope stage of the highest pairs unfolded and of uniform pairs folded by 1, 2 and 4 strides on a held-out calibration window and keep the one with the smallest KL to the source (overrides --rope-frequencies).")
        var freqfold: String = "1"

        @OptionGroup var weighting: WeightingOptions

        @Option(help: "Low-rank query of this rank (q_lora_rank); default: full q_proj.")
        var qLoraRank: Int?

        @OptionGroup var calibration: CalibrationOptions

        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            try budget.check(format: format)
            if let ropeDim, ropeDim < 2 || ropeDim % 2 != 0 { throw ValidationError("--rope-dim must be even and at least 2, got \(ropeDim)") }
            guard freqfold == "auto" || (Int(freqfold) ?? 0) >= 1 else { throw ValidationError("--freqfold must be auto or a positive integer, got '\(freqfold)'") }
            if let qLoraRank, qLoraRank < 1 { throw ValidationError("--q-lora-rank must be positive, got \(qLoraRank)") }
        }

        func run() throws {
            let start = MonotonicClock.now()
            runtime.apply()
            let plan = try output.plan(inputs: [source.model] + calibration.inputs)
            let checkpoint = try source.open()
            let c = checkpoint.config
            let hd = c.headDim, dRope = ropeDim ?? min(64, hd)
            guard dRope <= hd else { throw ValidationError("--rope-dim \(dRope) exceeds the head dim \(hd)") }
            let pairs = hd / 2, slots = dRope / 2
            let stride = ropeFrequencies == .high ? 1 : pairs / slots
            guard ropeFrequencies == .high || pairs % slots == 0 else {
                throw ValidationError("--rope-frequencies uniform needs rope-dim/2 (\(slots)) to divide the \(pairs) pairs per head")
            }
            let fold = Int(freqfold) ?? stride
            guard freqfold == "auto" || (pairs % fold == 0 && fold % stride == 0) else {
                throw ValidationError("--freqfold \(freqfold) must divide the \(pairs) pairs per head and be a multiple of the stride \(stride)")
            }
            var options = LayerConversionOptions(
                rope: .shared(dims: dRope, stride: stride, fold: max(fold, stride)),
                weighting: weighting.weighting, queryRank: qLoraRank,
                foldSoftmaxScale: format == .deepseek)
            try ModelConversion.checkPlan(config: c, options: options, budget: budget.budget)
            let stats = try calibration.statistics(for: checkpoint)
            var ropeNote = "\(ropeFrequencies.rawValue) pairs, stride \(stride), freqfold \(max(fold, stride))"
            if freqfold == "auto" {
                let uniformStride = pairs / slots
                var candidates: [(String, RopePlan)] = [("high pairs, no fold", .shared(dims: dRope, stride: 1, fold: 1))]
                for m in [1, 2, 4] where pairs % (m * uniformStride) == 0 && pairs % slots == 0 {
                    candidates.append(("uniform pairs, freqfold \(m * uniformStride)", .shared(dims: dRope, stride: uniformStride, fold: m * uniformStride)))
                }
                let choice = try RopePlanChoice.measure(candidates: candidates, checkpoint: checkpoint, statistics: stats, options: options,
                                                        tokens: try calibration.heldOutWindow(for: checkpoint))
                options.rope = choice.plan
                ropeNote = "freqfold auto -> \(choice.label) (held-out KL of the rope stage: \(choice.summary))"
            }
            let conversion = ModelConversion(config: c, store: checkpoint.store, statistics: stats, options: options)
            let settings: [(String, String)] = [
                ("rope", "one shared key of \(dRope) dims = \(slots) frequency pairs, \(ropeNote)"),
                ("latent", "joint [NoPE keys; values], \(weighting.description), \(budget.rankAllocation.rawValue) ranks"),
                ("query", qLoraRank.map { "low rank \($0)" } ?? "full"),
            ]
            try ConversionRunner(method: "gqa2mla", checkpoint: checkpoint, conversion: conversion, budget: budget.budget,
                                 allocation: budget.rankAllocation, format: format, output: output, plan: plan, settings: settings,
                                 calibration: calibration.description, threads: runtime.threads).run(start: start)
        }
    }
}

/// Which source frequencies a shared rope key carries (both are DeepSeek-expressible: pair 0 first,
/// an arithmetic progression of pairs).
enum RopeFrequencyChoice: String, ExpressibleByArgument, CaseIterable {
    case high, uniform
}

/// `--freqfold auto`: each candidate rope plan's RoPE stage alone (full rank, so the factorization is
/// exact) runs on a held-out calibration window, and the plan with the smallest mean KL to the source wins.
enum RopePlanChoice {
    static func measure(candidates: [(String, RopePlan)], checkpoint: Checkpoint, statistics: CalibrationStatistics?,
                        options: LayerConversionOptions, tokens: [Int]) throws -> (label: String, plan: RopePlan, summary: String) {
        let source = try DecoderModel(config: checkpoint.config, store: checkpoint.store)
        let progress = Progress(total: candidates.count, label: "freqfold auto")
        var kl: [Double] = []
        for (_, plan) in candidates {
            var o = options
            o.rope = plan
            let layers = try ModelConversion(config: checkpoint.config, store: checkpoint.store, statistics: statistics, options: o).fullRankLayers()
            let model = try DecoderModel(config: checkpoint.config, store: checkpoint.store,
                                         attention: layers.map { MLAAttentionBlock(weights: $0, form: .naive) })
            kl.append(try verify(original: source, converted: model, tokens: tokens, window: tokens.count, layers: []).klMean)
            progress.step()
        }
        progress.finish()
        let best = kl.indices.min { kl[$0] < kl[$1] } ?? 0
        let summary = zip(candidates, kl).map { "\($0.0): \(String(format: "%.4f", $1))" }.joined(separator: ", ")
        return (candidates[best].0, candidates[best].1, summary)
    }
}
