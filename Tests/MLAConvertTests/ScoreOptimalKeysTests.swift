import Foundation
import MLACheckpoint
@testable import MLAConvert
import MLALinalg
import MLARuntime
import MLATestSupport
import Testing

/// Query-weighted keys against KQ-SVD (arXiv 2512.05916; docs/method.md §6.b) on the real sample model's
/// calibration activations. KQ-SVD is written here independently: QR of the NoPE key matrix K [T × nN] and
/// of the stacked NoPE queries Q̃ [n_h·T × nN] (query head h read in NoPE coordinates, q̃ = N_jᵀ q, so that
/// K Q̃ᵀ holds every head's NoPE scores side by side), then an SVD of R_K R_Qᵀ; the best rank-r score
/// error ‖K Q̃ᵀ − S_r‖² is Σ_{i ≥ r} σ_i².
@Suite(.serialized) struct ScoreOptimalKeysTests {
    /// The rope plan of the calibration-pass tables (docs/results.md); its ranks at 50 / 31.25 / 18.75 %.
    static let options = LayerConversionOptions(ropePlan: .shared(dims: 32, stride: 2, fold: 4),
                                                weighting: LatentWeighting(keys: .query, values: .output), foldSoftmaxScale: true)
    static let budgetRanks = [(0.5, 160), (0.3125, 88), (0.1875, 40)]

    /// The source model's attention inputs [T × d] of `layers` on `windows`.
    static func attentionInputs(layers: [Int], windows: [[Int]]) throws -> [Int: Matrix<Double>] {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let c = checkpoint.config, sequences = windows.map(\.count), t = sequences.reduce(0, +)
        var residual = try box.model.embed(windows.flatMap { $0 })
        var inputs: [Int: Matrix<Double>] = [:]
        for l in 0...(layers.max() ?? 0) {
            let layer = try box.model.layer(l)
            let x = Kernels.rmsNorm(residual, tokens: t, weight: layer.weights.inputNorm, eps: c.rmsNormEps)
            if layers.contains(l) { inputs[l] = Matrix(rows: t, cols: c.hiddenSize, values: x).toDouble }
            try layer.weights.forward(&residual, rows: t, eps: c.rmsNormEps) { h in try layer.attention.forward(h, sequences: sequences) }
        }
        return inputs
    }

    /// One layer's score problem: its conversion (moment C = XᵀX/T), the NoPE key rows [nN × d], keys
    /// K = X nopeᵀ, the stacked NoPE queries Q̃, KQ-SVD's σ² (descending) and R_Q (‖E Q̃ᵀ‖ = ‖E R_Qᵀ‖).
    struct Problem {
        let x: Matrix<Double>, moment: Matrix<Double>
        let conversion: LayerConversion
        let nope: Matrix<Double>, keys: Matrix<Double>, queries: Matrix<Double>
        let sigma2: [Double], rq: Matrix<Double>

        init(layer l: Int, x: Matrix<Double>, options: LayerConversionOptions) throws {
            let (checkpoint, _) = try TestData.sampleModel.get()
            self.x = x
            var moment = gram(x)
            for i in 0..<moment.values.count { moment.values[i] /= Double(x.rows) }
            self.moment = moment
            conversion = try ModelConversion(config: checkpoint.config, store: checkpoint.store, statistics: nil, options: options)
                .layer(l, moment: moment, upToRank: nil)
            let s = conversion.source, split = conversion.ropeSplit
            nope = split.transform(s.k, rows: split.ropeRows..<split.keyRows)
            keys = matmul(x, nope, transB: true)
            queries = Matrix(stacking: (0..<s.numHeads).map { h in
                matmul(matmul(x, s.queryHead(h), transB: true), split.nopeToKey(kvHead: s.kvHead(ofQueryHead: h)))
            })
            // KQ-SVD: K Q̃ᵀ = Q_K (R_K R_Qᵀ) Q_Qᵀ with orthonormal Q_K, Q_Q, so its singular values are R_K R_Qᵀ's.
            let rk = try qr(keys).r
            rq = try qr(queries).r
            sigma2 = try svd(matmul(rk, rq, transB: true)).s.map { $0 * $0 }
        }

        /// KQ-SVD's optimum at rank r: Σ_{i ≥ r} σ_i².
        func optimum(rank r: Int) -> Double { sigma2.dropFirst(r).reduce(0, +) }

        /// ‖(K − K̂) Q̃ᵀ‖² for the keys K̂ = X Aᵀ B_Nᵀ of factors (A [r × d], B_N [nN × r]).
        func scoreError(a: Matrix<Double>, bNope: Matrix<Double>) -> Double {
            var e = matmul(matmul(x, a, transB: true), bNope, transB: true)
            for i in 0..<e.values.count { e.values[i] = keys.values[i] - e.values[i] }
            return matmul(e, rq, transB: true).values.reduce(0.0) { $0 + $1 * $1 }
        }
    }

