import MLALinalg
import MLARuntime

/// Closed-form refit of a converted layer's o_proj (docs/method.md §6.a): on calibration inputs, the
/// converted layer's own per-head outputs u_t [n = n_h·dV] (its attention probabilities, its
/// values) and the source layer's attention output y_t [d] on the same inputs give
///
///     W(λ) = argmin_W Σ_t ‖W u_t + b − y_t‖² + λ‖W − W_o‖²_F = (Σ_t (y_t − b) u_tᵀ + λ W_o)(Σ_t u_t u_tᵀ + λ I)⁻¹,
///
/// with b the converted layer's output bias. The value error, and the part of the key error that
/// shows as a change of the attention-weighted values, is compensated where o_proj can reach it; the
/// layout (and so the DeepSeek-V3 export) is unchanged. At full rank u_t is the source's own head
/// output, Σ (y − b) uᵀ = W_o Σ u uᵀ, and W(λ) = W_o for every λ.
///
/// The n² coefficients per output row can fit the calibration tokens' noise, so λ is chosen by
/// cross-validation: the tokens are dealt into `folds` folds (`add`'s `fold`), a λ of `ridges`
/// (relative to the mean eigenvalue tr(Σ u uᵀ)/n) is fitted on all folds but one and scored on that
/// one, from the largest λ down while the held-out error falls, and the best λ is refit on every fold.
/// When keeping W_o scores better than the largest λ, o_proj is left as it is.
public struct OutputRefit: Sendable {
    /// n_h·dV: the per-head outputs' width (o_proj's input).
    public let headWidth: Int
    /// d: the hidden size (o_proj's output).
    public let hiddenSize: Int
    /// Per fold: the upper triangle of Σ u uᵀ [n × n], Σ (y − b) uᵀ [d × n] and Σ ‖y − b‖² (F64).
    private var folds: [FoldSums]

    struct FoldSums: Sendable {
        var gramUpper: [Double]
        var cross: [Double]
        var targetEnergy = 0.0
        var tokens = 0
    }

    /// Relative ridges tried, λ / (tr(Σ u uᵀ)/n).
    public static let ridges: [Double] = [1e-4, 1e-3, 1e-2, 1e-1, 1]
    /// Calibration windows a cross-validated refit needs: windows go whole to the folds (two fill two), and
    /// the ridge is scored on a fold the fit did not see. With fewer, o_proj is kept.
    public static let minimumWindows = 2

    /// How `refit` picks the ridge.
    public enum RidgeChoice: Sendable, Equatable {
        /// By cross-validation over the folds (see the type): 4 solves (F64) per ridge scored.
        case crossValidated
        /// As given (a relative ridge, or nil to keep o_proj): one solve, e.g. a ridge another
        /// conversion of the same layer chose.
        case fixed(Double?)
    }

    /// What `refit` chose and how well it fits.
    public struct Result: Sendable {
        /// The refit o_proj [d × n] (the given one when no λ beat it).
        public let oProj: [Float]
        /// The relative ridge chosen, or nil when o_proj was kept.
        public let ridge: Double?
        /// Σ‖W u + b − y‖² / Σ‖y − b‖² over all calibration tokens, before (W_o) and after; nil when
        /// not measured.
        public let errors: (before: Double, after: Double)?
    }

    public init(headWidth: Int, hiddenSize: Int, folds: Int = 4) {
        self.headWidth = headWidth
        self.hiddenSize = hiddenSize
        self.folds = Array(repeating: FoldSums(gramUpper: [Double](repeating: 0, count: headWidth * headWidth),
                                               cross: [Double](repeating: 0, count: hiddenSize * headWidth)), count: max(folds, 2))
    }

    /// Adds `rows` tokens to fold `fold` (taken modulo the fold count): `heads` [rows × n] (the
    /// converted layer's per-head outputs) and `target` [rows × d] (the source attention output minus
    /// the converted layer's output bias). Deal whole calibration windows to folds, so that scoring
    /// on a fold measures text the fit did not see.
    public mutating func add(heads: [Float], target: [Float], rows: Int, fold: Int) {
        let k = fold % folds.count
        ProductSums.addGram(&folds[k].gramUpper, x: heads, rows: rows, n: headWidth)
        ProductSums.addCross(&folds[k].cross, a: target, m: hiddenSize, b: heads, n: headWidth, rows: rows)
        folds[k].targetEnergy += target.prefix(rows * hiddenSize).reduce(0.0) { $0 + Double($1) * Double($1) }
        folds[k].tokens += rows
    }

