import ArgumentParser
import MLACLI
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

        @Option(help: "Which pairs keep RoPE: high, low, uniform, 2-norm or rorope; default auto: high, 2-norm and rorope measured at the budget (see --search-tokens; low and uniform measured worse than high on the sample and are left out); with --format deepseek or gguf only those the format holds: rorope, and high for a model with one KV head.")
        var ropeStrategy: PartialRopeStrategy?

        @Option(help: "Frequency pairs kept with RoPE per head (each pair is 2 dims); default auto: head_dim/16, then halved or doubled while the measured score improves.")
        var ropePairs: Int?

        @Option(help: "First pair of the uniform strategy (default 0; only with --rope-strategy uniform).")
        var uniformStart: Int?

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

        /// The conversion these options ask for.
        var plan: ConversionPlan {
            let rope = PartialRopeRequest(strategy: ropeStrategy, pairs: ropePairs, uniformStart: uniformStart ?? 0, combination: normCombination,
                                          factorization: factorization, sigma: sigma, factorOn: factorOn)
            return conversionPlan(.mha2mla(rope), format: format, budget: budget, weighting: weighting, calibration: calibration,
                                  layerPass: layerPassOptions, search: search, output: output, runtime: runtime)
        }

        func validate() throws {
            if uniformStart != nil, ropeStrategy != .uniform { throw ValidationError("--uniform-start sets the first pair of --rope-strategy uniform; give that strategy or drop it") }
            try output.validate(format: format)
            try asUsageError { try plan.validate() }
        }

        func run() throws { try runConversion(plan, source: source, output: output, runtime: runtime) }
    }
}
