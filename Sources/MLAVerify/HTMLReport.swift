import Foundation
import MLACheckpoint

/// The `mla-verify --report DIR` page: one self-contained `index.html` (inline CSS and SVG; no
/// scripts, fonts, images or links to other files or hosts, so it opens offline) with the verdict, a
/// summary table, plots of per-layer drift, per-layer KV rank and energy retained (from the converted
/// model's `ConversionMetadata`), the KL distribution and the MLA core's absorbed-vs-naive check, and a
/// per-layer table.
///
/// Every number of the tables sits in a cell with `data-key` (its path in the `--json` object, e.g.
/// `kl.mean` or `layers[3].rel_error`) and `data-value` (exactly the JSON text), so the page can be
/// checked against the JSON. The plots are `SVGChart`s with one mark per layer (or histogram bin).
public struct HTMLReport: Sendable {
    public let report: VerificationReport
    /// Per-layer conversion facts; nil shows "no conversion metadata" in their place.
    public let metadata: ConversionMetadata?
    /// The paths as the user gave them, shown in the header.
    public let originalPath: String
    public let convertedPath: String

    public init(report: VerificationReport, metadata: ConversionMetadata?, originalPath: String, convertedPath: String) {
        self.report = report
        self.metadata = metadata
        self.originalPath = originalPath
        self.convertedPath = convertedPath
    }

    /// Writes `index.html` into the directory `output` (an `OutputPlan` of kind `.directory`, made at
    /// command start): the directory appears only complete, and replaces only what the plan allows.
    public func write(to output: OutputPlan) throws {
        let page = html()
        try output.write { temporary in
            let file = temporary + "/index.html"
            guard FileManager.default.createFile(atPath: file, contents: Data(page.utf8)) else {
                throw CheckpointError.writeFailed(path: file, reason: "cannot create the file; check permissions and free space")
            }
        }
    }

