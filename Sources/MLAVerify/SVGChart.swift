import Foundation

/// One figure of the HTML report as an inline SVG: a plot area with gridlines, tick labels, axis labels,
/// a legend, and series of bars, lines with point markers, or vertical rules. Mark coordinates are in
/// data units and mapped through each axis's `Scale`; the drawing is `width × height` SVG user units
/// and scales to the page width through its viewBox. No scripts, fonts or external references: every
/// mark carries its exact value in a `<title>` tooltip.
///
/// Every bar and point is an element with `class="mark"`, `data-series` (the series name) and
/// `data-key` (the mark's key, e.g. the layer index), so a reader or a test can count them.
struct SVGChart {
    /// How data values map onto an axis.
    enum Scale: Equatable {
        /// Linear from `lower` to `upper`.
        case linear(lower: Double, upper: Double)
        /// log10 from 10^lowerExponent to 10^upperExponent (whole decades); values ≤ 0 sit at the
        /// lower edge.
        case log(lowerExponent: Int, upperExponent: Int)

        /// Position of `value` along the axis, 0 at the lower end and 1 at the upper, clamped.
        func fraction(_ value: Double) -> Double {
            let f: Double
            switch self {
            case let .linear(lower, upper):
                f = (value - lower) / (upper - lower)
            case let .log(lowerExponent, upperExponent):
                guard value > 0 else { return 0 }
                f = (log10(value) - Double(lowerExponent)) / Double(upperExponent - lowerExponent)
            }
            return f.isFinite ? min(1, max(0, f)) : 0
        }

        /// Tick values and labels: every decade (thinned to at most 8) for log, 1/2/5·10^k steps for
        /// linear.
        var ticks: [(value: Double, label: String)] {
            switch self {
            case let .linear(lower, upper):
                let step = Self.niceStep((upper - lower) / 5)
                let decimals = max(0, -Int(log10(step).rounded(.down)))
                let first = Int((lower / step - 1e-9).rounded(.up)), last = Int((upper / step + 1e-9).rounded(.down))
                guard first <= last else { return [] }
                return (first...last).map { k in (Double(k) * step, String(format: "%.\(decimals)f", Double(k) * step)) }
            case let .log(lowerExponent, upperExponent):
                let every = max(1, (upperExponent - lowerExponent + 7) / 8)
                return stride(from: lowerExponent, through: upperExponent, by: every).map { (pow(10, Double($0)), "1e\($0)") }
            }
        }

        /// The smallest 1, 2 or 5 × 10^k at least `rough` (rough > 0).
        static func niceStep(_ rough: Double) -> Double {
            guard rough > 0, rough.isFinite else { return 1 }
            let magnitude = pow(10, log10(rough).rounded(.down))
            return [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough * (1 - 1e-12) } ?? 10 * magnitude
        }

        /// Whole decades covering the positive `values` (at least one decade, at most `maxDecades`
        /// ending at the largest value); 1e-8...1 when none is positive.
        static func log(covering values: [Double], maxDecades: Int = 12) -> Scale {
            let positive = values.filter { $0 > 0 && $0.isFinite }
            guard let smallest = positive.min(), let largest = positive.max() else {
                return .log(lowerExponent: -8, upperExponent: 0)
            }
            let upper = Int(log10(largest).rounded(.up))
            var lower = Int(log10(smallest).rounded(.down))
            lower = max(min(lower, upper - 1), upper - maxDecades)
            return .log(lowerExponent: lower, upperExponent: upper)
        }

        /// Linear bounds covering `values` on a nice step; a given `lower` or `upper` is kept as is.
        /// A degenerate range is widened downwards by 10 % of the upper bound (or by 1 at 0).
        static func linear(covering values: [Double], lower fixedLower: Double? = nil, upper fixedUpper: Double? = nil) -> Scale {
            let finite = values.filter(\.isFinite)
            var lower = fixedLower ?? finite.min() ?? 0, upper = fixedUpper ?? finite.max() ?? 1
            if upper - lower <= 0 {
                let widen = upper == 0 ? 1 : abs(upper) * 0.1
                if fixedLower == nil { lower = upper - widen } else { upper = lower + widen }
            }
            let step = niceStep((upper - lower) / 5)
            // The 1e-9 slack keeps a bound that is already a multiple of the step (0.9 / 0.02 = 44.99…) in place.
            if fixedLower == nil { lower = (lower / step + 1e-9).rounded(.down) * step }
            if fixedUpper == nil { upper = (upper / step - 1e-9).rounded(.up) * step }
            return .linear(lower: lower, upper: upper)
        }
    }

