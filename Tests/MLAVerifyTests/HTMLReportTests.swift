import Foundation
import Testing
import MLACheckpoint
import MLATestSupport
@testable import MLAVerify

/// The HTML report and its charts on synthetic measurements (no model needed).
@Suite struct HTMLReportTests {
    /// A report over `layers` layers with drift growing by layer, values comparable when `values`,
    /// and an MLA core check when `mla`.
    static func report(layers: Int = 12, values: Bool = true, mla: Bool = true, kl: [Double]? = nil) -> VerificationReport {
        var rng = SplitMix64(seed: 8)
        var klValues: [Double] = kl ?? (0..<500).map { _ in pow(10, Double(rng.float(3)) - 4) }
        if kl == nil { klValues += [0, 0] }
        let sorted = klValues.sorted()
        let drift: [LayerDrift] = (0..<layers).map { l in
            let x = Double(l + 1)
            return LayerDrift(layer: l, relativeError: 1e-3 * x, cosine: 1 - 1e-6 * x,
                              valuesRelativeError: values ? 2e-3 * x : nil, valuesCosine: values ? 1 - 2e-6 * x : nil)
        }
        let core: MLACoreCheck? = mla ? MLACoreCheck(tokens: 512, logitsMaxRelative: 3e-7,
                                                     layerMaxRelative: (0..<layers).map { 1e-7 * Double($0 + 1) }) : nil
        let mean = klValues.reduce(0, +) / Double(klValues.count)
        return VerificationReport(
            tokens: klValues.count,
            original: .init(perplexity: 19.8388, nll: log(19.8388), top1: 0.4941),
            converted: .init(perplexity: 20.5, nll: log(20.5), top1: 0.48),
            klMean: mean, klP95: sorted[Int(0.95 * Double(sorted.count))], klMax: sorted.last ?? 0, klValues: klValues,
            top1Agreement: 0.93, layers: drift, mlaCore: core,
            originalCacheValuesPerToken: 11_520, convertedCacheValuesPerToken: 4_800, seconds: 12.5)
    }

    static let metadata = ConversionMetadata(
        layers: (0..<12).map { .init(kvRank: 96 + 8 * $0, kvEnergyRetained: 0.9 + 0.008 * Double($0), ropeEnergyRetained: 0.97) },
        file: "converted/config.json")

    @Test func chartsHaveOneMarkPerLayerAndNoExternalReferences() throws {
        let page = ReportPage(HTMLReport(report: Self.report(), metadata: Self.metadata, originalPath: "a.gguf",
                                         convertedPath: "b & <c>").html())
        let layers = (0..<12).map(String.init)
        // Attention output and values charts.
        #expect(page.markKeys(series: "relative error") == [layers, layers])
        #expect(page.markKeys(series: "1 − cosine") == [layers, layers])
        #expect(page.markKeys(series: "kv rank") == [layers])
        #expect(page.markKeys(series: "kv energy retained") == [layers])
        #expect(page.markKeys(series: "rope energy retained") == [layers])
        #expect(page.markKeys(series: "attention output max rel diff") == [layers])
        #expect(page.html.components(separatedBy: "<svg").count - 1 == 6, "drift, values, rank, energy, KL, MLA core")
        for forbidden in ["http://", "https://", "<script", "src=", "href=", "url(", "@import"] {
            #expect(!page.html.contains(forbidden), "\(forbidden)")
        }
        #expect(page.html.contains("b &amp; &lt;c&gt;"), "paths are escaped")
        #expect(page.html.contains(Self.report().verdict))
    }

    @Test func tableNumbersAreTheJSONNumbers() {
        for r in [Self.report(), Self.report(values: false, mla: false)] {
            let page = ReportPage(HTMLReport(report: r, metadata: nil, originalPath: "a", convertedPath: "b").html())
            let keys = Set(page.tableValues.map(\.key))
            #expect(page.mismatches(with: r.json).isEmpty, "\(page.mismatches(with: r.json))")
            for key in ["original.perplexity", "converted.perplexity", "perplexity_ratio", "kl.mean", "kl.p95", "kl.max",
                        "top1_agreement", "tokens", "kv_cache.original_values_per_token", "kv_cache.converted_values_per_token",
                        "kv_cache.original_bytes_per_token_bf16", "kv_cache.reduction", "seconds", "layers[11].rel_error", "layers[0].cosine"] {
                #expect(keys.contains(key), "\(key)")
            }
            #expect(keys.contains("mla_core.absorbed_vs_naive_max_rel") == (r.mlaCore != nil))
            #expect(keys.contains("layers[3].values_rel_error") == (r.layers[3].valuesRelativeError != nil))
        }
    }

