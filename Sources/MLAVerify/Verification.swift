import Foundation
import MLACheckpoint
import MLALinalg
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

/// Compares `converted` with `original` on `tokens` split into independent windows of `window`,
/// layer-major (`WindowStates`): every window passes layer ℓ of the original, then layer ℓ of the
/// converted model, so two `StreamedModel`s need one layer's weights at a time. Per layer (those in
/// `layers`, all when nil) the converted attention is fed the original model's attention input and
/// compared with the original attention output, and so are the per-head values where comparable;
/// end to end each model runs on its own. When every layer of `converted` is MLA, its first window
/// also runs in the other MLA form (`MLACoreCheck`). `workers` windows run at once.
/// `progress(done, total)` counts the layers and the LM head.
public func verify(original: some LayerwiseModel, converted: some LayerwiseModel, tokens: [Int], window: Int,
                   layers: Set<Int>? = nil, workers: Int = BLASThreads.current,
                   progress: ((Int, Int) -> Void)? = nil) throws -> VerificationReport {
    let o = original.config, c = converted.config
    for (what, a, b) in [("vocab_size", o.vocabSize, c.vocabSize), ("num_hidden_layers", o.numLayers, c.numLayers),
                         ("hidden_size", o.hiddenSize, c.hiddenSize)] where a != b {
        throw VerificationError.mismatch(what: what, original: a, converted: b)
    }
    let start = Date()
    let windows = evaluationWindows(tokens, window: window)
    guard !windows.isEmpty else { throw RuntimeError.emptyInput("the evaluation text (need at least 2 tokens)") }
    let selected = layers ?? Set(0..<o.numLayers)
    // A stock DeepSeek-V3 export carries the residual stream scaled by α (eps rescale, docs/method.md §8.c):
    // embeddings and every writer are α×, the norms undo it. Attention outputs are compared after
    // dividing by α, the least-squares ratio of the two embedding tables (1 for other conversions).
    let residualScale = try residualStreamScale(original: original, converted: converted)
    var statesO = try WindowStates(model: original, windows: windows)
    var statesC = try WindowStates(model: converted, windows: windows)
    var core: MLACoreRun?
    var drift: [LayerDrift] = []
    let steps = o.numLayers + 1
    for l in 0..<o.numLayers {
        let compare = selected.contains(l)
        let samples = ParallelSlots<LayerSample>(count: windows.count)
        do {
            let layer = try original.layer(l)
            try statesO.advance(through: layer, eps: o.rmsNormEps, workers: workers) { w, x, output in
                if compare {
                    samples[w] = LayerSample(input: x, output: output,
                                             values: try perHeadValues(layer.attention, x: x, tokens: windows[w].count))
                }
                return nil
            }
        }
        let layer = try converted.layer(l)
        if compare { drift.append(try layerDrift(l, layer.attention, samples: samples, windows: windows, residualScale: residualScale, workers: workers)) }
        try statesC.advance(through: layer, eps: c.rmsNormEps, workers: workers)
        core = try MLACoreRun.advancing(core, startingAt: l == 0, through: layer, model: converted, firstWindow: windows[0])
        progress?(l + 1, steps)
    }
    let scores = try NextTokenComparison(original: original, converted: converted, statesO: statesO, statesC: statesC,
                                         core: core, windows: windows, workers: workers)
    progress?(steps, steps)
    return VerificationReport(scores, windows: windows, layers: drift, core: core, original: o, converted: c,
                              seconds: Date().timeIntervalSince(start))
}

/// The first window run through the converted model in the other MLA form, layer by layer while every
/// layer so far is MLA, with each layer's attention output compared between the two forms (`MLACoreCheck`).
struct MLACoreRun {
    var states: WindowStates
    var layerDifference: [Double]
    /// The converted model's own form (the run uses the other one).
    let form: MLAAttention.Form