    /// An axis: its scale, its label, and optionally explicit ticks (e.g. layer numbers).
    struct Axis {
        var scale: Scale
        var label: String
        var ticks: [(value: Double, label: String)]?
    }

    /// One bar (from `x0` to `x1`, up from the axis floor to `y`), line point or rule (both at the
    /// middle of `x0...x1`).
    struct Mark {
        var x0: Double
        var x1: Double
        var y: Double
        /// `data-key` of the element (a layer index, a bin).
        var key: String
        /// The tooltip text (`<title>`).
        var tooltip: String
    }

    enum Style {
        /// Filled rectangles; several bar series share each x band side by side.
        case bars
        /// A polyline through the points, with a marker per point.
        case line
        /// Vertical dashed lines across the plot area (y is ignored); not marks.
        case rule
    }

    struct Series {
        /// Legend text and `data-series`.
        var name: String
        var style: Style
        /// Any CSS colour.
        var color: String
        var marks: [Mark]
    }

    var x: Axis
    var y: Axis
    var series: [Series]
    /// Accessible name of the figure.
    var title: String
    var width = 1000.0
    var height = 240.0

    /// Plot-area margins: room for tick labels and axis labels (left, bottom), the legend (top) and
    /// half a tick label past the last tick (right).
    private let left = 78.0, right = 30.0, top = 30.0, bottom = 46.0

    /// The x position in SVG units of a data x.
    private func px(_ value: Double) -> Double { left + x.scale.fraction(value) * (width - left - right) }
    /// The y position in SVG units of a data y.
    private func py(_ value: Double) -> Double { height - bottom - y.scale.fraction(value) * (height - top - bottom) }

    /// The `<svg>` element.
    func svg() -> String {
        var out = "<svg class=\"chart\" viewBox=\"0 0 \(n(width)) \(n(height))\" role=\"img\" aria-label=\"\(escapeHTML(title))\">\n"
        out += "<title>\(escapeHTML(title))</title>\n"
        out += axes()
        let barSeries = series.filter { $0.style == .bars }
        for s in series {
            switch s.style {
            case .bars:
                let slot = barSeries.firstIndex { $0.name == s.name } ?? 0
                out += bars(s, slot: slot, of: barSeries.count)
            case .line: out += line(s)
            case .rule: out += rules(s)
            }
        }
        out += legend()
        out += "</svg>"
        return out
    }

    private func axes() -> String {
        let x0 = left, x1 = width - right, y0 = height - bottom, y1 = top
        var out = "<g class=\"axes\">\n"
        for tick in y.ticks ?? y.scale.ticks {
            let yy = py(tick.value)
            out += "<line class=\"grid\" x1=\"\(n(x0))\" x2=\"\(n(x1))\" y1=\"\(n(yy))\" y2=\"\(n(yy))\"/>"
            out += "<text class=\"tick\" x=\"\(n(x0 - 6))\" y=\"\(n(yy + 4))\" text-anchor=\"end\">\(escapeHTML(tick.label))</text>\n"
        }
        for tick in x.ticks ?? x.scale.ticks {
            let xx = px(tick.value)
            out += "<line class=\"tickmark\" x1=\"\(n(xx))\" x2=\"\(n(xx))\" y1=\"\(n(y0))\" y2=\"\(n(y0 + 4))\"/>"
            out += "<text class=\"tick\" x=\"\(n(xx))\" y=\"\(n(y0 + 17))\" text-anchor=\"middle\">\(escapeHTML(tick.label))</text>\n"
        }
        out += "<line class=\"axis\" x1=\"\(n(x0))\" x2=\"\(n(x1))\" y1=\"\(n(y0))\" y2=\"\(n(y0))\"/>"
        out += "<line class=\"axis\" x1=\"\(n(x0))\" x2=\"\(n(x0))\" y1=\"\(n(y0))\" y2=\"\(n(y1))\"/>\n"
        out += "<text class=\"label\" x=\"\(n((x0 + x1) / 2))\" y=\"\(n(height - 8))\" text-anchor=\"middle\">\(escapeHTML(x.label))</text>\n"
        let my = (y0 + y1) / 2
        out += "<text class=\"label\" x=\"16\" y=\"\(n(my))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(n(my)))\">\(escapeHTML(y.label))</text>\n"
        return out + "</g>\n"
    }

