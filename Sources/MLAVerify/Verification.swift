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
    /// The same two measures for the per-query-head values `[T, n_h·d_v]` (converted MLA: W_UV,h ĉ;
    /// source attention: v_j(h) of the head's KV group); nil when the two layers' head counts or value
    /// widths differ, or a layer has no per-head values. Keys are never compared: MLA splits them
    /// into a latent part and RoPE heads in another layout, with no one-to-one source counterpart.
    public let valuesRelativeError: Double?
    /// Cosine similarity of the flattened per-head values; nil when `valuesRelativeError` is.
    public let valuesCosine: Double?
}

/// Exactness of the MLA core: the converted model evaluated in the absorbed and the naive form on the
/// first window. Differences are max_i |a_i − n_i| / max_i |n_i| (a absorbed, n naive), so float
/// rounding shows as about 1e-7 to 1e-6.
public struct MLACoreCheck: Sendable {
    /// Tokens in the window.
    public let tokens: Int
    /// Over the logits `[tokens, vocab]`, each form running the whole model.
    public let logitsMaxRelative: Double
    /// Per layer, over the attention output `[tokens, d]` of both forms on the same input (the naive
    /// run's hidden states).
    public let layerMaxRelative: [Double]
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
    /// Absorbed vs naive on the converted model; nil when it has no MLA attention.
    public let mlaCore: MLACoreCheck?
    public let originalCacheValuesPerToken: Int
    public let convertedCacheValuesPerToken: Int
    public let seconds: Double

    /// 1 − converted/original KV cache values per token.
    public var cacheReduction: Double { 1 - Double(convertedCacheValuesPerToken) / Double(originalCacheValuesPerToken) }

