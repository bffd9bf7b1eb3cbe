import Foundation
import MLALinalg

/// Perplexity over independent windows (see `evaluatePerplexity`).
public struct PerplexityResult: Sendable {
    /// exp(mean NLL).
    public let perplexity: Double
    /// Mean negative log-likelihood (nats) over predicted positions.
    public let nll: Double
    /// Fraction of predicted positions whose argmax logit is the next token.
    public let top1: Double
    /// Number of predicted positions.
    public let tokens: Int
    /// Windows evaluated.
    public let windows: Int
}

/// `tokens` split into independent windows of `window` tokens (the last may be shorter); a final
/// window of one token, which predicts nothing, is dropped.
public func evaluationWindows(_ tokens: [Int], window: Int) -> [[Int]] {
    stride(from: 0, to: tokens.count, by: window).map { Array(tokens[$0..<min($0 + window, tokens.count)]) }.filter { $0.count >= 2 }
}

/// Per row of the windows stacked by rows, the token it predicts: the next token of its window,
/// nil for each window's last position.
public func nextTokenTargets(_ windows: [[Int]]) -> [Int?] {
    windows.flatMap { w in w.indices.map { $0 + 1 < w.count ? w[$0 + 1] : nil } }
}

/// Calls `body(rows)` for blocks of 64 of `count` rows on up to `workers` threads (`inParallel`).
public func forEachRowBlock(_ count: Int, workers: Int, _ body: @Sendable (Range<Int>) -> Void) {
    let block = 64
    // Nothing in `body` throws.
    try! inParallel((count + block - 1) / block, workers: workers) { b in body((b * block)..<min((b + 1) * block, count)) }
}

/// Runs `tokens` in independent windows of `window` tokens through `model` layer by layer
/// (`WindowStates`, `workers` windows at once), with no context carried across windows, and scores
/// every position but the last of each window against the next token; the LM head is applied in
/// vocabulary chunks (`vocabularyChunks`). `progress(done, total)` counts the layers and the head.
public func evaluatePerplexity(model: some LayerwiseModel, tokens: [Int], window: Int, workers: Int = BLASThreads.current,
                               progress: ((Int, Int) -> Void)? = nil) throws -> PerplexityResult {
    precondition(window >= 2, "evaluatePerplexity: window must be at least 2")
    let windows = evaluationWindows(tokens, window: window)
    guard !windows.isEmpty else { throw RuntimeError.emptyInput("the token sequence (need at least 2 tokens)") }
    let c = model.config, steps = c.numLayers + 1
    var states = try WindowStates(model: model, windows: windows)
    for l in 0..<c.numLayers {
        try states.advance(through: try model.layer(l), eps: c.rmsNormEps, workers: workers)
        progress?(l + 1, steps)
    }
    let normed = states.normed(finalNorm: model.finalNorm, eps: c.rmsNormEps)
    let targets = nextTokenTargets(windows), rows = targets.count
    var scores = [SoftmaxStats](repeating: SoftmaxStats(), count: rows)
    for range in vocabularyChunks(vocabSize: c.vocabSize, hiddenSize: c.hiddenSize) {
        let z = try logits(normed, rows: rows, model: model, vocabulary: range)
        z.withUnsafeBufferPointer { zp in
            scores.withUnsafeMutableBufferPointer { sp in
                nonisolated(unsafe) let slots = sp.baseAddress!, zp = zp
                forEachRowBlock(rows, workers: workers) { block in
                    for r in block {
                        slots[r].add(UnsafeBufferPointer(rebasing: zp[(r * range.count)..<((r + 1) * range.count)]),
                                     first: range.lowerBound, target: targets[r])
                    }
                }
            }
        }
    }
    progress?(steps, steps)
    var totalNLL = 0.0, hits = 0, count = 0
    for (s, target) in zip(scores, targets) {
        guard let target else { continue }
        totalNLL += s.nll
        if s.argmax == target { hits += 1 }
        count += 1
    }
    let nll = totalNLL / Double(count)
    return PerplexityResult(perplexity: exp(nll), nll: nll, top1: Double(hits) / Double(count), tokens: count,
                            windows: windows.count)
}