    private func bars(_ s: Series, slot: Int, of count: Int) -> String {
        // A hairline white outline separates adjacent bars (histogram bins).
        var out = "<g class=\"series\" fill=\"\(s.color)\" stroke=\"#fff\" stroke-width=\"0.5\">\n"
        let floor = height - bottom
        for m in s.marks {
            let a = px(m.x0), b = px(m.x1), w = (b - a) / Double(count)
            let top = py(m.y)
            // A value at or below the axis floor (0 on a log axis) still gets a visible 2-unit stub.
            let h = max(2, floor - top)
            out += "<rect class=\"mark\" data-series=\"\(escapeHTML(s.name))\" data-key=\"\(escapeHTML(m.key))\" x=\"\(n(a + Double(slot) * w))\" y=\"\(n(floor - h))\" width=\"\(n(max(1, w)))\" height=\"\(n(h))\"><title>\(escapeHTML(m.tooltip))</title></rect>\n"
        }
        return out + "</g>\n"
    }

    private func line(_ s: Series) -> String {
        let points = s.marks.map { (px(($0.x0 + $0.x1) / 2), py($0.y)) }
        var out = "<g class=\"series\" stroke=\"\(s.color)\" fill=\"\(s.color)\">\n"
        out += "<polyline fill=\"none\" stroke-width=\"1.5\" points=\"\(points.map { "\(n($0.0)),\(n($0.1))" }.joined(separator: " "))\"/>\n"
        for (m, p) in zip(s.marks, points) {
            out += "<circle class=\"mark\" data-series=\"\(escapeHTML(s.name))\" data-key=\"\(escapeHTML(m.key))\" cx=\"\(n(p.0))\" cy=\"\(n(p.1))\" r=\"3.5\"><title>\(escapeHTML(m.tooltip))</title></circle>\n"
        }
        return out + "</g>\n"
    }

    private func rules(_ s: Series) -> String {
        var out = "<g class=\"series\" stroke=\"\(s.color)\">\n"
        for m in s.marks {
            let xx = px((m.x0 + m.x1) / 2)
            out += "<line class=\"rule\" stroke-dasharray=\"5 4\" stroke-width=\"1.5\" x1=\"\(n(xx))\" x2=\"\(n(xx))\" y1=\"\(n(top))\" y2=\"\(n(height - bottom))\"><title>\(escapeHTML(m.tooltip))</title></line>\n"
        }
        return out + "</g>\n"
    }

    /// Legend entries right-aligned above the plot area, about 7 units per character.
    private func legend() -> String {
        var out = "<g class=\"legend\">\n"
        var xx = width - right
        for s in series.reversed() {
            let textWidth = Double(s.name.count) * 7
            xx -= textWidth
            out += "<text class=\"legend-text\" x=\"\(n(xx))\" y=\"17\">\(escapeHTML(s.name))</text>"
            xx -= 18
            switch s.style {
            case .bars: out += "<rect x=\"\(n(xx))\" y=\"7\" width=\"12\" height=\"12\" fill=\"\(s.color)\"/>\n"
            case .line: out += "<circle cx=\"\(n(xx + 6))\" cy=\"13\" r=\"4\" fill=\"\(s.color)\"/>\n"
            case .rule: out += "<line x1=\"\(n(xx + 6))\" x2=\"\(n(xx + 6))\" y1=\"5\" y2=\"21\" stroke=\"\(s.color)\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>\n"
            }
            xx -= 16
        }
        return out + "</g>\n"
    }

    /// SVG coordinates with at most one decimal.
    private func n(_ v: Double) -> String { String(format: "%.1f", v) }
}

/// `text` with &, <, >, " and ' replaced by character references, for HTML text and attribute values.
func escapeHTML(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}
