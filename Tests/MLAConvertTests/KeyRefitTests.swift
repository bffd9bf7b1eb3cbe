import Foundation
import MLACheckpoint
import MLAConvert
import MLALinalg
import MLARuntime
import MLATestSupport
import Testing

/// The key up-projection refit (`KeyRefit`, docs/method.md §6.b) on the real sample model: it lowers the
/// causal NoPE score error on windows it was not fitted on, measured by explicit F64 loops independent of
/// its GEMMs, and it changes nothing at full rank.
@Suite(.serialized) struct KeyRefitTests {
    /// Σ over windows, heads and j ≤ i of (q_iᵀ (W_UK,h c_j − k_j))²: the converted layer's NoPE queries q,
    /// its latents c, and the full-rank layer's NoPE keys k, all from x in F64.
    static func causalScoreError(_ w: MLALayerWeights, exact: MLALayerWeights, inputs: [[Float]]) -> Double {
        guard case let .full(proj, _) = w.query else { preconditionFailure("full query expected") }
        let d = w.hiddenSize, dn = w.dNope, qw = w.qHeadWidth, kvw = dn + w.dV
        func rows(_ m: [Float], _ first: Int, _ count: Int, _ x: ArraySlice<Float>) -> [Double] {
            (0..<count).map { o in zip(m[((first + o) * d)..<((first + o + 1) * d)], x).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        }
        var sum = 0.0
        for x in inputs {
            let t = x.count / d
            let tokens = (0..<t).map { x[($0 * d)..<(($0 + 1) * d)] }
            let latent = tokens.map { rows(w.kvA, 0, w.kvRank, $0) }, exactLatent = tokens.map { rows(exact.kvA, 0, exact.kvRank, $0) }
            for h in 0..<w.numHeads {
                let q = tokens.map { rows(proj, h * qw, dn, $0) }
                func up(_ kvB: [Float], _ r: Int, _ c: [Double]) -> [Double] {
                    (0..<dn).map { row in (0..<r).reduce(0.0) { $0 + Double(kvB[(h * kvw + row) * r + $1]) * c[$1] } }
                }
                let error = (0..<t).map { j in zip(up(w.kvB, w.kvRank, latent[j]), up(exact.kvB, exact.kvRank, exactLatent[j])).map { $0 - $1 } }
                for i in 0..<t {
                    for j in 0...i {
                        let s = zip(q[i], error[j]).reduce(0.0) { $0 + $1.0 * $1.1 }
                        sum += s * s
                    }
                }
            }
        }
        return sum
    }

    /// Layer 0's attention inputs on `windows`, and the layer converted at `budget` (its moment from the
    /// first `fitted` windows) and at full rank.
    static func layerZero(budget: Double, windows: [[Int]], fitted: Int) throws -> (weights: MLALayerWeights, exact: MLALayerWeights, inputs: [[Float]]) {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let c = checkpoint.config, d = c.hiddenSize
        let norm = try box.model.layer(0).weights.inputNorm
        let inputs = try windows.map { Kernels.rmsNorm(try box.model.embed($0), tokens: $0.count, weight: norm, eps: c.rmsNormEps) }
        var moment = Matrix<Double>.zeros(d, d)
        let fittedInputs = inputs.prefix(fitted), tokens = fittedInputs.reduce(0) { $0 + $1.count / d }
        for x in fittedInputs {
            let g = gram(Matrix(rows: x.count / d, cols: d, values: x).toDouble)
            for i in 0..<g.values.count { moment.values[i] += g.values[i] / Double(tokens) }
        }
        let conversion = ModelConversion(config: c, store: checkpoint.store, statistics: nil, options: CalibratedConversionTests.options)
        let layer = try conversion.layer(0, moment: moment, upToRank: nil)
        let rank = try conversion.ranks(budget: .fraction(budget), allocation: .uniform)[0]
        return (try layer.weights(rank: rank).0, try layer.weights(rank: layer.maxRank).0, inputs)
    }

    @Test("the key refit lowers the causal NoPE score error on held-out windows at 31.25 %", .needsSampleData)
    func lowersHeldOutScoreError() throws {
        let windows = try CalibratedConversionTests.windows(20, length: 256)
        var (weights, exact, inputs) = try Self.layerZero(budget: 0.3125, windows: windows, fitted: 16)
        let heldOut = Array(inputs[16...])
        let before = Self.causalScoreError(weights, exact: exact, inputs: heldOut)
        let fitted = try KeyRefit.apply(to: &weights, exact: exact, inputs: Array(inputs.prefix(16)), workers: 2)
        let after = Self.causalScoreError(weights, exact: exact, inputs: heldOut)
        print("key refit, layer 0 at 31.25 %: fitted \(fitted.before) -> \(fitted.after), held-out \(before) -> \(after)")
        #expect(fitted.after < fitted.before, "fitted \(fitted.before) -> \(fitted.after)")
        #expect(after < before, "held-out \(before) -> \(after)")
    }

    @Test("at full rank the key refit changes nothing", .needsSampleData)
    func exactAtFullRank() throws {
        let windows = try CalibratedConversionTests.windows(4)
        let (_, exact, inputs) = try Self.layerZero(budget: 1, windows: windows, fitted: 4)
        var weights = exact
        let fitted = try KeyRefit.apply(to: &weights, exact: exact, inputs: inputs, workers: 2)
        #expect(ConversionTests.relative(weights.kvB, exact.kvB) < 1e-5)
        #expect(fitted.before < 1e-6 && fitted.after <= fitted.before, "\(fitted.before) -> \(fitted.after)")
    }
}
