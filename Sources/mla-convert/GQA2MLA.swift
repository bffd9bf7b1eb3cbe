import ArgumentParser
import MLACLI
import MLAConvert

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

        @Option(help: "Dims of the shared rope key (even; default auto: 16, 32 and 64 measured at the budget, see --search-tokens; where nothing can be measured, the widest within a third of the layer's cache when the layers are refined, else head_dim/2 within half of it: docs/defaults.md).")
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

        /// The conversion these options ask for.
        var plan: ConversionPlan {
            conversionPlan(.gqa2mla(SharedRopeRequest(dims: ropeDim, frequencies: ropeFrequencies, freqfold: freqfold, queryRank: qLoraRank)),
                           format: format, budget: budget, weighting: weighting, calibration: calibration, layerPass: layerPassOptions,
                           search: search, output: output, runtime: runtime)
        }

        func validate() throws {
            try output.validate(format: format)
            try asUsageError { try plan.validate() }
        }

        func run() throws { try runConversion(plan, source: source, output: output, runtime: runtime) }
    }
}
