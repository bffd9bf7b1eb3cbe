#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import MLARuntime
import MLATestSupport

/// The shape and options of a synthetic MLA layer.
struct MLASpec: Sendable, CustomStringConvertible {
    var name: String
    var d = 24, nh = 4, dNope = 6, dRope = 4, dV = 5, r = 10
    var nRope = 1
    var headMap: [Int] = [0, 0, 0, 0]
    var qRank: Int?
    var biases = false
    var latentNorm = true
    var freqs: [[Double]] = []
    var factor = 1.0
    var description: String { name }

    /// Random weights: projections scaled by 1/√(in) so activations stay O(1).
    func weights(seed: UInt64) -> MLALayerWeights {
        var g = SplitMix64(seed: seed)
        let qRows = nh * (dNope + dRope)
        func w(_ rows: Int, _ cols: Int) -> [Float] { g.floats(rows * cols, scale: 1 / Float(cols).squareRoot()) }
        func b(_ n: Int) -> [Float]? { biases ? g.floats(n, scale: 0.5) : nil }
        let query: MLALayerWeights.Query
        if let qRank {
            query = .lowRank(rank: qRank, a: w(qRank, d), aBias: b(qRank),
                             norm: (0..<qRank).map { _ in 1 + g.float(0.3) }, eps: 1e-6, b: w(qRows, qRank))
        } else {
            query = .full(proj: w(qRows, d), bias: b(qRows))
        }
        let kvA = w(r, d), kvABias = b(r)
        let norm = latentNorm ? MLALayerWeights.LatentNorm(weight: (0..<r).map { _ in 1 + g.float(0.3) }, eps: 1e-5) : nil
        let kRope = w(nRope * dRope, d), kRopeBias = b(nRope * dRope)
        let kvB = w(nh * (dNope + dV), r)
        let oProj = w(d, nh * dV), oBias = b(d)
        return MLALayerWeights(
            label: "model.layers.0.self_attn.", hiddenSize: d, numHeads: nh, dNope: dNope, dRope: dRope, dV: dV,
            kvRank: r, nRopeHeads: nRope, ropeHeadOfQueryHead: headMap, query: query, kvA: kvA, kvABias: kvABias,
            latentNorm: norm, kRope: kRope, kRopeBias: kRopeBias, kvB: kvB, oProj: oProj, oBias: oBias,
            ropeInvFreq: freqs, ropeAttentionFactor: factor,
            softmaxScale: Float(1 / Double(dNope + dRope).squareRoot()))
    }

    /// A source table θ_l = 10000^(−2l/16), l < 8, to pick non-contiguous pairs from.
    static func sourceFreq(_ l: Int) -> Double { pow(10000, -2 * Double(l) / 16) }

    static let all: [MLASpec] = [
        MLASpec(name: "DeepSeek-like: 1 shared rope head, q_proj, latent norm, no biases",
                freqs: [(0..<2).map { pow(10000, -2 * Double($0) / 4) }]),
        MLASpec(name: "MHA2MLA: 2 rope heads by KV group, q_lora + norm, all biases, no latent norm, non-contiguous pairs",
                nRope: 2, headMap: [0, 0, 1, 1], qRank: 7, biases: true, latentNorm: false,
                freqs: [[sourceFreq(1), sourceFreq(6)], [sourceFreq(0), sourceFreq(7)]], factor: 1.25),
        MLASpec(name: "q_lora with latent norm, no biases, 4 rope heads, one per query head (permuted map)",
                dRope: 6, nRope: 4, headMap: [3, 1, 0, 2], qRank: 5,
                freqs: [[sourceFreq(0), sourceFreq(2), sourceFreq(5)], [sourceFreq(1), sourceFreq(3), sourceFreq(4)],
                        [sourceFreq(7), sourceFreq(6), sourceFreq(0)], [0.5, 0.25, 0.0625]]),
        MLASpec(name: "q_proj with bias and latent norm, 1 rope head, attention factor 0.8",
                biases: true, freqs: [[sourceFreq(2), sourceFreq(3)]], factor: 0.8),
    ]
}

