import CKernels
import Foundation
import MLACheckpoint
import MLALinalg

/// A reference model's next-token distributions p at some positions, kept as what KL(p ‖ q) against
/// another model's distributions q under the same LM head needs, so that the reference's logits are
/// computed once however many models are compared with it. With the head W [vocab × d] and a model's
/// final-normed state h [d] at a position, q = softmax(W h) and
///   KL(p ‖ q) = Σ p log p − Σ_v p_v (W h)_v + log Σ exp(W h) = Σ p log p − h · (Wᵀ p) + log Z_q,
/// so each position keeps Σ p log p and its expected head row Wᵀ p [d] (both F64), and a comparison
/// costs one LM head GEMM and one exponential per logit (instead of two GEMMs and three exponentials).
/// The head is read in vocabulary chunks of about 4 M values (16 MB), never whole; p is accumulated
/// online over the chunks (a running maximum per position, earlier sums rescaled when it rises).
public struct ReferenceDistributions: Sendable {
    /// Positions.
    public let rows: Int
    public let hiddenSize: Int
    /// Σ_v p_v log p_v per position (nats).
    let negativeEntropy: [Double]
    /// Wᵀ p per position, [rows × d].
    let expectedHead: [Double]

    /// The distributions of the final-normed states `normed` [rows × d] under `model`'s LM head, rows
    /// split over `workers` threads between the GEMMs.
    public init(normed: [Float], rows: Int, model: some LayerwiseModel, workers: Int) throws {
        let d = model.config.hiddenSize
        precondition(normed.count == rows * d, "ReferenceDistributions: normed is not [rows × d]")
        self.rows = rows
        hiddenSize = d
        var sums = ExponentialSums(rows: rows)
        // Σ e·W_v per row [rows × d], against the same running maximum as `sums`.
        var head = [Double](repeating: 0, count: rows * d)
        for range in Self.chunks(model.config) {
            // The head rows are read once and used twice: for the logits and for Σ e·W_v below.
            let w = try model.lmHeadRows(range), n = range.count
            var z = Kernels.linear(normed, tokens: rows, weight: w, outFeatures: n, inFeatures: d)
            let rescale = sums.add(&z, count: n, workers: workers)
            // z now holds e [rows × n]: head ← rescale · head + e · W [rows × d], this chunk's part of Σ e·W_v.
            // In F64, once per reference: h · (Wᵀp) nearly cancels log Z_q − H(p) in a small KL, and an F32
            // product moved the search's KLs by 2e-6 nats.
            for i in 0..<rows where rescale[i] != 1 {
                for k in (i * d)..<((i + 1) * d) { head[k] *= rescale[i] }
            }
            // Widened 1,024 vocabulary entries at a time (9 MB at the sample's shape, not the chunk's 64 MB).
            for first in stride(from: 0, to: n, by: 1024) {
                let k = min(1024, n - first)
                var e = [Double](repeating: 0, count: rows * k)
                for i in 0..<rows { for v in 0..<k { e[i * k + v] = Double(z[i * n + first + v]) } }
                let wide = w[(first * d)..<((first + k) * d)].map(Double.init)
                e.withUnsafeBufferPointer { ep in
                    wide.withUnsafeBufferPointer { wp in
                        head.withUnsafeMutableBufferPointer { hp in
                            Double.gemm(transA: false, transB: false, m: rows, n: d, k: k, alpha: 1, a: ep.baseAddress!, lda: k,
                                        b: wp.baseAddress!, ldb: d, beta: 1, c: hp.baseAddress!, ldc: d)
                        }
                    }
                }
            }
        }
        for i in 0..<rows {
            for k in (i * d)..<((i + 1) * d) { head[k] /= sums.sum[i] }
        }
        negativeEntropy = (0..<rows).map { sums.weighted[$0] / sums.sum[$0] - sums.logPartition($0) }
        expectedHead = head
    }

    /// Mean KL(p ‖ q) per position, q the distributions of the final-normed states `normed` [rows × d]
    /// under `model`'s LM head (the reference's), each position's KL clamped at 0 against rounding.
    public func meanKL(_ normed: [Float], model: some LayerwiseModel, workers: Int) throws -> Double {
        let d = hiddenSize
        precondition(normed.count == rows * d && model.config.hiddenSize == d, "ReferenceDistributions: normed is not [rows × d]")
        var sums = ExponentialSums(rows: rows)
        for range in Self.chunks(model.config) {
            var z = try logits(normed, rows: rows, model: model, vocabulary: range)
            sums.add(&z, count: range.count, workers: workers)
        }
        var total = 0.0
        for i in 0..<rows {
            var cross = 0.0
            for k in 0..<d { cross += Double(normed[i * d + k]) * expectedHead[i * d + k] }
            total += max(0, negativeEntropy[i] - cross + sums.logPartition(i))
        }
        return total / Double(max(rows, 1))
    }

    /// Vocabulary chunks whose head rows hold about 4 M values (16 MB): small beside a model a caller holds.
    static func chunks(_ config: ModelConfig) -> [Range<Int>] {
        vocabularyChunks(vocabSize: config.vocabSize, hiddenSize: config.hiddenSize, values: 4 << 20)
    }
}

/// Per row of logits seen chunk by chunk: the running maximum m, Σ e and Σ e·z with e = exp(z − m),
/// earlier sums rescaled when m rises (online log-sum-exp).
private struct ExponentialSums {
    var maximum: [Float]
    var sum: [Double]
    var weighted: [Double]

    init(rows: Int) {
        maximum = Array(repeating: -.infinity, count: rows)
        sum = Array(repeating: 0, count: rows)
        weighted = Array(repeating: 0, count: rows)
    }

    /// log Σ exp(z) of row `i`.
    func logPartition(_ i: Int) -> Double { Double(maximum[i]) + log(sum[i]) }

    /// Adds one chunk of logits z [rows × count], rows split over `workers` threads; z becomes e (against
    /// each row's new maximum). Returns the factor each row's earlier sums were multiplied by.
    @discardableResult
    mutating func add(_ z: inout [Float], count n: Int, workers: Int) -> [Double] {
        let rows = sum.count
        var rescale = [Double](repeating: 1, count: rows)
        z.withUnsafeMutableBufferPointer { zp in
            maximum.withUnsafeMutableBufferPointer { mp in
                sum.withUnsafeMutableBufferPointer { sp in
                    weighted.withUnsafeMutableBufferPointer { wp in
                        rescale.withUnsafeMutableBufferPointer { rp in
                            // Each row touches only its own entries.
                            nonisolated(unsafe) let z = zp.baseAddress!, m = mp.baseAddress!, s = sp.baseAddress!, w = wp.baseAddress!,
                                                    r = rp.baseAddress!
                            forEachRowBlock(rows, workers: workers) { block in
                                for i in block {
                                    let row = z + i * n, raised = max(m[i], ck_max(row, n))
                                    if raised > m[i] {
                                        r[i] = m[i] == -.infinity ? 0 : exp(Double(m[i]) - Double(raised))
                                        s[i] *= r[i]
                                        w[i] *= r[i]
                                        m[i] = raised
                                    }
                                    s[i] += ck_exp_sum(row, n, raised, w + i)
                                }
                            }
                        }
                    }
                }
            }
        }
        return rescale
    }
}
