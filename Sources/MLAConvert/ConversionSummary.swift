import MLACheckpoint

/// What a conversion did, for the terminal, `--json` and the output's `mla_convert.json`.
public struct ConversionSummary: Sendable {
    public let method: String
    public let source: String
    public let calibration: String
    public let format: String
    /// Human-readable settings (rope plan, weighting, ...), in order.
    public let settings: [(String, String)]
    public let layers: [LayerConversionReport]
    /// Cache values per token for the whole model, before and after.
    public let sourceCacheValues: Int
    public let convertedCacheValues: Int
    public var seconds: Double
    public var peakResidentBytes: Int
    /// The automatic choice's candidates and scores, when settings were left at auto.
    public let search: SearchReport?

    public init(method: String, source: String, calibration: String, format: String, settings: [(String, String)],
                layers: [LayerConversionReport], sourceCacheValues: Int, convertedCacheValues: Int, seconds: Double,
                peakResidentBytes: Int, search: SearchReport? = nil) {
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
        self.search = search
    }

    /// A caveat of the output format, one line (the DeepSeek-V3 export's storage limit, docs/deepseek-export.md).
    public var formatNote: String? {
        guard format == MLAOutputFormat.deepseek.rawValue else { return nil }
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
            ] } ?? []))),
        ]
    }

    public var json: JSONValue {
        .object([
            ("method", .string(method)), ("source", .string(source)), ("calibration", .string(calibration)),
            ("format", .string(format)),
            ("settings", .object(settings.map { ($0.0, JSONValue.string($0.1)) })),
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
        ] + (formatNote.map { [("note", JSONValue.string($0))] } ?? []))
    }

    /// The terminal summary: settings, a per-layer table and the cache line.
    public var text: String {
        var lines = ["\(method): \(source) -> \(format)", "  calibration: \(calibration)"]
        lines += settings.map { "  \($0.0): \($0.1)" }
        lines += (search?.lines ?? []).map { "  " + $0 }
        let refit = layers.contains { $0.outputError != nil }
        lines.append("  layer  kv_rank  rope pairs kept (per rope head)          rope energy  kv energy"
                     + (refit ? "  attention output error (o_proj refit)" : ""))
        for r in layers {
            let pairs = r.keptPairs.map { $0.map(String.init).joined(separator: ",") }.joined(separator: " | ")
            let shown = pairs.count > 40 ? String(pairs.prefix(37)) + "..." : pairs
            let output = r.outputError.map { "  " + pad(percent($0.before), 6) + " -> " + pad(percent($0.after), 6) + (r.outputRidge == nil ? " (kept)" : "") } ?? ""
            lines.append("  " + [pad(String(r.layer), 5), pad(String(r.kvRank), 7), shown.padding(toLength: 40, withPad: " ", startingAt: 0),
                                 pad(percent(r.ropeEnergyRetained), 11), pad(percent(r.kvEnergyRetained), 9)].joined(separator: "  ") + output)
        }
        lines.append("  KV cache per token: \(sourceCacheValues) -> \(convertedCacheValues) values (\(percent(cacheFraction)) kept, -\(percent(1 - cacheFraction)))")
        if let note = formatNote { lines.append("  " + note) }
        return lines.joined(separator: "\n")
    }

    private func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
    private func percent(_ x: Double) -> String {
        let tenths = (x * 1000).rounded()
        return "\(Int(tenths) / 10).\(Int(tenths) % 10)%"
    }
}
