import Foundation
import Testing
import MLACheckpoint
import MLATestSupport
@testable import MLARuntime

/// The chunked (online) log-softmax statistics against a direct Double computation on whole rows.
@Suite struct NextTokenScoresTests {
    /// Logits spread over ±30 (so the running maximum moves between chunks), fed in chunks of 1, 7
    /// and the whole row: log Z, argmax, NLL and KL agree with the direct formulas to 1e-12.
    @Test func chunkedStatisticsMatchWholeRows() {
        var rng = SystemRandomNumberGenerator()
        let v = 1000
        for trial in 0..<5 {
            let p = (0..<v).map { i in Float.random(in: -30...30, using: &rng) + (trial == 0 ? Float(i) * 0.01 : 0) }
            let q = p.map { $0 + Float.random(in: -2...2, using: &rng) }
            let target = Int.random(in: 0..<v, using: &rng)
            func logZ(_ z: [Float]) -> Double {
                let m = Double(z.max()!)
                return m + log(z.reduce(0.0) { $0 + exp(Double($1) - m) })
            }
            let lp = logZ(p), lq = logZ(q)
            var kl = 0.0
            for i in 0..<v { kl += exp(Double(p[i]) - lp) * ((Double(p[i]) - lp) - (Double(q[i]) - lq)) }
            for chunk in [1, 7, v] {
                var pair = SoftmaxPairStats()
                p.withUnsafeBufferPointer { pp in
                    q.withUnsafeBufferPointer { qp in
                        for first in stride(from: 0, to: v, by: chunk) {
                            let r = first..<min(first + chunk, v)
                            pair.add(UnsafeBufferPointer(rebasing: pp[r]), UnsafeBufferPointer(rebasing: qp[r]), first: first, target: target)
                        }
                    }
                }
                #expect(abs(pair.p.logPartition - lp) < 1e-12 && abs(pair.q.logPartition - lq) < 1e-12, "chunk \(chunk)")
                #expect(pair.p.argmax == p.firstIndex(of: p.max()!) && pair.q.argmax == q.firstIndex(of: q.max()!))
                #expect(abs(pair.p.nll - (lp - Double(p[target]))) < 1e-12)
                #expect(abs(pair.kl - kl) < 1e-12 * max(1, kl), "chunk \(chunk): \(pair.kl) vs \(kl)")
            }
        }
    }

    /// The reference's distributions kept once (`ReferenceDistributions`: −H(p) and Wᵀp per position) give
    /// the KL of the logits recomputed beside the other model's (`SoftmaxPairStats`, what the search did
    /// before), and both give a direct F64 computation of whole rows of logits, on the real sample model:
    /// the reference its final states on a Hamlet window, the other model's the states of the window one
    /// token later (KL of nats) and the reference's scaled by 1.02 (KL near 1e-3, where −H(p), the cross
    /// term and log Z_q nearly cancel).
    @Test(.needsSampleData) func referenceDistributionsGiveTheRecomputedKL() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let model = box.model, c = model.config, d = c.hiddenSize, rows = 24
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = tokenizer.encode(try TestData.hamletExcerpt())
        func normed(_ window: [Int]) throws -> [Float] {
            Kernels.rmsNorm(try model.hiddenStates(window), tokens: rows, weight: model.finalNorm, eps: c.rmsNormEps)
        }
        let reference = try normed(Array(ids[0..<rows]))
        let reduced = try ReferenceDistributions(normed: reference, rows: rows, model: model, workers: 2)
        for other in [try normed(Array(ids[1...rows])), reference.map { $0 * 1.02 }] {
            // Direct: whole rows of logits in F64 from the F32 head.
            var direct = 0.0
            for r in 0..<rows {
                func logits(_ h: [Float]) -> [Double] {
                    (0..<c.vocabSize).map { v in (0..<d).reduce(0.0) { $0 + Double(h[r * d + $1]) * Double(model.lmHead[v * d + $1]) } }
                }
                let zp = logits(reference), zq = logits(other)
                func logZ(_ z: [Double]) -> Double { let m = z.max()!; return m + log(z.reduce(0.0) { $0 + exp($1 - m) }) }
                let lp = logZ(zp), lq = logZ(zq)
                direct += zip(zp, zq).reduce(0.0) { $0 + exp($1.0 - lp) * (($1.0 - lp) - ($1.1 - lq)) }
            }
            direct /= Double(rows)
            // Recomputed: both models' logits per vocabulary chunk.
            var pairs = [SoftmaxPairStats](repeating: SoftmaxPairStats(), count: rows)
            for range in ReferenceDistributions.chunks(c) {
                SoftmaxPairStats.accumulate(&pairs, try logits(reference, rows: rows, model: model, vocabulary: range),
                                            try logits(other, rows: rows, model: model, vocabulary: range), count: range.count,
                                            first: range.lowerBound, workers: 2)
            }
            let recomputed = pairs.reduce(0) { $0 + $1.kl } / Double(rows)
            let kept = try reduced.meanKL(other, model: model, workers: 2)
            // Both within 1e-6 nats of the direct KL (the F32 logits' rounding moves log Z_q by about 1e-7).
            #expect(abs(kept - direct) < 1e-6 && abs(recomputed - direct) < 1e-6 && abs(kept - recomputed) < 1e-6,
                    "kept \(kept) recomputed \(recomputed) direct \(direct)")
        }
    }

    /// Vocabulary chunks cover the vocabulary once, in order, each within the 16 M-value budget.
    @Test func vocabularyChunksTileTheVocabulary() {
        let chunks = vocabularyChunks(vocabSize: 128_256, hiddenSize: 4096)
        #expect(chunks.first?.lowerBound == 0 && chunks.last?.upperBound == 128_256)
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #expect(chunks.allSatisfy { $0.count * 4096 <= 16 << 20 } && chunks.count == 32)
    }
}