/// Float64 MLA written per token and per head with explicit interleaved RoPE, independent of the
/// gemm-based implementation. Returns `[T, d]`.
func referenceMLA(_ w: MLALayerWeights, x: [Float], tokens: Int, positions: [Int]) -> [Double] {
    let d = w.hiddenSize, qw = w.dNope + w.dRope
    func matvec(_ m: [Float], _ rows: Int, _ cols: Int, _ v: [Double], _ bias: [Float]?) -> [Double] {
        (0..<rows).map { i in
            var s = bias.map { Double($0[i]) } ?? 0
            for j in 0..<cols { s += Double(m[i * cols + j]) * v[j] }
            return s
        }
    }
    func rms(_ v: [Double], _ weight: [Float], _ eps: Float) -> [Double] {
        let ms = v.reduce(0) { $0 + $1 * $1 } / Double(v.count)
        return v.indices.map { Double(weight[$0]) * v[$0] / (ms + Double(eps)).squareRoot() }
    }
    func rotate(_ v: [Double], _ pos: Int, _ freqs: [Double]) -> [Double] {
        var out = v
        for i in freqs.indices {
            let a = Double(pos) * freqs[i], c = cos(a) * w.ropeAttentionFactor, s = sin(a) * w.ropeAttentionFactor
            out[2 * i] = v[2 * i] * c - v[2 * i + 1] * s
            out[2 * i + 1] = v[2 * i] * s + v[2 * i + 1] * c
        }
        return out
    }
    var qs: [[Double]] = [], latents: [[Double]] = [], ropeKeys: [[[Double]]] = []
    for t in 0..<tokens {
        let xt = (0..<d).map { Double(x[t * d + $0]) }
        var q: [Double]
        switch w.query {
        case let .full(proj, bias): q = matvec(proj, w.numHeads * qw, d, xt, bias)
        case let .lowRank(rank, a, aBias, norm, eps, b):
            q = matvec(b, w.numHeads * qw, rank, rms(matvec(a, rank, d, xt, aBias), norm, eps), nil)
        }
        for h in 0..<w.numHeads {
            let start = h * qw + w.dNope
            q.replaceSubrange(start..<(start + w.dRope),
                              with: rotate(Array(q[start..<(start + w.dRope)]), positions[t], w.ropeInvFreq[w.ropeHeadOfQueryHead[h]]))
        }
        qs.append(q)
        var c = matvec(w.kvA, w.kvRank, d, xt, w.kvABias)
        if let norm = w.latentNorm { c = rms(c, norm.weight, norm.eps) }
        latents.append(c)
        let kr = matvec(w.kRope, w.nRopeHeads * w.dRope, d, xt, w.kRopeBias)
        ropeKeys.append((0..<w.nRopeHeads).map { j in
            rotate(Array(kr[(j * w.dRope)..<((j + 1) * w.dRope)]), positions[t], w.ropeInvFreq[j])
        })
    }
    let kvw = w.dNope + w.dV
    var y = [Double](repeating: 0, count: tokens * d)
    for m in 0..<tokens {
        var o = [Double](repeating: 0, count: w.numHeads * w.dV)
        for h in 0..<w.numHeads {
            let kv = (0...m).map { n in
                (0..<kvw).map { row in
                    (0..<w.kvRank).reduce(0.0) { $0 + Double(w.kvB[(h * kvw + row) * w.kvRank + $1]) * latents[n][$1] }
                }
            }
            let scores = (0...m).map { n -> Double in
                var s = 0.0
                for i in 0..<w.dNope { s += qs[m][h * qw + i] * kv[n][i] }
                for i in 0..<w.dRope { s += qs[m][h * qw + w.dNope + i] * ropeKeys[n][w.ropeHeadOfQueryHead[h]][i] }
                return s * Double(w.softmaxScale)
            }
            let top = scores.max() ?? 0
            let e = scores.map { exp($0 - top) }
            let total = e.reduce(0, +)
            for i in 0..<w.dV {
                o[h * w.dV + i] = (0...m).reduce(0.0) { $0 + e[$1] / total * kv[$1][w.dNope + i] }
            }
        }
        let ym = matvec(w.oProj, d, w.numHeads * w.dV, o, w.oBias)
        y.replaceSubrange((m * d)..<((m + 1) * d), with: ym)
    }
    return y
}

/// ‖a − b‖ / ‖b‖ in Double.
func relativeError(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "relativeError: \(a.count) vs \(b.count) values")
    var num = 0.0, den = 0.0
    for i in a.indices {
        num += (Double(a[i]) - b[i]) * (Double(a[i]) - b[i])
        den += b[i] * b[i]
    }
    return (num / den).squareRoot()
}

/// Positions with gaps, so RoPE is exercised at non-consecutive offsets.
func testPositions(_ tokens: Int) -> [Int] { (0..<tokens).map { 3 * $0 + ($0 % 2) + 5 } }
