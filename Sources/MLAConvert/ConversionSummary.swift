import MLACheckpoint
import MLALinalg
import MLATensor

/// What the method chose, as the summary, the GGUF metadata and the native config state it.
public struct MethodSettings: Sendable {
    /// The rope plan and how it was chosen, in words ("one shared key of 32 dims = 16 frequency pairs, …").
    public let rope: String
    /// The factorization, its weighting and the rank allocation, in words.
    public let latent: String
    /// gqa2mla's query projection; nil for mha2mla, which always keeps q_proj and does not say so.
    public let query: QueryProjection?

    /// The query projection of a gqa2mla conversion.
    public enum QueryProjection: Sendable, Equatable {
        /// The source's q_proj, as converted.
        case full
        /// q_a_proj → q_a_layernorm → q_b_proj of this rank (`LowRankQuery`).
        case lowRank(Int)
    }

    /// (name, text) in the order they are shown: rope, latent, query.
    public var entries: [(String, String)] {
        let query = query.map { query -> String in
            switch query {
            case .full: return "full"
            case let .lowRank(rank): return "low rank \(rank)"
            }
        }
        return [("rope", rope), ("latent", latent)] + (query.map { [("query", $0)] } ?? [])
    }
}

/// The settings a summary shows: the method's, then the output dtype and the layer parallelism.
public struct ConversionSettings: Sendable {
    public let method: MethodSettings
    public let dtype: DType
    /// Whether 2-D tensors are stored as Q8_0 blocks of `dtype` (F32) values (GGUF).
    public let q8_0: Bool
    /// Layers converted at once, and the BLAS threads each runs on.
    public let layerWorkers: Int
    public let blasThreads: Int
    /// The OpenBLAS kernels that ran (`BLASKernel.current`), e.g. "SkylakeX".
    public let blasKernels: String

    public init(method: MethodSettings, dtype: DType, q8_0: Bool = false, layerWorkers: Int, blasThreads: Int,
                blasKernels: String = BLASKernel.current) {
        self.method = method
        self.dtype = dtype
        self.q8_0 = q8_0
        self.layerWorkers = layerWorkers
        self.blasThreads = blasThreads
        self.blasKernels = blasKernels
    }

    /// (name, text) in the order they are shown, e.g. ("parallelism", "1 layer worker × 2 BLAS threads"),
    /// ("blas", "OpenBLAS SkylakeX kernels").
    public var entries: [(String, String)] {
        func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }
        return method.entries + [("dtype", q8_0 ? "Q8_0" : dtype.rawValue),
                                 ("parallelism", count(layerWorkers, "layer worker") + " × " + count(blasThreads, "BLAS thread")),
                                 ("blas", "OpenBLAS \(blasKernels) kernels")]
    }
}

/// What a conversion did, for the terminal, `--json` and the output's `mla_convert.json`.
public struct ConversionSummary: Sendable {
    public let method: ConversionMethod.Kind
    public let source: String
    public let calibration: String
    public let format: MLAOutputFormat
    public let settings: ConversionSettings
    public let layers: [LayerConversionReport]
    /// Cache values per token for the whole model, before and after.
    public let sourceCacheValues: Int
    public let convertedCacheValues: Int
    public var seconds: Double
    public var peakResidentBytes: Int
    /// Operations of the process's BLAS and LAPACK calls during the conversion (`FlopCount`: exact when
    /// the conversion is the process's only work, as in the CLI).
    public var work: FlopCount.Totals
    /// The automatic choice's candidates and scores, when settings were left at auto.
    public let search: SearchReport?

    public init(method: ConversionMethod.Kind, source: String, calibration: String, format: MLAOutputFormat, settings: ConversionSettings,
                layers: [LayerConversionReport], sourceCacheValues: Int, convertedCacheValues: Int, seconds: Double,
                peakResidentBytes: Int, work: FlopCount.Totals = FlopCount.Totals(), search: SearchReport? = nil) {
        self.method = method
        self.source = source
        self.calibration = calibration
        self.format = format
        self.settings = settings
        self.layers = layers
        self.sourceCacheValues = sourceCacheValues
        self.convertedCacheValues = convertedCacheValues
        self.seconds = seconds
        self.peakResidentBytes = peakResidentBytes
        self.work = work
        self.search = search
    }

    /// The stages the layers went through and the output format's encoder runs, in pipeline order.
    public var stages: [ConversionStage] {
        let ran = Set(layers.flatMap(\.stages) + format.stages)
        return ConversionStage.allCases.filter(ran.contains)
    }

    /// A caveat of the output format, one line (the DeepSeek-V3 export's storage limit, docs/deepseek-export.md).
    public var formatNote: String? {
        guard format == .deepseek else { return nil }
        return "note: keep this DeepSeek-V3 checkpoint F32 or BF16: F16 and llama.cpp's quantizations (convert_hf_to_gguf.py --outtype f16/q8_0, llama-quantize) destroy its tiny latent rows; for llama.cpp convert with --format gguf (docs/deepseek-export.md)"
    }