    /// `run` advanced through converted `layer`, or a new run when `startingAt` (layer 0); nil once a
    /// layer is not MLA (and so for every later layer).
    static func advancing(_ run: MLACoreRun?, startingAt: Bool, through layer: DecoderLayer, model: some LayerwiseModel,
                          firstWindow: [Int]) throws -> MLACoreRun? {
        guard let block = layer.attention as? MLAAttentionBlock else { return nil }
        let c = model.config
        let started = startingAt ? MLACoreRun(states: try WindowStates(model: model, windows: [firstWindow]), layerDifference: [], form: block.form) : run
        guard var check = started else { return nil }
        let other = MLAAttentionBlock(weights: block.weights, form: block.form == .naive ? .absorbed : .naive)
        let difference = ParallelSlots<Double>(count: 1)
        try check.states.advance(through: DecoderLayer(weights: layer.weights, attention: other), eps: c.rmsNormEps, workers: 1) { _, x, output in
            let own = try block.forward(x, tokens: x.count / c.hiddenSize)
            difference[0] = block.form == .naive ? maxRelativeDifference(output, own) : maxRelativeDifference(own, output)
            return nil
        }
        check.layerDifference.append(difference[0] ?? 0)
        return check
    }
}

/// Both models' next-token distributions compared position by position over the vocabulary in chunks,
/// and the MLA core run's logits against the converted model's own on the first window.
struct NextTokenComparison {
    let targets: [Int?]
    let scores: [SoftmaxPairStats]
    /// max |own − other form| and the naive logits' max |·| over the first window (0 without a core run).
    let coreDifference: Double, coreScale: Double

    init(original: some LayerwiseModel, converted: some LayerwiseModel, statesO: WindowStates, statesC: WindowStates,
         core: MLACoreRun?, windows: [[Int]], workers: Int) throws {
        let o = original.config, c = converted.config
        targets = nextTokenTargets(windows)
        let rows = targets.count
        let normedO = statesO.normed(finalNorm: original.finalNorm, eps: o.rmsNormEps)
        let normedC = statesC.normed(finalNorm: converted.finalNorm, eps: c.rmsNormEps)
        let normedCore = core.map { $0.states.normed(finalNorm: converted.finalNorm, eps: c.rmsNormEps) }
        var scores = [SoftmaxPairStats](repeating: SoftmaxPairStats(), count: rows)
        var coreDifference = 0.0, coreScale = 0.0
        for range in vocabularyChunks(vocabSize: o.vocabSize, hiddenSize: o.hiddenSize) {
            let zo = try logits(normedO, rows: rows, model: original, vocabulary: range)
            let zc = try logits(normedC, rows: rows, model: converted, vocabulary: range)
            SoftmaxPairStats.accumulate(&scores, zo, zc, count: range.count, first: range.lowerBound, targets: targets, workers: workers)
            if let normedCore, let form = core?.form {
                // The model's own form against the other one over the first window; the naive logits are the scale.
                let zk = try logits(normedCore, rows: windows[0].count, model: converted, vocabulary: range)
                for i in 0..<zk.count {
                    coreDifference = max(coreDifference, Double(abs(zk[i] - zc[i])))
                    coreScale = max(coreScale, Double(abs(form == .naive ? zc[i] : zk[i])))
                }
            }
        }
        self.scores = scores
        self.coreDifference = coreDifference
        self.coreScale = coreScale
    }
}

extension VerificationReport {
    /// The report from the compared next-token distributions (positions with a target), the layers'
    /// drift and the MLA core run.
    init(_ comparison: NextTokenComparison, windows: [[Int]], layers: [LayerDrift], core: MLACoreRun?,
         original o: ModelConfig, converted c: ModelConfig, seconds: Double) {
        let scored = zip(comparison.scores, comparison.targets).compactMap { s, t in t.map { (s, $0) } }
        let n = Double(scored.count)
        let kl = scored.map(\.0.kl)
        let sorted = kl.sorted()
        func stats(_ pick: (SoftmaxPairStats) -> SoftmaxStats) -> VerificationReport.PerplexityStats {
            let nll = scored.reduce(0.0) { $0 + pick($1.0).nll } / n
            return .init(perplexity: exp(nll), nll: nll, top1: Double(scored.filter { pick($0.0).argmax == $0.1 }.count) / n)
        }
        let (coreDifference, coreScale) = (comparison.coreDifference, comparison.coreScale)
        let mlaCore = core.map {
            MLACoreCheck(tokens: windows[0].count, logitsMaxRelative: coreDifference == 0 ? 0 : coreDifference / max(coreScale, .leastNonzeroMagnitude),
                         layerMaxRelative: $0.layerDifference)
        }
        self.init(
            tokens: scored.count, original: stats(\.p), converted: stats(\.q),
            klMean: kl.reduce(0, +) / n, klP95: sorted[min(sorted.count - 1, Int((0.95 * n).rounded(.up)) - 1)],
            klMax: sorted.last ?? 0, klValues: kl, top1Agreement: Double(scored.filter { $0.0.p.argmax == $0.0.q.argmax }.count) / n,
            layers: layers, mlaCore: mlaCore,
            originalCacheValuesPerToken: o.kvCacheValuesPerToken, convertedCacheValuesPerToken: c.kvCacheValuesPerToken,
            seconds: seconds)
    }
}