    @Test func missingPartsAreSaidNotDrawn() {
        let html = HTMLReport(report: Self.report(values: false, mla: false, kl: [0, 0, 0]), metadata: nil,
                              originalPath: "a", convertedPath: "b").html()
        #expect(html.contains("no conversion metadata"))
        #expect(html.contains("values not comparable"))
        #expect(html.contains("not checked: the converted model has no MLA attention"))
        #expect(html.contains("all 3 KL values are exactly 0"))
        #expect(html.contains("Keys are not compared"))
    }

    /// 4 bins per decade over whole decades; the two exact zeros are counted in a note, not binned.
    @Test func klHistogramUsesLogBins() {
        let kl = [1.2e-6, 1.5e-6, 2e-6, 1.1e-3, 0.5, 0]
        let page = ReportPage(HTMLReport(report: Self.report(kl: kl), metadata: nil, originalPath: "a", convertedPath: "b").html())
        // Decades 1e-6...1: 1.2e-6 and 1.5e-6 share bin 0 ([1e-6, 1.78e-6)); 2e-6 is bin 1, 1.1e-3 bin 12, 0.5 bin 22.
        #expect(page.markKeys(series: "positions") == [["0", "1", "12", "22"]])
        #expect(page.html.contains("1 of 6 values are exactly 0"))
    }

    @Test func scales() {
        #expect(SVGChart.Scale.log(covering: [3e-7, 0.2, 0]) == .log(lowerExponent: -7, upperExponent: 0))
        #expect(SVGChart.Scale.log(covering: [1e-30, 1], maxDecades: 12) == .log(lowerExponent: -12, upperExponent: 0))
        #expect(SVGChart.Scale.log(covering: [0.5, 0.5]) == .log(lowerExponent: -1, upperExponent: 0))
        func bounds(_ scale: SVGChart.Scale) -> (Double, Double)? {
            if case let .linear(lower, upper) = scale { return (lower, upper) }
            return nil
        }
        for (values, lower, upper, expected) in [([96.0, 184], 0.0, nil, (0.0, 200.0)), ([0.987, 1], nil, 1, (0.985, 1)),
                                                 ([1, 1], nil, 1, (0.9, 1))] as [([Double], Double?, Double?, (Double, Double))] {
            let b = bounds(.linear(covering: values, lower: lower, upper: upper))
            #expect(b.map { abs($0.0 - expected.0) < 1e-12 && abs($0.1 - expected.1) < 1e-12 } == true, "\(values): \(String(describing: b))")
        }
        #expect(SVGChart.Scale.linear(lower: 0, upper: 200).ticks.map(\.label) == ["0", "50", "100", "150", "200"])
        #expect(SVGChart.Scale.log(lowerExponent: -7, upperExponent: 0).fraction(0) == 0)
    }

    @Test func metadataFromConfigOrSideFile() throws {
        let dir = NSTemporaryDirectory() + "mla-meta-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let layers = #"[{"kv_rank": 128, "errors": {"kv_energy_retained": 0.99, "rope_energy_retained": 0.9}}, {"kv_rank": 64}]"#
        let inConfig = try JSONValue.parse(#"{"mla_convert": {"layers": \#(layers)}}"#)
        let expected = [ConversionMetadata.Layer(kvRank: 128, kvEnergyRetained: 0.99, ropeEnergyRetained: 0.9),
                        ConversionMetadata.Layer(kvRank: 64)]
        #expect(try ConversionMetadata.load(config: inConfig, configFile: dir + "/config.json", directory: dir)?.layers == expected)
        let plain = try JSONValue.parse(#"{"model_type": "llama"}"#)
        #expect(try ConversionMetadata.load(config: plain, configFile: dir + "/config.json", directory: dir) == nil)
        try Data(#"{"layers": \#(layers)}"#.utf8).write(to: URL(fileURLWithPath: dir + "/mla_convert.json"))
        let side = try #require(try ConversionMetadata.load(config: plain, configFile: dir + "/config.json", directory: dir))
        #expect(side.layers == expected && side.file == dir + "/mla_convert.json")

        try Data(#"{"layers": [{"kv_rank": 8, "errors": {"kv_energy_retained": 95}}]}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/mla_convert.json"))
        let error = #expect(throws: CheckpointError.self) {
            try ConversionMetadata.load(config: plain, configFile: dir + "/config.json", directory: dir)
        }
        #expect(error?.description.contains("mla_convert.json") == true && error?.description.contains("layers[0].errors.kv_energy_retained") == true)
    }
}