    @Test("keys alone and undamped, the query-weighted factorization reaches KQ-SVD's optimal score error at every rank", .needsSampleData)
    func queryWeightedKeysAreKQSVD() throws {
        let windows = try CalibratedConversionTests.windows(8)
        let inputs = try Self.attentionInputs(layers: [0, 15], windows: windows)
        for l in [0, 15] {
            let p = try Problem(layer: l, x: try #require(inputs[l]), options: Self.options)
            let nN = p.nope.rows, t = Double(p.x.rows), total = p.sigma2.reduce(0, +)
            // The weight E[q̃ q̃ᵀ] over the calibration queries of every head, undamped.
            var weight = gram(p.queries)
            for i in 0..<weight.values.count { weight.values[i] /= t }
            func factorization(_ keys: LatentWeighting.Keys) throws -> LatentFactorization {
                try LatentFactorization(nope: p.nope, values: .zeros(0, p.x.cols), moment: p.moment,
                                        weighting: LatentWeighting(keys: keys, values: .plain),
                                        keyWeight: { [weight] }, valueWeight: { [] }, damping: 0)
            }
            let ours = try factorization(.query), plain = try factorization(.plain)
            // The spectra agree at every rank: λ_i·T² (weight and moment are means over T) = σ_i².
            #expect(ours.eigenvalues.count == p.sigma2.count)
            for (lambda, s2) in zip(ours.eigenvalues, p.sigma2) {
                #expect(abs(lambda * t * t - s2) <= 1e-9 * total, "layer \(l): λT² \(lambda * t * t) against σ² \(s2)")
            }
            // The score error of the factors themselves, measured on the activations.
            for r in Array(stride(from: 1, to: nN, by: 8)) + [nN - 1] + Self.budgetRanks.map(\.1) {
                let (a, bNope, _) = try ours.factors(rank: r, sigma: .down)
                let error = p.scoreError(a: a, bNope: bNope), optimum = p.optimum(rank: r)
                #expect(abs(error - optimum) <= 1e-9 * total + 1e-6 * optimum, "layer \(l) rank \(r): \(error) against KQ-SVD's \(optimum)")
            }
            // Dropping the query weight loses score accuracy: the test can tell.
            let r = Self.budgetRanks[1].1, (a, bNope, _) = try plain.factors(rank: r, sigma: .down)
            #expect(p.scoreError(a: a, bNope: bNope) > 1.2 * p.optimum(rank: r))
        }
    }

    @Test("with damping and in the joint [keys; values] latent, the keys' score error against KQ-SVD's optimum at the budgets' ranks", .needsSampleData)
    func defaultKeysAgainstKQSVD() throws {
        let windows = try CalibratedConversionTests.windows(8)
        let inputs = try Self.attentionInputs(layers: [0, 15], windows: windows)
        for l in [0, 15] {
            let x = try #require(inputs[l])
            // The conversion's own weights (damped): keys alone (split mode's key latent) and jointly with values.
            var split = Self.options
            split.mode = .split
            let keysAlone = try Problem(layer: l, x: x, options: split), joint = try Problem(layer: l, x: x, options: Self.options)
            var plainOptions = split
            plainOptions.weighting.keys = .plain
            let plain = try Problem(layer: l, x: x, options: plainOptions)
            for (budget, r) in Self.budgetRanks {
                // Errors as fractions of the NoPE scores' energy ‖K Q̃ᵀ‖² = Σ σ².
                let total = joint.sigma2.reduce(0, +), optimum = joint.optimum(rank: r) / total
                func error(_ p: Problem) throws -> Double {
                    let (a, bNope, _) = try p.conversion.latents[0].factors(rank: r, sigma: .down)
                    return p.scoreError(a: a, bNope: bNope) / total
                }
                let damped = try error(keysAlone), together = try error(joint), unweighted = try error(plain)
                print(String(format: "KQ-SVD layer %d budget %.4g rank %d, score error / score energy: optimum %.3e, keys alone damped %.3e, joint [keys; values] %.3e, plain keys alone %.3e",
                             l, budget, r, optimum, damped, together, unweighted))
                // Nothing beats the optimum; the damping costs little; the query weight is the gain over plain keys.
                #expect(damped >= optimum - 1e-9 && together >= optimum - 1e-9)
                #expect(damped - optimum < 1e-3, "layer \(l) rank \(r): damped keys \(damped) against the optimum \(optimum)")
                #expect(damped <= unweighted + 1e-12)
            }
        }
    }
}