    /// The one-line verdict: perplexity ratio, mean KL and the layer with the largest drift.
    public var verdict: String {
        let worst = layers.max { $0.relativeError < $1.relativeError }
        return String(format: "verdict: perplexity x%.3f, KL mean %.5f", converted.perplexity / original.perplexity, klMean)
            + (worst.map { String(format: ", largest drift in layer %d (%.2e)", $0.layer, $0.relativeError) } ?? "")
    }

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
/// attention input and compared with the original attention output, and so are the per-head values
/// where comparable; end to end each model runs on its own. When `converted` has MLA attention its
/// first window also runs in the other MLA form (`MLACoreCheck`). `progress(done, total)` is called
/// after each window.
public func verify(original: DecoderModel, converted: DecoderModel, tokens: [Int], window: Int, layers: Set<Int>? = nil,
                   progress: ((Int, Int) -> Void)? = nil) throws -> VerificationReport {
    let o = original.config, c = converted.config
    for (what, a, b) in [("vocab_size", o.vocabSize, c.vocabSize), ("num_hidden_layers", o.numLayers, c.numLayers),
                         ("hidden_size", o.hiddenSize, c.hiddenSize)] where a != b {
        throw VerificationError.mismatch(what: what, original: a, converted: b)
    }
    let start = Date()
    let selected = layers ?? Set(0..<o.numLayers)
    // A stock DeepSeek-V3 export carries the residual stream scaled by α (eps rescale, mla-math.md §8c):
    // embeddings and every writer are α×, the norms undo it. Attention outputs are compared after
    // dividing by α, the least-squares ratio of the two embedding tables (1 for other conversions).
    let residualScale = residualStreamScale(original: original.embedding, converted: converted.embedding)
    var outputs = [DriftSums](repeating: DriftSums(), count: o.numLayers)
    var values: [DriftSums?] = Array(repeating: DriftSums(), count: o.numLayers)
    var mlaCore: MLACoreCheck?
    var kl: [Double] = []
    var nllO = 0.0, nllC = 0.0, hitsO = 0, hitsC = 0, agree = 0
    let v = o.vocabSize
    let starts = Array(stride(from: 0, to: tokens.count, by: window))
    for (w, s) in starts.enumerated() {
        let chunk = Array(tokens[s..<min(s + window, tokens.count)])
        guard chunk.count >= 2 else { continue }
        let hooks = LayerHooks(attentionOutput: { layer, x, output, sequences in
            guard selected.contains(layer) else { return nil }
            let t = chunk.count
            let convertedOutput = try converted.attention[layer].forward(x, sequences: sequences)
            outputs[layer].add(reference: output, residualScale == 1 ? convertedOutput : convertedOutput.map { $0 / residualScale })
            if values[layer] != nil {
                if let vc = try perHeadValues(converted.attention[layer], x: x, tokens: t),
                   let vo = try perHeadValues(original.attention[layer], x: x, tokens: t),
                   vc.heads == vo.heads, vc.width == vo.width {
                    values[layer]?.add(reference: vo.values, vc.values)
                } else {
                    values[layer] = nil
                }
            }
            return nil
        })
        let lo = try original.logits(chunk, hooks: hooks)
        let lc = try converted.logits(chunk)
        if w == 0 { mlaCore = try mlaCoreCheck(converted, tokens: chunk, logits: lc) }
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
        LayerDrift(layer: l, relativeError: outputs[l].relativeError, cosine: outputs[l].cosine,
                   valuesRelativeError: values[l]?.relativeError, valuesCosine: values[l]?.cosine)
    }
    return VerificationReport(
        tokens: kl.count,
        original: .init(perplexity: exp(nllO / n), nll: nllO / n, top1: Double(hitsO) / n),
        converted: .init(perplexity: exp(nllC / n), nll: nllC / n, top1: Double(hitsC) / n),
        klMean: kl.reduce(0, +) / n, klP95: sorted[min(sorted.count - 1, Int((0.95 * n).rounded(.up)) - 1)],
        klMax: sorted.last ?? 0, klValues: kl, top1Agreement: Double(agree) / n, layers: drift, mlaCore: mlaCore,
        originalCacheValuesPerToken: o.kvCacheValuesPerToken, convertedCacheValuesPerToken: c.kvCacheValuesPerToken,
        seconds: Date().timeIntervalSince(start))
}

/// Running sums for the relative error and cosine of a converted tensor against its reference, over
/// any number of chunks (Double accumulation).
struct DriftSums {
    var difference = 0.0, referenceNorm = 0.0, convertedNorm = 0.0, dot = 0.0

    mutating func add(reference: [Float], _ converted: [Float]) {
        for i in 0..<min(reference.count, converted.count) {
            let a = Double(reference[i]), b = Double(converted[i])
            difference += (a - b) * (a - b)
            referenceNorm += a * a
            convertedNorm += b * b
            dot += a * b
        }
    }

