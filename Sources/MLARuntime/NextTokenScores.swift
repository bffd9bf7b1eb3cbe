import Foundation

/// Log-softmax statistics of one position's logits accumulated over vocabulary chunks in Double
/// (online log-sum-exp): the log partition, the argmax and, once its chunk was seen, the target's
/// logit. The LM head is never held whole (a Llama-3-8B head is 2.1 GB in F32).
public struct SoftmaxStats: Sendable {
    public private(set) var maximum = -Double.infinity
    /// Σ exp(z − maximum) over the logits seen.
    public private(set) var sum = 0.0
    public private(set) var argmax = 0
    public private(set) var targetLogit = Double.nan

    public init() {}

    /// Adds logits z of vocabulary entries first..<first + z.count; `target` is the scored token.
    public mutating func add(_ z: UnsafeBufferPointer<Float>, first: Int, target: Int?) {
        rescale(to: z, first: first)
        for v in z { sum += exp(Double(v) - maximum) }
        if let target, (first..<(first + z.count)).contains(target) { targetLogit = Double(z[target - first]) }
    }

    /// Raises `maximum` to the largest of `z` (entries first..<first + z.count) if that is larger,
    /// moving `argmax` there and rescaling `sum`; returns the factor `sum` was multiplied by.
    @discardableResult
    mutating func rescale(to z: UnsafeBufferPointer<Float>, first: Int) -> Double {
        var m = maximum, at = -1
        for (i, v) in z.enumerated() where Double(v) > m {
            m = Double(v)
            at = i
        }
        guard at >= 0 else { return 1 }
        let factor = sum == 0 ? 0 : exp(maximum - m)
        sum *= factor
        maximum = m
        argmax = first + at
        return factor
    }

    /// log Σ exp(z).
    public var logPartition: Double { maximum + log(sum) }
    /// −log p(target).
    public var nll: Double { logPartition - targetLogit }
}

/// `SoftmaxStats` of two models at one position and their KL(p ‖ q) = Σ p (z_p − z_q) − log Z_p +
/// log Z_q, with the cross term Σ exp(z_p − max_p)(z_p − z_q) accumulated alongside p's sum.
public struct SoftmaxPairStats: Sendable {
    public private(set) var p = SoftmaxStats()
    public private(set) var q = SoftmaxStats()
    private var cross = 0.0

    public init() {}

    /// Adds both models' logits of the same vocabulary entries first..<first + zp.count.
    public mutating func add(_ zp: UnsafeBufferPointer<Float>, _ zq: UnsafeBufferPointer<Float>, first: Int, target: Int?) {
        cross *= p.rescale(to: zp, first: first)
        let m = p.maximum
        for i in 0..<zp.count {
            let a = Double(zp[i])
            cross += exp(a - m) * (a - Double(zq[i]))
        }
        p.add(zp, first: first, target: target)
        q.add(zq, first: first, target: target)
    }

    /// KL(p ‖ q) in nats (clamped at 0 against rounding).
    public var kl: Double { max(0, cross / p.sum - p.logPartition + q.logPartition) }
}

extension SoftmaxPairStats {
    /// Adds one vocabulary chunk of both models' logits to every row's pair, rows split over `workers`
    /// threads: `zp`, `zq` are [stats.count × count] row-major, for vocabulary entries first..<first + count;
    /// `targets[r]`, when given, is row r's next token (for its NLL and top-1).
    public static func accumulate(_ stats: inout [SoftmaxPairStats], _ zp: [Float], _ zq: [Float], count: Int, first: Int,
                                  targets: [Int?]? = nil, workers: Int) {
        let rows = stats.count
        zp.withUnsafeBufferPointer { op in
            zq.withUnsafeBufferPointer { cp in
                stats.withUnsafeMutableBufferPointer { sp in
                    nonisolated(unsafe) let slots = sp.baseAddress!, op = op, cp = cp
                    forEachRowBlock(rows, workers: workers) { block in
                        for r in block {
                            let row = (r * count)..<((r + 1) * count)
                            slots[r].add(UnsafeBufferPointer(rebasing: op[row]), UnsafeBufferPointer(rebasing: cp[row]),
                                         first: first, target: targets?[r] ?? nil)
                        }
                    }
                }
            }
        }
    }
}

/// Consecutive vocabulary ranges whose LM head rows hold about `values` values each (default 16 M: 64 MB
/// in F32).
public func vocabularyChunks(vocabSize: Int, hiddenSize: Int, values: Int = 16 << 20) -> [Range<Int>] {
    let rows = max(1, values / max(hiddenSize, 1))
    return stride(from: 0, to: vocabSize, by: rows).map { $0..<min($0 + rows, vocabSize) }
}

/// Logits [rows × range.count] of final-normed states `normed` [rows × d] against the LM head rows
/// `range` of `model`.
public func logits(_ normed: [Float], rows: Int, model: some LayerwiseModel, vocabulary range: Range<Int>) throws -> [Float] {
    Kernels.linear(normed, tokens: rows, weight: try model.lmHeadRows(range), outFeatures: range.count,
                   inFeatures: model.config.hiddenSize)
}
