import Foundation
import Testing
@testable import MLARuntime

/// The chunked (online) log-softmax statistics against a direct Double computation on whole rows.
struct NextTokenScoresTests {
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

    /// Vocabulary chunks cover the vocabulary once, in order, each within the 16 M-value budget.
    @Test func vocabularyChunksTileTheVocabulary() {
        let chunks = vocabularyChunks(vocabSize: 128_256, hiddenSize: 4096)
        #expect(chunks.first?.lowerBound == 0 && chunks.last?.upperBound == 128_256)
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #expect(chunks.allSatisfy { $0.count * 4096 <= 16 << 20 } && chunks.count == 32)
    }
}