    /// ‖converted − reference‖ / ‖reference‖.
    var relativeError: Double { (difference / max(referenceNorm, .leastNonzeroMagnitude)).squareRoot() }
    var cosine: Double { dot / max((referenceNorm * convertedNorm).squareRoot(), .leastNonzeroMagnitude) }
}

/// Per-query-head values of `block` on its input `x` `[tokens, d]`: `values` `[tokens, heads·width]`,
/// head h in columns [h·width, (h+1)·width). Source attention repeats each KV head's v for the query
/// heads of its group; MLA expands W_UV,h ĉ. Nil for other attention blocks.
func perHeadValues(_ block: any AttentionBlock, x: [Float], tokens: Int) throws -> (values: [Float], heads: Int, width: Int)? {
    switch block {
    case let mla as MLAAttentionBlock:
        return (try MLAAttention.values(mla.weights, x: x, tokens: tokens), mla.weights.numHeads, mla.weights.dV)
    case let source as SourceAttention:
        let dh = source.headDim, kvWidth = source.numKVHeads * dh, width = source.numHeads * dh
        let group = source.numHeads / source.numKVHeads
        let v = Kernels.linear(x, tokens: tokens, weight: source.wv, outFeatures: kvWidth, inFeatures: source.hiddenSize, bias: source.bv)
        var out = [Float](repeating: 0, count: tokens * width)
        for t in 0..<tokens {
            for h in 0..<source.numHeads {
                let from = t * kvWidth + (h / group) * dh, to = t * width + h * dh
                out.replaceSubrange(to..<(to + dh), with: v[from..<(from + dh)])
            }
        }
        return (out, source.numHeads, dh)
    default:
        return nil
    }
}

/// Runs `model` (MLA attention in every layer) on `tokens` in the other MLA form: each layer's
/// attention output is replaced by the other form's on the same input, and the result is compared
/// with `logits` `[tokens, vocab]`, the model's own run. Nil when a layer is not MLA.
func mlaCoreCheck(_ model: DecoderModel, tokens: [Int], logits: [Float]) throws -> MLACoreCheck? {
    let blocks = model.attention.compactMap { $0 as? MLAAttentionBlock }
    guard !blocks.isEmpty, blocks.count == model.attention.count else { return nil }
    var layerDifference = [Double](repeating: 0, count: blocks.count)
    let hooks = LayerHooks(attentionOutput: { layer, x, output, sequences in
        let block = blocks[layer]
        let other = try MLAAttentionBlock(weights: block.weights, form: block.form == .naive ? .absorbed : .naive)
            .forward(x, sequences: sequences)
        layerDifference[layer] = block.form == .naive ? maxRelativeDifference(other, output) : maxRelativeDifference(output, other)
        return other
    })
    let otherLogits = try model.logits(tokens, hooks: hooks)
    let naiveFirst = blocks[0].form == .naive
    return MLACoreCheck(
        tokens: tokens.count,
        logitsMaxRelative: naiveFirst ? maxRelativeDifference(otherLogits, logits) : maxRelativeDifference(logits, otherLogits),
        layerMaxRelative: layerDifference)
}

/// max_i |a_i − b_i| / max_i |b_i| (0 when both are zero).
func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Double {
    var difference = 0.0, scale = 0.0
    for i in 0..<min(a.count, b.count) {
        difference = max(difference, Double(abs(a[i] - b[i])))
        scale = max(scale, Double(abs(b[i])))
    }
    return difference == 0 ? 0 : difference / max(scale, .leastNonzeroMagnitude)
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
                ("reduction", JSONValue(cacheReduction)),
            ])),
            ("mla_core", mlaCore.map { core in
                .object([
                    ("tokens", JSONValue(core.tokens)),
                    ("absorbed_vs_naive_max_rel", JSONValue(core.logitsMaxRelative)),
                    ("layers_absorbed_vs_naive_max_rel", .array(core.layerMaxRelative.map { JSONValue($0) })),
                ])
            } ?? .null),
            ("layers", .array(layers.map {
                .object([
                    ("layer", JSONValue($0.layer)), ("rel_error", JSONValue($0.relativeError)), ("cosine", JSONValue($0.cosine)),
                    ("values_rel_error", $0.valuesRelativeError.map { JSONValue($0) } ?? .null),
                    ("values_cosine", $0.valuesCosine.map { JSONValue($0) } ?? .null),
                    ("keys_comparable", .bool(false)),
                ])
            })),
            ("seconds", JSONValue(seconds)),
        ])
    }
}

/// α with converted ≈ α·original for the embedding tables (least squares), rounded to 1 when within 1e-6.
func residualStreamScale(original: [Float], converted: [Float]) -> Float {
    var dot = 0.0, norm = 0.0
    for (a, b) in zip(original, converted) {
        dot += Double(a) * Double(b)
        norm += Double(a) * Double(a)
    }
    guard norm > 0 else { return 1 }
    let alpha = dot / norm
    return abs(alpha - 1) < 1e-6 ? 1 : Float(alpha)
}