    /// The refit o_proj for the current `oProj` [d × n], the ridge picked by `ridge`; its errors before
    /// and after when `measuringErrors` (two F64 products of o_proj's size with the Gram matrix).
    public func refit(oProj: [Float], ridge choice: RidgeChoice = .crossValidated, measuringErrors: Bool = true) throws -> Result {
        let n = headWidth, d = hiddenSize
        precondition(oProj.count == d * n, "OutputRefit: o_proj must be [\(d) × \(n)]")
        let w = Matrix(rows: d, cols: n, values: widened(oProj))
        let all = sums(excluding: nil)
        // Keeping o_proj's error on all tokens: the cross-validation's baseline and the error before.
        lazy var keptError = error(w, all)
        let ridge: Double?
        switch choice {
        case .crossValidated: ridge = try crossValidatedRidge(w, all: all, keptError: keptError)
        case let .fixed(given): ridge = given
        }
        let refit = try ridge.map { try fit(w, all, ridge: $0).weights } ?? w
        let energy = max(all.targetEnergy, .leastNormalMagnitude)
        return Result(oProj: ridge == nil ? oProj : narrowed(refit.values), ridge: ridge,
                      errors: measuringErrors ? (keptError / energy, error(refit, all) / energy) : nil)
    }

    /// The ridge with the smallest held-out error summed over the folds, or nil when keeping `w` scores
    /// better (or fewer than two folds hold tokens). The scan starts at keeping `w` (the ridge → ∞) and
    /// walks `ridges` down, stopping at the first that does not improve on the one before: the same
    /// choice as scoring every ridge when the held-out error is unimodal in λ, as ridge regression's is
    /// here (docs/method.md §6.a), at 2-3 ridges' solves instead of all of them. `all` are the sums of
    /// every fold, `keptError` is `w`'s error on them.
    private func crossValidatedRidge(_ w: Matrix<Double>, all: FoldSums, keptError: Double) throws -> Double? {
        let occupied = folds.indices.filter { folds[$0].tokens > 0 }
        guard occupied.count >= Self.minimumWindows else { return nil }
        // Keeping w: its held-out errors summed over the folds are its error on all the tokens.
        var best: (ridge: Double?, error: Double) = (nil, keptError)
        let heldOut = HeldOutError(all, headWidth: headWidth)
        for ridge in Self.ridges.sorted(by: >) {
            var total = 0.0
            // Each fold's complement is summed again for every ridge rather than kept: four of them
            // are as large as the folds themselves (1 GiB at n = d = 4096), and summing one costs
            // a few n² additions against the solves' n³.
            for k in occupied {
                let rest = sums(excluding: k)
                let (fitted, lambda) = try fit(w, rest, ridge: ridge)
                total += heldOut.error(fitted, fittedOn: rest, lambda: lambda, original: w) ?? error(fitted, sums(only: k))
            }
            guard total < best.error else { break }
            best = (ridge, total)
        }
        return best.ridge
    }

    /// The held-out error of a fit on all folds but one, from the sums of all folds. With W solving
    /// W (G₋ + λI) = C₋ + λW_o on the other folds' sums (G₋, C₋, E₋), the held-out fold's G_k = G − G₋,
    /// C_k = C − C₋ and E_k = E − E₋ give its error, summed over its tokens,
    ///
    ///     ‖W L‖² − ⟨C₋ + λW_o, W⟩ + λ‖W‖² − 2⟨W, C − C₋⟩ + E − E₋,
    ///
    /// with G = L Lᵀ: one triangular product [d × n]·[n × n] (half a GEMM) instead of W G_k, and no
    /// held-out fold's Gram matrix. nil when G's Cholesky factorization fails (it is not positive
    /// definite, e.g. with fewer tokens than n): then the fold's own sums are used.
    struct HeldOutError {
        let all: FoldSums
        let factor: Matrix<Double>?

        init(_ all: FoldSums, headWidth n: Int) {
            self.all = all
            factor = try? cholesky(Matrix(rows: n, cols: n, values: all.gramUpper))
        }

        /// The held-out error of `w` [d × n], fitted on `rest` with the absolute ridge `lambda` from `original`.
        func error(_ w: Matrix<Double>, fittedOn rest: FoldSums, lambda: Double, original: Matrix<Double>) -> Double? {
            guard let factor else { return nil }
            let wl = lowerTriangularProduct(w, factor)
            var quadratic = 0.0, right = 0.0, norm = 0.0, cross = 0.0
            for v in wl.values { quadratic += v * v }
            for i in 0..<w.values.count {
                let x = w.values[i]
                right += (rest.cross[i] + lambda * original.values[i]) * x
                norm += x * x
                cross += (all.cross[i] - rest.cross[i]) * x
            }
            return max(0, quadratic - right + lambda * norm - 2 * cross + all.targetEnergy - rest.targetEnergy)
        }
    }