    /// Kept fraction of the source cache.
    public var cacheFraction: Double { Double(convertedCacheValues) / Double(max(sourceCacheValues, 1)) }

    /// One layer's entry, shared by the summary JSON and the native config's `layers[i]` extras.
    public static func layerEntry(_ r: LayerConversionReport) -> [(String, JSONValue)] {
        [
            ("kept_pairs", .array(r.keptPairs.map { .array($0.map { JSONValue($0) }) })),
            ("errors", .object([
                ("kv_energy_retained", JSONValue(r.kvEnergyRetained)),
                ("rope_energy_retained", JSONValue(r.ropeEnergyRetained)),
                ("query_energy_retained", JSONValue(r.queryEnergyRetained)),
            ] + (r.outputError.map { error in [
                ("attention_output_error", JSONValue(error.before)),
                ("attention_output_error_refit", JSONValue(error.after)),
                ("refit_ridge", r.outputRidge.map { JSONValue($0) } ?? .null),
            ] } ?? []) + (r.refinement.map { refined in [
                ("held_out_output_error", JSONValue(refined.before)),
                ("held_out_output_error_refined", JSONValue(refined.after)),
                ("refinement_step_kept", JSONValue(refined.keptStep)),
            ] } ?? []))),
        ]
    }

    public var json: JSONValue {
        .object([
            ("method", .string(method.rawValue)), ("source", .string(source)), ("calibration", .string(calibration)),
            ("format", .string(format.rawValue)),
            ("settings", .object(settings.entries.map { ($0.0, JSONValue.string($0.1)) })),
            ("stages", .array(stages.map { stage in
                .object([("stage", .string(stage.rawValue)), ("exactness", .string(stage.exactness.rawValue)),
                         ("description", .string(stage.explanation))])
            })),
        ] + (search.map { [("search", $0.json)] } ?? []) + [
            ("kv_cache", .object([
                ("source_values_per_token", JSONValue(sourceCacheValues)),
                ("converted_values_per_token", JSONValue(convertedCacheValues)),
                ("kept_fraction", JSONValue(cacheFraction)),
                ("source_bytes_per_token_bf16", JSONValue(2 * sourceCacheValues)),
                ("converted_bytes_per_token_bf16", JSONValue(2 * convertedCacheValues)),
            ])),
            ("layers", .array(layers.map { r in
                .object([("layer", JSONValue(r.layer)), ("kv_rank", JSONValue(r.kvRank))] + Self.layerEntry(r))
            })),
            ("seconds", JSONValue(seconds)), ("peak_rss_bytes", JSONValue(peakResidentBytes)),
            ("work_flops", .object([("single", JSONValue(work.single)), ("double", JSONValue(work.double))])),
        ] + (formatNote.map { [("note", JSONValue.string($0))] } ?? []))
    }

    /// The terminal summary: settings, a per-layer table and the cache line.
    public var text: String {
        var lines = ["\(method.rawValue): \(source) -> \(format.rawValue)", "  calibration: \(calibration)"]
        lines += settings.entries.map { "  \($0.0): \($0.1)" }
        lines.append("  stages: " + stages.map { "\($0.rawValue) (\($0.exactness.rawValue))" }.joined(separator: ", "))
        lines += (search?.lines ?? []).map { "  " + $0 }
        let refit = layers.contains { $0.outputError != nil }, refined = layers.contains { $0.refinement != nil }
        lines.append("  layer  kv_rank  rope pairs kept (per rope head)          rope energy  kv energy"
                     + (refit ? "  attention output error (o_proj refit)" : "") + (refined ? "  held out (refinement, step kept)" : ""))
        for r in layers {
            let pairs = r.keptPairs.map { $0.map(String.init).joined(separator: ",") }.joined(separator: " | ")
            let shown = pairs.count > 40 ? String(pairs.prefix(37)) + "..." : pairs
            let output = (r.outputError.map { "  " + pad(percent($0.before), 6) + " -> " + pad(percent($0.after), 6) + (r.outputRidge == nil ? " (kept)" : "       ") } ?? "")
                + (r.refinement.map { "  " + pad(percent($0.before), 6) + " -> " + pad(percent($0.after), 6) + " (\($0.keptStep))" } ?? "")
            lines.append("  " + [pad(String(r.layer), 5), pad(String(r.kvRank), 7), shown.padding(toLength: 40, withPad: " ", startingAt: 0),
                                 pad(percent(r.ropeEnergyRetained), 11), pad(percent(r.kvEnergyRetained), 9)].joined(separator: "  ") + output)
        }
        lines.append("  KV cache per token: \(sourceCacheValues) -> \(convertedCacheValues) values (\(percent(cacheFraction)) kept\(cacheFraction < 1 ? ", -" + percent(1 - cacheFraction) : ""))")
        if let note = formatNote { lines.append("  " + note) }
        return lines.joined(separator: "\n")
    }

    private func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
    private func percent(_ x: Double) -> String {
        let tenths = (x * 1000).rounded()
        return "\(Int(tenths) / 10).\(Int(tenths) % 10)%"
    }
}
