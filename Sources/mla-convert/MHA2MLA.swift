import ArgumentParser
import MLACLI
import MLACheckpoint
import MLAConvert

extension MLAConvertCommand {
    struct MHA2MLA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mha2mla",
            abstract: "Convert MHA/GQA attention to MLA by partial RoPE and a joint low-rank KV latent (MHA2MLA method).",
            discussion: """
            Stages (mla-math.md §5-6): each KV head keeps RoPE on --rope-pairs frequency pairs (2 dims each) chosen by
            --rope-strategy; all other key dims become NoPE; the NoPE keys and the values of all KV heads are factored \
            into one latent (joint, default) or two (split) of kv_lora_rank, activation-aware from calibration \
            (minimizing the error on real activations) or from the weights alone with --no-calib (MHA2MLA's SVD).

            Strategies: high (fastest pairs), low (slowest), uniform (evenly spaced from --uniform-start), 2-norm (per KV \
            head, the pairs with the largest calibration query·key norms), rorope (rotate across KV heads per frequency \
            and keep one shared rope key: fewer cache values for rope, and exportable as DeepSeek-V3).

            Cache per token per layer: n_kv·2·rope-pairs + kv_lora_rank (rorope: 2·rope-pairs + kv_lora_rank). \
            The default output is the native MLA format; --format deepseek works for rorope (and high/uniform from pair \
            0 with one KV head).
            """)

        @OptionGroup var source: SourceModelArgument

        @OptionGroup var output: ConversionOutputOptions

        @Option(help: "Output format: native or deepseek.")
        var format: MLAOutputFormat = .native

        @OptionGroup var budget: BudgetOptions

        @Option(help: "Which pairs keep RoPE: high, low, uniform, 2-norm or rorope.")
        var ropeStrategy: PartialRopeStrategy = .twoNorm

        @Option(help: "Frequency pairs kept with RoPE per head (each pair is 2 dims; default head_dim/16).")
        var ropePairs: Int?

        @Option(help: "First pair of the uniform strategy.")
        var uniformStart: Int = 0

        @Option(help: "How 2-norm combines query and key norms: product (paper) or sum (early code).")
        var normCombination: NormCombination = .product

        @Option(help: "One latent for NoPE keys and values (joint) or one each with half the rank (split).")
        var factorization: FactorizationMode = .joint

        @Option(help: "Where the singular values go: down (in kv_a, the latent carries them), up (in kv_b, unit-variance latent) or sqrt (split).")
        var sigma: SigmaPlacement = .down

        @OptionGroup var weighting: WeightingOptions

        @Option(help: "Factor under the calibration activations (activations, default) or the weights alone (weights: MHA2MLA's plain SVD; calibration then only ranks 2-norm pairs).")
        var factorOn: FactorInput = .activations

        @OptionGroup var calibration: CalibrationOptions

        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            try budget.check(format: format)
            if let ropePairs, ropePairs < 1 { throw ValidationError("--rope-pairs must be positive, got \(ropePairs)") }
        }

        func run() throws {
            let start = MonotonicClock.now()
            runtime.apply()
            let plan = try output.plan(inputs: [source.model] + calibration.inputs)
            let checkpoint = try source.open()
            let c = checkpoint.config
            let pairs = ropePairs ?? max(1, c.headDim / 16)
            if ropeStrategy == .twoNorm, calibration.noCalib {
                throw ValidationError("--rope-strategy 2-norm ranks pairs by calibration norms; drop --no-calib or choose another strategy")
            }
            let options = LayerConversionOptions(
                rope: .partial(strategy: ropeStrategy, pairs: pairs, start: uniformStart, combination: normCombination),
                weighting: weighting.weighting, mode: factorization, sigma: sigma,
                foldSoftmaxScale: format == .deepseek, activationAware: factorOn == .activations && !calibration.noCalib)
            try ModelConversion.checkPlan(config: c, options: options, budget: budget.budget)
            let heads = ropeStrategy == .rorope ? "one shared rope key" : "each of the \(c.numKVHeads) KV heads"
            writeStandardError("rope: \(heads) keeps \(pairs) frequency pairs = \(2 * pairs) rope dims (head dim \(c.headDim))\n")
            let stats = try calibration.statistics(for: checkpoint)
            let conversion = ModelConversion(config: c, store: checkpoint.store, statistics: stats, options: options)
            let settings: [(String, String)] = [
                ("rope", "\(ropeStrategy.rawValue): \(heads) keeps \(pairs) pairs (\(2 * pairs) dims)"),
                ("latent", "\(factorization.rawValue) on \(calibration.noCalib ? "weights" : factorOn.rawValue), sigma \(sigma.rawValue), \(weighting.description), \(budget.rankAllocation.rawValue) ranks"),
            ]
            try ConversionRunner(method: "mha2mla", checkpoint: checkpoint, conversion: conversion, budget: budget.budget,
                                 allocation: budget.rankAllocation, format: format, output: output, plan: plan, settings: settings,
                                 calibration: calibration.description, threads: runtime.threads).run(start: start)
        }
    }
}

/// What the low-rank factorization is fitted to.
enum FactorInput: String, ExpressibleByArgument, CaseIterable {
    case activations, weights
}