    /// The sums of every fold but `excluding` (nil: all), with Σ u uᵀ filled in both triangles.
    func sums(excluding: Int?) -> FoldSums {
        var total = FoldSums(gramUpper: [Double](repeating: 0, count: headWidth * headWidth), cross: [Double](repeating: 0, count: hiddenSize * headWidth))
        for (k, fold) in folds.enumerated() where k != excluding {
            for i in 0..<total.gramUpper.count { total.gramUpper[i] += fold.gramUpper[i] }
            for i in 0..<total.cross.count { total.cross[i] += fold.cross[i] }
            total.targetEnergy += fold.targetEnergy
            total.tokens += fold.tokens
        }
        mirrorUpperTriangle(&total.gramUpper, n: headWidth)
        return total
    }

    func sums(only k: Int) -> FoldSums {
        var fold = folds[k]
        mirrorUpperTriangle(&fold.gramUpper, n: headWidth)
        return fold
    }

    /// W(λ) on `s` and λ = `ridge` · tr(G)/n: W (G + λI) = C + λ W_o through a Cholesky factor L (solve
    /// Y Lᵀ = C + λ W_o, then W L = Y), in two buffers: the factor, and the right side, which becomes W.
    func fit(_ w: Matrix<Double>, _ s: FoldSums, ridge: Double) throws -> (weights: Matrix<Double>, lambda: Double) {
        let n = headWidth
        let trace = (0..<n).reduce(0.0) { $0 + s.gramUpper[$1 * n + $1] }
        let lambda = max(ridge * trace / Double(max(n, 1)), .leastNormalMagnitude)
        var g = Matrix(rows: n, cols: n, values: s.gramUpper)
        for i in 0..<n { g[i, i] += lambda }
        var rhs = Matrix(rows: hiddenSize, cols: n, values: s.cross)
        for i in 0..<rhs.values.count { rhs.values[i] += lambda * w.values[i] }
        try choleskyInPlace(&g)
        triangularSolve(g, lower: true, transposed: true, inPlace: &rhs, left: false)
        triangularSolve(g, lower: true, transposed: false, inPlace: &rhs, left: false)
        return (rhs, lambda)
    }

    /// Σ‖W u − (y − b)‖² over `s`'s tokens: tr(W G Wᵀ) − 2 tr(W Cᵀ) + Σ‖y − b‖².
    func error(_ w: Matrix<Double>, _ s: FoldSums) -> Double {
        let wg = matmul(w, Matrix(rows: headWidth, cols: headWidth, values: s.gramUpper))
        var quadratic = 0.0, linear = 0.0
        for i in 0..<w.values.count {
            quadratic += wg.values[i] * w.values[i]
            linear += s.cross[i] * w.values[i]
        }
        return max(0, quadratic - 2 * linear + s.targetEnergy)
    }
}

extension OutputRefit {
    /// Refits the o_proj of `weights` on calibration windows: `heads[i]` [t_i × n_h·dV] are the layer's
    /// per-head outputs on window i and `targets[i]` [t_i × d] the source attention's outputs (bias
    /// included) on the same inputs; window i goes to fold i (modulo the fold count). Records the ridge, the stage and (when
    /// `measuringErrors`) the errors in `report`.
    public static func apply(to weights: inout MLALayerWeights, report: inout LayerConversionReport,
                             heads: [[Float]], targets: [[Float]], ridge: RidgeChoice = .crossValidated, measuringErrors: Bool = true) throws {
        let n = weights.numHeads * weights.dV, d = weights.hiddenSize
        var refit = OutputRefit(headWidth: n, hiddenSize: d)
        for (i, (u, y)) in zip(heads, targets).enumerated() {
            let rows = u.count / max(n, 1)
            var target = y
            if let bias = weights.oBias {
                for row in 0..<rows { for j in 0..<d { target[row * d + j] -= bias[j] } }
            }
            refit.add(heads: u, target: target, rows: rows, fold: i)
        }
        let result = try refit.refit(oProj: weights.oProj, ridge: ridge, measuringErrors: measuringErrors)
        weights.oProj = result.oProj
        report.outputError = result.errors
        report.outputRidge = result.ridge
        report.stages.append(.outputRefit)
    }
}
