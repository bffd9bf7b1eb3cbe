import Foundation

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

/// Log-softmax statistics of one logit row: (NLL of `target`, argmax).
public func scorePosition(_ row: UnsafeBufferPointer<Float>, target: Int) -> (nll: Double, argmax: Int) {
    var maxValue = -Float.infinity
    var argmax = 0
    for (i, v) in row.enumerated() where v > maxValue {
        maxValue = v
        argmax = i
    }
    var sum = 0.0
    for v in row { sum += Double(expf(v - maxValue)) }
    let logZ = Double(maxValue) + log(sum)
    return (logZ - Double(row[target]), argmax)
}

/// Splits `tokens` into independent windows of `window` tokens (the last may be shorter; a final
/// window of one token predicts nothing), runs each from position 0 with no context carried over,
/// and scores every position but the last of each window against the next token.
public func evaluatePerplexity(model: DecoderModel, tokens: [Int], window: Int,
                               progress: ((Int, Int) -> Void)? = nil) throws -> PerplexityResult {
    precondition(window >= 2, "evaluatePerplexity: window must be at least 2")
    var totalNLL = 0.0, hits = 0, count = 0, windows = 0
    let v = model.config.vocabSize
    let starts = Array(stride(from: 0, to: tokens.count, by: window))
    for (i, start) in starts.enumerated() {
        let chunk = Array(tokens[start..<min(start + window, tokens.count)])
        guard chunk.count >= 2 else { continue }
        let logits = try model.logits(chunk)
        logits.withUnsafeBufferPointer { lp in
            for p in 0..<(chunk.count - 1) {
                let row = UnsafeBufferPointer(rebasing: lp[(p * v)..<((p + 1) * v)])
                let s = scorePosition(row, target: chunk[p + 1])
                totalNLL += s.nll
                if s.argmax == chunk[p + 1] { hits += 1 }
                count += 1
            }
        }
        windows += 1
        progress?(i + 1, starts.count)
    }
    guard count > 0 else { throw RuntimeError.emptyInput("the token sequence (need at least 2 tokens)") }
    let nll = totalNLL / Double(count)
    return PerplexityResult(perplexity: exp(nll), nll: nll, top1: Double(hits) / Double(count), tokens: count,
                            windows: windows)
}