    /// The page, UTF-8 HTML5.
    public func html() -> String {
        let r = report
        var body = "<h1>mla-verify report</h1>\n"
        body += "<p class=\"models\">original <b>\(escapeHTML(originalPath))</b><br>converted <b>\(escapeHTML(convertedPath))</b></p>\n"
        body += "<p class=\"verdict\">\(escapeHTML(r.verdict))</p>\n"
        body += "<h2>Summary</h2>\n" + summaryTable()
        body += "<h2>Per-layer drift (teacher-forced)</h2>\n"
        body += "<p class=\"note\">Both attentions get the original model's attention input. Lower is better; exact conversions sit at float rounding (about 1e-7).</p>\n"
        body += driftFigure(title: "Attention output per layer", relativeErrors: r.layers.map(\.relativeError), cosines: r.layers.map(\.cosine))
        body += valuesSection()
        body += "<h2>Conversion: KV rank and energy retained</h2>\n" + metadataSection()
        body += "<h2>KL(original ‖ converted) per position</h2>\n" + klSection()
        body += "<h2>MLA core: absorbed vs naive</h2>\n" + mlaCoreSection()
        body += "<h2>Per layer</h2>\n" + layerTable()
        body += "<footer>mla-verify \(escapeHTML(ToolkitVersion.string)) · \(r.tokens) tokens scored · \(String(format: "%.1f", r.seconds)) s</footer>\n"
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>mla-verify report</title>
            <style>\(Self.css)</style>
            </head>
            <body>
            <main>
            \(body)</main>
            </body>
            </html>

            """
    }

    // MARK: - Tables

    /// A numeric cell tied to the JSON: `key` is the JSON path, `value` the JSON number, `text` what is shown.
    private func cell(_ key: String, _ value: JSONValue, _ text: String, span: Int = 1) -> String {
        let colspan = span > 1 ? " colspan=\"\(span)\"" : ""
        return "<td\(colspan) data-key=\"\(escapeHTML(key))\" data-value=\"\(escapeHTML(value.description))\">\(escapeHTML(text))</td>"
    }

    private func summaryTable() -> String {
        let r = report
        let ratio = r.converted.perplexity / r.original.perplexity
        let o = r.originalCacheValuesPerToken, c = r.convertedCacheValuesPerToken
        var rows = [
            "<tr><th>measure</th><th>original</th><th>converted</th><th>change</th></tr>",
            "<tr><td>perplexity</td>" + cell("original.perplexity", JSONValue(r.original.perplexity), fixed(r.original.perplexity))
                + cell("converted.perplexity", JSONValue(r.converted.perplexity), fixed(r.converted.perplexity))
                + cell("perplexity_ratio", JSONValue(ratio), String(format: "×%.4f (%+.2f %%)", ratio, 100 * (ratio - 1))) + "</tr>",
            "<tr><td>top-1 accuracy</td>" + cell("original.top1", JSONValue(r.original.top1), fixed(r.original.top1))
                + cell("converted.top1", JSONValue(r.converted.top1), fixed(r.converted.top1))
                + cell("top1_agreement", JSONValue(r.top1Agreement), "agreement " + fixed(r.top1Agreement)) + "</tr>",
            "<tr><td>KV cache values / token</td>" + cell("kv_cache.original_values_per_token", JSONValue(o), "\(o)")
                + cell("kv_cache.converted_values_per_token", JSONValue(c), "\(c)")
                + cell("kv_cache.reduction", JSONValue(r.cacheReduction), String(format: "%.1f %% smaller", 100 * r.cacheReduction)) + "</tr>",
            "<tr><td>KV cache bytes / token (BF16)</td>" + cell("kv_cache.original_bytes_per_token_bf16", JSONValue(o * 2), "\(o * 2)")
                + cell("kv_cache.converted_bytes_per_token_bf16", JSONValue(c * 2), "\(c * 2)") + "<td></td></tr>",
            "<tr><td>KL(original ‖ converted), nats</td>" + cell("kl.mean", JSONValue(r.klMean), "mean " + scientific(r.klMean))
                + cell("kl.p95", JSONValue(r.klP95), "p95 " + scientific(r.klP95)) + cell("kl.max", JSONValue(r.klMax), "max " + scientific(r.klMax)) + "</tr>",
            "<tr><td>tokens scored</td>" + cell("tokens", JSONValue(r.tokens), "\(r.tokens)", span: 3) + "</tr>",
        ]
        if let core = r.mlaCore {
            rows.append("<tr><td>MLA absorbed vs naive (logits, max rel)</td>"
                        + cell("mla_core.absorbed_vs_naive_max_rel", JSONValue(core.logitsMaxRelative), scientific(core.logitsMaxRelative), span: 3) + "</tr>")
        }
        rows.append("<tr><td>time</td>" + cell("seconds", JSONValue(r.seconds), String(format: "%.1f s", r.seconds), span: 3) + "</tr>")
        return "<table class=\"summary\">\n" + rows.joined(separator: "\n") + "\n</table>\n"
    }

    private func layerTable() -> String {
        var rows = ["<tr><th>layer</th><th>rel error</th><th>cosine</th><th>values rel error</th><th>values cosine</th>"
                    + "<th>absorbed vs naive</th><th>kv rank</th><th>kv energy</th><th>rope energy</th></tr>"]
        for (i, d) in report.layers.enumerated() {
            var row = "<tr><td>\(d.layer)</td>"
            row += cell("layers[\(i)].rel_error", JSONValue(d.relativeError), scientific(d.relativeError))
            row += cell("layers[\(i)].cosine", JSONValue(d.cosine), String(format: "%.8f", d.cosine))
            row += d.valuesRelativeError.map { cell("layers[\(i)].values_rel_error", JSONValue($0), scientific($0)) } ?? "<td>–</td>"
            row += d.valuesCosine.map { cell("layers[\(i)].values_cosine", JSONValue($0), String(format: "%.8f", $0)) } ?? "<td>–</td>"
            if let core = report.mlaCore, d.layer < core.layerMaxRelative.count {
                let x = core.layerMaxRelative[d.layer]
                row += cell("mla_core.layers_absorbed_vs_naive_max_rel[\(d.layer)]", JSONValue(x), scientific(x))
            } else {
                row += "<td>–</td>"
            }
            let entry = metadata.flatMap { d.layer < $0.layers.count ? $0.layers[d.layer] : nil }
            row += "<td>\(entry.map { "\($0.kvRank)" } ?? "–")</td>"
            row += "<td>\(entry?.kvEnergyRetained.map { String(format: "%.4f", $0) } ?? "–")</td>"
            row += "<td>\(entry?.ropeEnergyRetained.map { String(format: "%.4f", $0) } ?? "–")</td>"
            rows.append(row + "</tr>")
        }
        return "<table class=\"layers\">\n" + rows.joined(separator: "\n") + "\n</table>\n"
    }

    // MARK: - Figures

    private static let blue = "#3b6fb6", orange = "#d9822b", green = "#3a9a5b", grey = "#6b7280", red = "#c2413b"

    /// A figure with a caption around an SVG chart or a placeholder text.
    private func figure(_ caption: String, _ content: String, note: String? = nil) -> String {
        "<figure><figcaption>\(escapeHTML(caption))</figcaption>\n\(content)\n"
            + (note.map { "<p class=\"note\">\(escapeHTML($0))</p>" } ?? "") + "</figure>\n"
    }

    private func placeholder(_ text: String) -> String { "<div class=\"empty\">\(escapeHTML(text))</div>" }

    /// An x axis with one band per entry of `layers` (positions 0..<count), labelled with the layer numbers.
    private func layerAxis(_ layers: [Int]) -> SVGChart.Axis {
        let every = max(1, (layers.count + 39) / 40)
        return SVGChart.Axis(scale: .linear(lower: -0.5, upper: Double(layers.count) - 0.5), label: "layer",
                             ticks: stride(from: 0, to: layers.count, by: every).map { (Double($0), "\(layers[$0])") })
    }

    /// Marks at the layer bands of `layers` for `values` (nil entries are skipped).
    private func layerMarks(_ layers: [Int], _ values: [Double?], _ tooltip: (Int, Double) -> String) -> [SVGChart.Mark] {
        zip(layers, values).enumerated().compactMap { position, pair in
            pair.1.map { SVGChart.Mark(x0: Double(position) - 0.4, x1: Double(position) + 0.4, y: $0, key: "\(pair.0)", tooltip: tooltip(pair.0, $0)) }
        }
    }

    /// Relative error (bars) and 1 − cosine (line) per layer on one log axis. Cosines of near-exact
    /// layers differ from 1 only in the 7th digit, so 1 − cosine on a log scale is what shows them.
    private func driftFigure(title: String, relativeErrors: [Double?], cosines: [Double?]) -> String {
        let layers = report.layers.map(\.layer)
        let distance = cosines.map { $0.map { 1 - $0 } }
        let chart = SVGChart(
            x: layerAxis(layers),
            y: .init(scale: .log(covering: (relativeErrors + distance).compactMap { $0 }), label: "log scale", ticks: nil),
            series: [
                .init(name: "relative error", style: .bars, color: Self.blue,
                      marks: layerMarks(layers, relativeErrors) { "layer \($0): relative error \(scientific($1))" }),
                .init(name: "1 − cosine", style: .line, color: Self.orange,
                      marks: layerMarks(layers, distance) { "layer \($0): cosine \(String(format: "%.9f", 1 - $1))" }),
            ],
            title: title)
        let zeros = relativeErrors.filter { $0 == 0 }.count
        let note = "Bars: relative error ‖converted − original‖ / ‖original‖ over all tokens; line: 1 − cosine. Log scale."
            + (zeros == 0 ? "" : zeros == layers.count ? " The outputs are bitwise identical in every layer (drawn at the floor)."
                : " \(zeros) of \(layers.count) layers are exactly 0 (drawn at the floor).")
        return figure(title, chart.svg(), note: note)
    }

    private func valuesSection() -> String {
        let layers = report.layers
        let note = "Keys are not compared: MLA splits them into a latent part and RoPE key heads in another layout, with no one-to-one source counterpart."
        guard layers.contains(where: { $0.valuesRelativeError != nil }) else {
            return figure("Values v_h per layer", placeholder("values not comparable: the two models' head counts or value widths differ"), note: note)
        }
        return driftFigure(title: "Values v_h per layer (converted W_UV,h ĉ vs source v_j(h))",
                           relativeErrors: layers.map(\.valuesRelativeError), cosines: layers.map(\.valuesCosine))
            + "<p class=\"note\">\(escapeHTML(note))</p>\n"
    }

    private func metadataSection() -> String {
        guard let metadata, !metadata.layers.isEmpty else {
            return figure("KV rank per layer", placeholder("no conversion metadata (the converted model has no mla_convert.layers in config.json and no mla_convert.json)"))
        }
        let layers = Array(0..<metadata.layers.count)
        let ranks = metadata.layers.map { Double($0.kvRank) }
        let rankChart = SVGChart(
            x: layerAxis(layers), y: .init(scale: .linear(covering: ranks, lower: 0), label: "kv rank r", ticks: nil),
            series: [.init(name: "kv rank", style: .bars, color: Self.blue,
                           marks: layerMarks(layers, ranks) { "layer \($0): kv rank \(Int($1))" })],
            title: "KV rank per layer")
        var out = figure("KV rank per layer (from \(metadata.file))", rankChart.svg())
        let kv = metadata.layers.map(\.kvEnergyRetained), rope = metadata.layers.map(\.ropeEnergyRetained)
        let present = (kv + rope).compactMap { $0 }
        guard !present.isEmpty else {
            return out + figure("Energy retained per layer", placeholder("the conversion metadata records no energy retained"))
        }
        var series: [SVGChart.Series] = []
        if kv.contains(where: { $0 != nil }) {
            series.append(.init(name: "kv energy retained", style: .line, color: Self.blue,
                                marks: layerMarks(layers, kv) { "layer \($0): kv energy retained \(String(format: "%.6f", $1))" }))
        }
        if rope.contains(where: { $0 != nil }) {
            series.append(.init(name: "rope energy retained", style: .line, color: Self.green,
                                marks: layerMarks(layers, rope) { "layer \($0): rope energy retained \(String(format: "%.6f", $1))" }))
        }
        let energyChart = SVGChart(
            x: layerAxis(layers), y: .init(scale: .linear(covering: present, upper: 1), label: "fraction retained", ticks: nil),
            series: series, title: "Energy retained per layer")
        out += figure("Energy retained per layer (fraction of the energy the conversion keeps)", energyChart.svg())
        return out
    }

    /// Bins per decade of the KL histogram.
    static let klBinsPerDecade = 4

    private func klSection() -> String {
        let values = report.klValues
        let positive = values.filter { $0 > 0 }
        let zeros = values.count - positive.count
        guard !positive.isEmpty else {
            return figure("KL histogram", placeholder("all \(values.count) KL values are exactly 0: the next-token distributions are identical"))
        }
        let scale = SVGChart.Scale.log(covering: positive)
        guard case let .log(lower, upper) = scale else { return "" }
        let perDecade = Self.klBinsPerDecade, bins = (upper - lower) * perDecade
        var counts = [Int](repeating: 0, count: bins)
        for v in positive {
            let bin = Int(((log10(v) - Double(lower)) * Double(perDecade)).rounded(.down))
            counts[min(bins - 1, max(0, bin))] += 1
        }
        func edge(_ i: Int) -> Double { pow(10, Double(lower) + Double(i) / Double(perDecade)) }
        let marks = counts.enumerated().filter { $0.element > 0 }.map { i, count in
            SVGChart.Mark(x0: edge(i), x1: edge(i + 1), y: Double(count), key: "\(i)",
                          tooltip: "\(count) positions with KL in [\(scientific(edge(i))), \(scientific(edge(i + 1))))")
        }
        func rule(_ name: String, _ x: Double) -> SVGChart.Series {
            .init(name: "\(name) \(scientific(x))", style: .rule, color: name == "mean" ? Self.orange : name == "p95" ? Self.red : Self.grey,
                  marks: [.init(x0: x, x1: x, y: 0, key: name, tooltip: "\(name) \(scientific(x)) nats")])
        }
        let chart = SVGChart(
            x: .init(scale: scale, label: "KL (nats, log scale, \(perDecade) bins per decade)", ticks: nil),
            y: .init(scale: .linear(covering: counts.map(Double.init), lower: 0), label: "positions", ticks: nil),
            series: [.init(name: "positions", style: .bars, color: Self.blue, marks: marks)]
                + [("mean", report.klMean), ("p95", report.klP95), ("max", report.klMax)].filter { $0.1 > 0 }.map { rule($0.0, $0.1) },
            title: "KL histogram")
        let note = zeros > 0 ? "\(zeros) of \(values.count) values are exactly 0 and are not on the log axis." : nil
        return figure("Distribution of KL(p_original ‖ p_converted) over \(values.count) predicted positions", chart.svg(), note: note)
    }

    private func mlaCoreSection() -> String {
        guard let core = report.mlaCore else {
            return figure("Absorbed vs naive", placeholder("not checked: the converted model has no MLA attention"))
        }
        let layers = Array(0..<core.layerMaxRelative.count)
        let chart = SVGChart(
            x: layerAxis(layers),
            y: .init(scale: .log(covering: core.layerMaxRelative + [core.logitsMaxRelative]), label: "log scale", ticks: nil),
            series: [.init(name: "attention output max rel diff", style: .bars, color: Self.blue,
                           marks: layerMarks(layers, core.layerMaxRelative) { "layer \($0): \(scientific($1))" })],
            title: "Absorbed vs naive per layer")
        return figure("Absorbed vs naive MLA per layer", chart.svg(),
                      note: "First window (\(core.tokens) tokens). Logits: max |a − n| / max |n| = \(scientific(core.logitsMaxRelative)), "
                        + "each form running the whole model; per layer: the attention output of both forms on the same input. "
                        + "Float rounding is about 1e-7 to 1e-6.")
    }

    // MARK: - Formatting

    private func fixed(_ x: Double) -> String { String(format: "%.4f", x) }

    private static let css = """
        body{margin:0;background:#f3f4f6;color:#1d2330;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
        main{max-width:1100px;margin:0 auto;padding:22px 30px 36px;background:#fff;box-sizing:border-box}
        h1{font-size:25px;margin:0 0 6px}
        h2{font-size:18px;margin:30px 0 8px;padding-bottom:4px;border-bottom:1px solid #dde1e7}
        .models{margin:0 0 12px;color:#4b5563;font:13px/1.5 ui-monospace,"DejaVu Sans Mono",monospace;overflow-wrap:anywhere}
        .verdict{margin:0;padding:10px 14px;background:#eef4ff;border-left:4px solid #3b6fb6;font-weight:600}
        table{border-collapse:collapse;font-variant-numeric:tabular-nums}
        th,td{padding:4px 12px;border-bottom:1px solid #e6e8ec;text-align:right;white-space:nowrap}
        th{background:#f7f8fa;font-weight:600}
        th:first-child,td:first-child{text-align:left}
        table.layers{font-size:13px}
        figure{margin:12px 0 20px}
        figcaption{font-weight:600;margin-bottom:4px}
        .note{color:#4b5563;font-size:13px;margin:4px 0}
        .empty{padding:28px;text-align:center;color:#6b7280;border:1px dashed #c8ccd3;border-radius:4px}
        svg.chart{display:block;width:100%;height:auto}
        svg .grid{stroke:#e8eaee}
        svg .axis,svg .tickmark{stroke:#374151}
        svg .tick,svg .legend-text{font-size:12px;fill:#374151}
        svg .label{font-size:13px;fill:#1f2937}
        footer{margin-top:26px;color:#6b7280;font-size:12px}
        """
}

/// "1.23e-05".
func scientific(_ x: Double) -> String { String(format: "%.2e", x) }
