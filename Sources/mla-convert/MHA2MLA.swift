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
            Stages (docs/method.md §5-6): each KV head keeps RoPE on --rope-pairs frequency pairs (2 dims each) chosen by
            --rope-strategy; all other key dims become NoPE; the NoPE keys and the values of all KV heads are factored \
            into one latent (joint, default) or two (split) of kv_lora_rank, activation-aware from calibration \
            (minimizing the error on real activations) or from the weights alone with --no-calib (MHA2MLA's SVD).

            Strategies: high (fastest pairs), low (slowest), uniform (evenly spaced from --uniform-start), 2-norm (per KV \
            head, the pairs with the largest calibration query·key norms), rorope (rotate across KV heads per frequency \
            and keep one shared rope key: fewer cache values for rope, and exportable as DeepSeek-V3).

            Cache per token per layer: n_kv·2·rope-pairs + kv_lora_rank (rorope: 2·rope-pairs + kv_lora_rank). \
            The default output is the native MLA format; --format deepseek works for rorope (and high/uniform from pair \
            0 with one KV head), and so does --format gguf (one llama.cpp deepseek2 file, docs/gguf-export.md).
            """)

        @OptionGroup var source: SourceModelArgument

        @OptionGroup var output: ConversionOutputOptions

        @Option(help: "Output format: native, deepseek, or gguf (llama.cpp deepseek2, one file; rorope).")
        var format: MLAOutputFormat = .native

        @OptionGroup var budget: BudgetOptions

        @Option(help: "Which pairs keep RoPE: high, low, uniform, 2-norm or rorope; default auto: high, 2-norm and rorope measured at the budget (see --search-tokens; low and uniform measured worse than high on the sample and are left out).")
        var ropeStrategy: PartialRopeStrategy?

        @Option(help: "Frequency pairs kept with RoPE per head (each pair is 2 dims); default auto: head_dim/16, then halved or doubled while the measured score improves.")
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
        @OptionGroup var layerPassOptions: LayerPassOptions

        @OptionGroup var runtime: RuntimeOptions

        @OptionGroup var search: SearchOptions

        func validate() throws {
            try budget.check(format: format)
            if let ropePairs, ropePairs < 1 { throw ValidationError("--rope-pairs must be positive, got \(ropePairs)") }
        }

        func run() throws {
            let start = MonotonicClock.now()
            runtime.apply()
            let plan = try output.plan(inputs: [source.model] + calibration.inputs, format: format)
            let passPlan = try layerPassOptions.plan(calibration)
            let checkpoint = try source.open()
            let c = checkpoint.config
            let defaultPairs = ropePairs ?? max(1, c.headDim / 16)
            if ropeStrategy == .twoNorm, calibration.noCalib {
                throw ValidationError("--rope-strategy 2-norm ranks pairs by calibration norms; drop --no-calib or choose another strategy")
            }
            let allocations = allocationCandidates(fixed: budget.rankAllocation, format: format)
            func options(_ strategy: PartialRopeStrategy, _ pairs: Int) -> LayerConversionOptions {
                LayerConversionOptions(
                    rope: .partial(strategy: strategy, pairs: pairs, start: uniformStart, combination: normCombination),
                    weighting: weighting.weighting, mode: factorization, sigma: sigma,
                    foldSoftmaxScale: format.foldsSoftmaxScale, activationAware: factorOn == .activations && !calibration.noCalib)
            }
            func label(_ strategy: PartialRopeStrategy, _ pairs: Int) -> String {
                strategy == .rorope ? "rorope, one shared rope key of \(pairs) pairs" : "\(strategy.rawValue), \(pairs) pairs per KV head"
            }
            var chosen = options(ropeStrategy ?? .high, defaultPairs)
            var allocation = allocations[0]
            let fixed = ropeStrategy != nil && ropePairs != nil
            let searchPlan = fixed && allocations.count == 1 ? (windows: nil, reason: nil) : search.plan(calibration, for: checkpoint)
            if let reason = searchPlan.reason, !fixed { writeStandardError("rope: \(reason), so the fixed rule applies (docs/defaults.md)\n") }
            let strategies: [PartialRopeStrategy] = ropeStrategy.map { [$0] } ?? [.high, .twoNorm, .rorope]
            // Refused before any work: a fixed plan that does not fit, or no strategy that does at the first pairs.
            try checkBeforeWork(config: c, budget: budget.budget,
                                plans: fixed || searchPlan.windows == nil ? [chosen] : strategies.map { options($0, defaultPairs) })
            let layerPass = try passPlan.map { (windows: try calibration.windows(for: checkpoint), order: $0.order, refitOutput: $0.refitOutput) }
            // The layer pass measures each layer's moment itself; the statistics serve the search and greedy ranks.
            let stats = layerPass != nil && searchPlan.windows == nil && allocations == [.uniform] ? nil : try calibration.statistics(for: checkpoint)
            var searchReport: SearchReport?
            if let windows = searchPlan.windows {
                let searcher = try ConversionSearch(config: c, store: checkpoint.store, statistics: stats, budget: budget.budget,
                                                    windows: windows, refitWindows: search.refitWindows(layerPass))
                let what = [ropeStrategy == nil ? "rope strategy" : nil, ropePairs == nil ? "rope pairs" : nil,
                            fixed || weighting.keyWeighting != nil ? nil : "key weighting",
                            allocations.count > 1 ? "rank allocation" : nil].compactMap { $0 }.joined(separator: ", ")
                let report = try runSearch(search: searcher, allocations: allocations, keyWeightingFixed: fixed || weighting.keyWeighting != nil, what: what) { measure in
                    func candidate(_ s: PartialRopeStrategy, _ p: Int) -> SearchCandidate {
                        SearchCandidate(label: label(s, p), options: options(s, p), allocation: allocations[0])
                    }
                    for s in strategies { _ = try measure(candidate(s, defaultPairs)) }
                    guard ropePairs == nil, let best = searcher.best, case let .partial(s, p, _, _) = best.candidate.options.rope else { return }
                    // Rope pairs trade against the latent rank: halve or double while the score improves.
                    for step in [{ (p: Int) in p * 2 }, { (p: Int) in p / 2 }] {
                        var pairs = step(p), current = best.kl
                        while pairs >= 1, pairs <= c.headDim / 2, let kl = try measure(candidate(s, pairs)), kl < current {
                            current = kl
                            pairs = step(pairs)
                        }
                        if current < best.kl { break }
                    }
                }
                chosen = report.choice.options
                allocation = report.choice.allocation
                searchReport = report
            }
            guard case let .partial(strategy, pairs, _, _) = chosen.rope else { preconditionFailure("mha2mla keeps partial RoPE") }
            let heads = strategy == .rorope ? "one shared rope key" : "each of the \(c.numKVHeads) KV heads"
            writeStandardError("rope: \(heads) keeps \(pairs) frequency pairs = \(2 * pairs) rope dims (head dim \(c.headDim))\n")
            let conversion = ModelConversion(config: c, store: checkpoint.store, statistics: stats, options: chosen)
            let settings: [(String, String)] = [
                ("rope", "\(strategy.rawValue): \(heads) keeps \(pairs) pairs (\(2 * pairs) dims)" + (searchReport == nil ? "" : " (auto)")),
                ("latent", "\(factorization.rawValue) on \(calibration.noCalib ? "weights" : factorOn.rawValue), sigma \(sigma.rawValue), \(WeightingOptions.describe(chosen.weighting)), \(allocation.rawValue) ranks"),
            ]
            try ConversionRunner(method: "mha2mla", checkpoint: checkpoint, conversion: conversion, budget: budget.budget,
                                 allocation: allocation, format: format, output: output, plan: plan, settings: settings,
                                 calibration: LayerPassOptions.describe(calibration, passPlan), threads: runtime.threads, search: searchReport,
                                 layerPass: layerPass).run(start: start)
        }
    }
}

/// What the low-rank factorization is fitted to.
enum FactorInput: String, CaseIterable {
    case activations, weights
}
