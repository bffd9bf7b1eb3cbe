import Foundation
import MLACheckpoint
import MLATensor
@testable import MLARuntime

/// An independent float64 forward pass written from the formulas (docs/method.md §2; config fields as in docs/formats.md):
/// per-token loops, explicit rotate-half RoPE, no BLAS, no shared kernels with the runtime. The
/// runtime's F32 path is checked against it.
struct ReferenceForward {
    let config: ModelConfig
    let store: any TensorStore
    /// Replaces the source attention: (layer, per-token attention inputs) -> per-token outputs.
    var attention: ((Int, [[Double]]) throws -> [[Double]])? = nil

    func w(_ name: String) throws -> [Double] { try store.tensor(name).doubles() }

    /// θ_l and the cos/sin multiplier, straight from the formulas.
    func frequencies() -> ([Double], Double) {
        let d = config.headDim, b = config.ropeTheta
        var f = (0..<(d / 2)).map { pow(b, -2 * Double($0) / Double(d)) }
        var factor = 1.0
        switch config.ropeScaling {
        case .none: break
        case let .linear(s): f = f.map { $0 / s }
        case let .llama3(s, lo, hi, o):
            f = f.map { x in
                let wl = 2 * Double.pi / x
                if wl < Double(o) / hi { return x }
                if wl > Double(o) / lo { return x / s }
                let sm = (Double(o) / wl - lo) / (hi - lo)
                return (1 - sm) * x / s + sm * x
            }
        case let .yarn(s, o, bf, bs, af, _, _, _):
            let dim = { (beta: Double) in Double(d) * log(Double(o) / (beta * 2 * Double.pi)) / (2 * log(b)) }
            let low = max(floor(dim(bf)), 0), high = min(ceil(dim(bs)), Double(d - 1))
            f = f.enumerated().map { i, x in
                let ramp = min(max((Double(i) - low) / (high == low ? 0.001 : high - low), 0), 1)
                return x / s * ramp + x * (1 - ramp)
            }
            factor = af ?? (0.1 * log(s) + 1)
        }
        return (f, factor)
    }

    func rmsNorm(_ x: [Double], _ g: [Double]) -> [Double] {
        let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
        let inv = 1 / (ms + config.rmsNormEps).squareRoot()
        return zip(x, g).map { $0 * inv * $1 }
    }

    func matvec(_ m: [Double], _ x: [Double], rows: Int, bias: [Double]? = nil) -> [Double] {
        let cols = x.count
        return (0..<rows).map { r in
            var s = bias?[r] ?? 0
            for c in 0..<cols { s += m[r * cols + c] * x[c] }
            return s
        }
    }

    func rope(_ v: inout [Double], head: Int, position: Int, freqs: [Double], factor: Double) {
        let d = config.headDim, half = d / 2
        for l in 0..<half {
            let a = v[head * d + l], b = v[head * d + l + half]
            let c = cos(Double(position) * freqs[l]) * factor, s = sin(Double(position) * freqs[l]) * factor
            v[head * d + l] = a * c - b * s
            v[head * d + l + half] = b * c + a * s
        }
    }

    /// Logits [T][vocab] for tokens at positions 0..<T.
    func logits(_ tokens: [Int]) throws -> [[Double]] {
        let c = config, d = c.hiddenSize, hd = c.headDim
        let (freqs, factor) = frequencies()
        let emb = try w(ModelTensorNames.embedding)
        var xs = tokens.map { Array(emb[($0 * d)..<(($0 + 1) * d)]) }
        for layer in 0..<c.numLayers {
            let n = LayerTensorNames(layer: layer)
            if let attention {
                let g1 = try w(n.inputNorm), g2 = try w(n.postAttentionNorm)
                let wg = try w(n.gateProj), wu = try w(n.upProj), wd = try w(n.downProj)
                let outputs = try attention(layer, xs.map { rmsNorm($0, g1) })
                for m in 0..<xs.count {
                    for i in 0..<d { xs[m][i] += outputs[m][i] }
                    let h2 = rmsNorm(xs[m], g2)
                    let gate = matvec(wg, h2, rows: c.intermediateSize), up = matvec(wu, h2, rows: c.intermediateSize)
                    let down = matvec(wd, zip(gate, up).map { g, u in g / (1 + exp(-g)) * u }, rows: d)
                    for i in 0..<d { xs[m][i] += down[i] }
                }
                continue
            }
            let wq = try w(n.qProj), wk = try w(n.kProj), wv = try w(n.vProj), wo = try w(n.oProj)
            let bq = c.qkvBias ? try w(n.qBias) : nil, bk = c.qkvBias ? try w(n.kBias) : nil
            let bv = c.qkvBias ? try w(n.vBias) : nil, bo = c.outputBias ? try w(n.oBias) : nil
            let g1 = try w(n.inputNorm), g2 = try w(n.postAttentionNorm)
            let wg = try w(n.gateProj), wu = try w(n.upProj), wd = try w(n.downProj)
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for (p, x) in xs.enumerated() {
                let h = rmsNorm(x, g1)
                var q = matvec(wq, h, rows: c.numHeads * hd, bias: bq)
                var k = matvec(wk, h, rows: c.numKVHeads * hd, bias: bk)
                for head in 0..<c.numHeads { rope(&q, head: head, position: p, freqs: freqs, factor: factor) }
                for head in 0..<c.numKVHeads { rope(&k, head: head, position: p, freqs: freqs, factor: factor) }
                qs.append(q)
                ks.append(k)
                vs.append(matvec(wv, h, rows: c.numKVHeads * hd, bias: bv))
            }
            for m in 0..<xs.count {
                var o = [Double](repeating: 0, count: c.numHeads * hd)
                for head in 0..<c.numHeads {
                    let j = head / (c.numHeads / c.numKVHeads)
                    let scores = (0...m).map { n in
                        (0..<hd).reduce(0.0) { $0 + qs[m][head * hd + $1] * ks[n][j * hd + $1] } / Double(hd).squareRoot()
                    }
                    let mx = scores.max()!
                    let e = scores.map { exp($0 - mx) }
                    let z = e.reduce(0, +)
                    for n in 0...m {
                        for i in 0..<hd { o[head * hd + i] += e[n] / z * vs[n][j * hd + i] }
                    }
                }
                let a = matvec(wo, o, rows: d, bias: bo)
                for i in 0..<d { xs[m][i] += a[i] }
                let h2 = rmsNorm(xs[m], g2)
                let gate = matvec(wg, h2, rows: c.intermediateSize), up = matvec(wu, h2, rows: c.intermediateSize)
                let act = zip(gate, up).map { g, u in g / (1 + exp(-g)) * u }
                let down = matvec(wd, act, rows: d)
                for i in 0..<d { xs[m][i] += down[i] }
            }
        }
        let gf = try w(ModelTensorNames.finalNorm)
        let head = c.tiedEmbeddings ? emb : try w(ModelTensorNames.lmHead)
        return xs.map { matvec(head, rmsNorm($0, gf), rows: c.vocabSize) }
    }
}

/// max |a - b| / max |b| over all logits.
func relativeError(_ a: [Float], _ b: [[Double]]) -> Double {
    let flat = b.flatMap { $0 }
    let scale = flat.map(abs).max() ?? 1
    return zip(a, flat).map { abs(Double($0) - $1) }.max()! / scale
}
