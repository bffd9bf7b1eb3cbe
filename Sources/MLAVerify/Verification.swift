import Foundation
import MLACheckpoint
import MLARuntime

/// Drift of one layer's attention, teacher-forced: both attentions get the original model's input.
public struct LayerDrift: Sendable {
    public let layer: Int
    /// ‖a_conv − a_orig‖ / ‖a_orig‖ over all tokens (Frobenius).
    public let relativeError: Double
    /// Cosine similarity of the flattened outputs.
    public let cosine: Double
}

/// Everything `mla-verify ORIGINAL CONVERTED` measures.
public struct VerificationReport: Sendable {
    public let tokens: Int
    public let original: PerplexityStats
    public let converted: PerplexityStats
    /// KL(p_original ‖ p_converted) per predicted position, nats: mean, 95th percentile, max.
    public let klMean: Double, klP95: Double, klMax: Double
    /// Every KL value, for plots.
    public let klValues: [Double]
    /// Fraction of positions where both models' argmax agree.
    public let top1Agreement: Double
    public let layers: [LayerDrift]
    public let originalCacheValuesPerToken: Int
    public let convertedCacheValuesPerToken: Int
    public let seconds: Double

    public struct PerplexityStats: Sendable {
        public let perplexity: Double
        public let nll: Double
        public let top1: Double
    }
}

public enum VerificationError: Error, CustomStringConvertible, Sendable {
    case mismatch(what: String, original: Int, converted: Int)

    public var description: String {
        switch self {
        case let .mismatch(what, o, c):
            return "the models do not correspond: \(what) is \(o) in ORIGINAL and \(c) in CONVERTED"
        }
    }
}

/// Compares `converted` with `original` on `tokens` split into independent windows of `window`.
/// Per layer (those in `layers`, all when nil) the converted attention is fed the original model's
/// attention input and compared with the original attention output; end to end each model runs on
/// its own. `progress(done, total)` is called after each window.
public func verify(original: DecoderModel, converted: DecoderModel, tokens: [Int], window: Int, layers: Set<Int>? = nil,
                   progress: ((Int, Int) -> Void)? = nil) throws -> VerificationReport {
    let o = original.config, c = converted.config
    for (what, a, b) in [("vocab_size", o.vocabSize, c.vocabSize), ("num_hidden_layers", o.numLayers, c.numLayers),
                         ("hidden_size", o.hiddenSize, c.hiddenSize)] where a != b {
        throw VerificationError.mismatch(what: what, original: a, converted: b)
    }
    let start = Date()
    let selected = layers ?? Set(0..<o.numLayers)
    var diff = [Double](repeating: 0, count: o.numLayers), norm = diff, convNorm = diff, dot = diff
    var kl: [Double] = []
    var nllO = 0.0, nllC = 0.0, hitsO = 0, hitsC = 0, agree = 0
    let v = o.vocabSize
    let starts = Array(stride(from: 0, to: tokens.count, by: window))
    for (w, s) in starts.enumerated() {
        let chunk = Array(tokens[s..<min(s + window, tokens.count)])
        guard chunk.count >= 2 else { continue }
        let hooks = LayerHooks(attentionOutput: { layer, x, output, t in
            guard selected.contains(layer) else { return nil }
            let mine = try converted.attention[layer].forward(x, tokens: t)
            for i in 0..<output.count {
                let a = Double(output[i]), b = Double(mine[i])
                diff[layer] += (a - b) * (a - b)
                norm[layer] += a * a
                convNorm[layer] += b * b
                dot[layer] += a * b
            }
            return nil
        })
        let lo = try original.logits(chunk, hooks: hooks)
        let lc = try converted.logits(chunk)
        for p in 0..<(chunk.count - 1) {
            let ro = Array(lo[(p * v)..<((p + 1) * v)]), rc = Array(lc[(p * v)..<((p + 1) * v)])
            let (lpo, ao) = logSoftmax(ro), (lpc, ac) = logSoftmax(rc)
            var k = 0.0
            for i in 0..<v where lpo[i] > -60 { k += exp(lpo[i]) * (lpo[i] - lpc[i]) }
            kl.append(max(k, 0))
            let next = chunk[p + 1]
            nllO -= lpo[next]
            nllC -= lpc[next]
            if ao == next { hitsO += 1 }
            if ac == next { hitsC += 1 }
            if ao == ac { agree += 1 }
        }
        progress?(w + 1, starts.count)
    }
    guard !kl.isEmpty else { throw RuntimeError.emptyInput("the evaluation text (need at least 2 tokens)") }
    let n = Double(kl.count)
    let sorted = kl.sorted()
    let drift = selected.sorted().map { l in
        LayerDrift(layer: l, relativeError: (diff[l] / max(norm[l], .leastNonzeroMagnitude)).squareRoot(),
                   cosine: dot[l] / max((norm[l] * convNorm[l]).squareRoot(), .leastNonzeroMagnitude))
    }
    return VerificationReport(
        tokens: kl.count,
        original: .init(perplexity: exp(nllO / n), nll: nllO / n, top1: Double(hitsO) / n),
        converted: .init(perplexity: exp(nllC / n), nll: nllC / n, top1: Double(hitsC) / n),
        klMean: kl.reduce(0, +) / n, klP95: sorted[min(sorted.count - 1, Int((0.95 * n).rounded(.up)) - 1)],
        klMax: sorted.last ?? 0, klValues: kl, top1Agreement: Double(agree) / n, layers: drift,
        originalCacheValuesPerToken: o.kvCacheValuesPerToken, convertedCacheValuesPerToken: c.kvCacheValuesPerToken,
        seconds: Date().timeIntervalSince(start))
}

/// Log-probabilities of a logit row (Double) and its argmax.
func logSoftmax(_ row: [Float]) -> ([Double], Int) {
    var best = 0
    for i in 1..<row.count where row[i] > row[best] { best = i }
    let m = Double(row[best])
    let logZ = m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) })
    return (row.map { Double($0) - logZ }, best)
}

extension VerificationReport {
    /// The `--json` object (keys documented in `mla-verify --help`).
    public var json: JSONValue {
        func stats(_ s: PerplexityStats) -> JSONValue {
            .object([("perplexity", JSONValue(s.perplexity)), ("nll", JSONValue(s.nll)), ("top1", JSONValue(s.top1))])
        }
        return .object([
            ("tokens", JSONValue(tokens)),
            ("original", stats(original)), ("converted", stats(converted)),
            ("perplexity_ratio", JSONValue(converted.perplexity / original.perplexity)),
            ("kl", .object([("mean", JSONValue(klMean)), ("p95", JSONValue(klP95)), ("max", JSONValue(klMax))])),
            ("top1_agreement", JSONValue(top1Agreement)),
            ("kv_cache", .object([
                ("original_values_per_token", JSONValue(originalCacheValuesPerToken)),
                ("converted_values_per_token", JSONValue(convertedCacheValuesPerToken)),
                ("original_bytes_per_token_bf16", JSONValue(originalCacheValuesPerToken * 2)),
                ("converted_bytes_per_token_bf16", JSONValue(convertedCacheValuesPerToken * 2)),
                ("reduction", JSONValue(1 - Double(convertedCacheValuesPerToken) / Double(originalCacheValuesPerToken))),
            ])),
            ("layers", .array(layers.map {
                .object([("layer", JSONValue($0.layer)), ("rel_error", JSONValue($0.relativeError)), ("cosine", JSONValue($0.cosine))])
            })),
            ("seconds", JSONValue(seconds)),
        ])
    }
}