/// One window's view of an original layer, kept for the converted layer (`verify`): the attention
/// input [T × d] and output [T × d] and the per-head values.
struct LayerSample: Sendable {
    let input: [Float], output: [Float]
    let values: (values: [Float], heads: Int, width: Int)?
}

/// Layer `layer`'s drift: `attention` (converted) on each window's original input against the
/// original output (divided by `residualScale`), and the per-head values where both have them with
/// the same shape. Windows run in parallel, their sums are added in window order.
func layerDrift(_ layer: Int, _ attention: any AttentionBlock, samples: ParallelSlots<LayerSample>, windows: [[Int]],
                residualScale: Float, workers: Int) throws -> LayerDrift {
    let sums = ParallelSlots<(output: DriftSums, values: DriftSums?)>(count: windows.count)
    try inParallel(windows.count, workers: workers) { w in
        guard let sample = samples[w] else { return }
        let t = windows[w].count
        let output = try attention.forward(sample.input, tokens: t)
        var outputSums = DriftSums(), valueSums: DriftSums?
        outputSums.add(reference: sample.output, residualScale == 1 ? output : output.map { $0 / residualScale })
        if let vo = sample.values, let vc = try perHeadValues(attention, x: sample.input, tokens: t), vc.heads == vo.heads, vc.width == vo.width {
            valueSums = DriftSums()
            valueSums?.add(reference: vo.values, vc.values)
        }
        sums[w] = (outputSums, valueSums)
    }
    var output = DriftSums()
    var values: DriftSums? = DriftSums()
    for case let part? in sums.all {
        output.add(part.output)
        if let v = part.values { values?.add(v) } else { values = nil }
    }
    return LayerDrift(layer: layer, relativeError: output.relativeError, cosine: output.cosine,
                      valuesRelativeError: values?.relativeError, valuesCosine: values?.cosine)
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

    mutating func add(_ other: DriftSums) {
        difference += other.difference
        referenceNorm += other.referenceNorm
        convertedNorm += other.convertedNorm
        dot += other.dot
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

/// max_i |a_i − b_i| / max_i |b_i| (0 when both are zero).
func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Double {
    var difference = 0.0, scale = 0.0
    for i in 0..<min(a.count, b.count) {
        difference = max(difference, Double(abs(a[i] - b[i])))
        scale = max(scale, Double(abs(b[i])))
    }
    return difference == 0 ? 0 : difference / max(scale, .leastNonzeroMagnitude)
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

/// α with converted ≈ α·original for the embedding tables (least squares), rounded to 1 when within
/// 1e-6; read in vocabulary chunks.
func residualStreamScale(original: some LayerwiseModel, converted: some LayerwiseModel) throws -> Float {
    var sums = (dot: 0.0, norm: 0.0)
    for range in vocabularyChunks(vocabSize: original.config.vocabSize, hiddenSize: original.config.hiddenSize) {
        accumulateScale(&sums, original: try original.embeddingRows(range), converted: try converted.embeddingRows(range))
    }
    return scale(sums)
}

/// `residualStreamScale` of two tables in memory.
func residualStreamScale(original: [Float], converted: [Float]) -> Float {
    var sums = (dot: 0.0, norm: 0.0)
    accumulateScale(&sums, original: original, converted: converted)
    return scale(sums)
}

private func accumulateScale(_ sums: inout (dot: Double, norm: Double), original: [Float], converted: [Float]) {
    for (a, b) in zip(original, converted) {
        sums.dot += Double(a) * Double(b)
        sums.norm += Double(a) * Double(a)
    }
}

private func scale(_ sums: (dot: Double, norm: Double)) -> Float {
    guard sums.norm > 0 else { return 1 }
    let alpha = sums.dot / sums.norm
    return abs(alpha - 1) < 1e-6 ? 1 : Float(alpha)
}
