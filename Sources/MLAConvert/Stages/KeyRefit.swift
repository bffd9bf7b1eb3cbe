import MLALinalg
import MLARuntime

/// Refit of each head's key up-projection W_UK,h [dNope × r] with the latent fixed (docs/method.md §6.b):
/// on calibration windows, with the converted layer's NoPE queries q_i (of head h), its latents c_j and the
/// exact (full-rank) NoPE keys k_j,
///
///     W_UK,h = argmin_W Σ_windows Σ_{j ≤ i} (q_iᵀ (W c_j − k_j))²,
///
/// the causal NoPE score error. Its normal equations Σ_j G_j W c_j c_jᵀ = Σ_j G_j k_j c_jᵀ, with
/// G_j = Σ_{i ≥ j} q_i q_iᵀ, have d_nope·r unknowns per head; they are solved by preconditioned conjugate
/// gradients, each operator application attention-shaped per window (Qᵀ (M ⊙ Q W Cᵀ) C, M the causal
/// mask), preconditioned by the unmasked normal matrix (Σ q qᵀ) ⊗ (Σ c cᵀ) and started from the
/// factorization's W_UK,h. Without the mask that start is already the optimum (§6.b), and at full rank the
/// keys are exact, so the residual is zero and nothing moves.
public enum KeyRefit {
    /// Conjugate-gradient iterations per head at most, and the relative residual at which they stop.
    static let maxIterations = 12
    static let tolerance = 1e-4

    /// The objective before and after, relative to the exact causal NoPE scores' energy.
    public struct Result: Sendable {
        public let before: Double
        public let after: Double
    }

    /// Refits the W_UK,h rows of `weights.kvB` on the windows `inputs` (each [t_i × d], the layer's attention
    /// input). `exact` is the same layer converted at full rank (the NoPE keys' target); both must have a full
    /// query and no latent norm (the layer pass's converted layers).
    public static func apply(to weights: inout MLALayerWeights, exact: MLALayerWeights, inputs: [[Float]],
                             workers: Int) throws -> Result {
        let d = weights.hiddenSize, nh = weights.numHeads, dn = weights.dNope, r = weights.kvRank, qw = weights.qHeadWidth
        guard case let .full(proj, bias) = weights.query, weights.latentNorm == nil, exact.latentNorm == nil else {
            preconditionFailure("KeyRefit: needs a full query and no latent norm")
        }
        let kvw = dn + weights.dV, rExact = exact.kvRank
        // Per window: latents C [t × r]; per head and window: NoPE queries Q [t × dn] and exact keys K [t × dn].
        var latents: [Matrix<Float>] = []
        var queries = [[Matrix<Float>]](repeating: [], count: nh), keys = [[Matrix<Float>]](repeating: [], count: nh)
        for x in inputs {
            let t = x.count / d
            guard t > 0 else { continue }
            latents.append(Matrix(rows: t, cols: r, values: Kernels.linear(x, tokens: t, weight: weights.kvA, outFeatures: r, inFeatures: d, bias: weights.kvABias)))
            let q = Kernels.linear(x, tokens: t, weight: proj, outFeatures: nh * qw, inFeatures: d, bias: bias)
            let cExact = Matrix(rows: t, cols: rExact, values: Kernels.linear(x, tokens: t, weight: exact.kvA, outFeatures: rExact, inFeatures: d, bias: exact.kvABias))
            for h in 0..<nh {
                var qh = [Float](repeating: 0, count: t * dn)
                for i in 0..<t { for c in 0..<dn { qh[i * dn + c] = q[i * nh * qw + h * qw + c] } }
                queries[h].append(Matrix(rows: t, cols: dn, values: qh))
                let upExact = Matrix(rows: dn, cols: rExact, values: Array(exact.kvB[(h * kvw * rExact)..<((h * kvw + dn) * rExact)]))
                keys[h].append(matmul(cExact, upExact, transB: true))
            }
        }
        let latentGram = gram(Matrix(stacking: latents).toDouble)
        let kvB = weights.kvB, windowLatents = latents, headQueries = queries, headKeys = keys
        let solved = try parallelMap(nh, workers: workers) { h in
            let start = Matrix(rows: dn, cols: r, values: widened(Array(kvB[(h * kvw * r)..<((h * kvw + dn) * r)])))
            return try refitHead(start: start, queries: headQueries[h], latents: windowLatents, keys: headKeys[h], latentGram: latentGram)
        }
        var before = 0.0, after = 0.0, energy = 0.0
        for (h, head) in solved.enumerated() {
            weights.kvB.replaceSubrange((h * kvw * r)..<((h * kvw + dn) * r), with: narrowed(head.up.values))
            before += head.before
            after += head.after
            energy += head.energy
        }
        let scale = 1 / max(energy, .leastNormalMagnitude)
        return Result(before: before * scale, after: after * scale)
    }

    /// Σ_windows Qᵀ (M ⊙ (Q P)) C [dn × r] for P [dn × t] per window (M: the causal mask, keys j ≤ query i).
    static func causalProduct(_ queries: [Matrix<Float>], _ p: (Int) -> Matrix<Float>, _ latents: [Matrix<Float>]) -> Matrix<Double> {
        var sum: Matrix<Double>?
        for (w, (q, c)) in zip(queries, latents).enumerated() {
            var s = matmul(q, p(w))
            let t = s.rows
            for i in 0..<t { for j in (i + 1)..<t { s.values[i * t + j] = 0 } }
            let term = matmul(matmul(q, s, transA: true), c).toDouble
            if sum == nil { sum = term } else { for i in 0..<term.values.count { sum!.values[i] += term.values[i] } }
        }
        return sum ?? .zeros(queries.first?.cols ?? 0, latents.first?.cols ?? 0)
    }

    /// One head's PCG solve from `start`; the objective before and after and the target energy Σ (M ⊙ Q Kᵀ)².
    static func refitHead(start: Matrix<Double>, queries: [Matrix<Float>], latents: [Matrix<Float>], keys: [Matrix<Float>],
                          latentGram: Matrix<Double>) throws -> (up: Matrix<Double>, before: Double, after: Double, energy: Double) {
        func apply(_ w: Matrix<Double>) -> Matrix<Double> {
            let wf = w.toFloat
            return causalProduct(queries, { matmul(wf, latents[$0], transB: true) }, latents)
        }
        func dot(_ a: Matrix<Double>, _ b: Matrix<Double>) -> Double { zip(a.values, b.values).reduce(0.0) { $0 + $1.0 * $1.1 } }
        let rhs = causalProduct(queries, { keys[$0].transposed }, latents)
        // Σ_windows Σ_{j ≤ i} (q_iᵀ (W c_j − k_j))², from the score differences themselves (an expansion in
        // ⟨W, A W⟩ would cancel to F32 rounding of the scores' energy).
        func objective(_ w: Matrix<Double>?) -> Double {
            let wf = w?.toFloat
            var sum = 0.0
            for (w, (q, c)) in zip(queries, latents).enumerated() {
                var p = keys[w].transposed
                if let wf {
                    let up = matmul(wf, c, transB: true)
                    for i in 0..<p.values.count { p.values[i] = up.values[i] - p.values[i] }
                }
                let s = matmul(q, p), t = s.rows
                for i in 0..<t { for j in 0...i { sum += Double(s.values[i * t + j]) * Double(s.values[i * t + j]) } }
            }
            return sum
        }
        let energy = objective(nil)
        // Preconditioner: (Σ q qᵀ)⁻¹ R (Σ c cᵀ)⁻¹ through Cholesky factors (damped by 1e-9 of the mean diagonal).
        func factor(_ g: Matrix<Double>) throws -> Matrix<Double> {
            var damped = g
            let delta = 1e-9 * max(trace(g) / Double(max(g.rows, 1)), .leastNormalMagnitude)
            for i in 0..<g.rows { damped[i, i] += delta }
            return try cholesky(damped)
        }
        let lq = try factor(gram(Matrix(stacking: queries).toDouble)), lc = try factor(latentGram)
        func precondition(_ res: Matrix<Double>) -> Matrix<Double> {
            let left = triangularSolve(lq, lower: true, transposed: true, triangularSolve(lq, lower: true, res))
            return triangularSolve(lc, lower: true, triangularSolve(lc, lower: true, transposed: true, left, left: false), left: false)
        }
        var w = start
        var aw = apply(w)
        let before = objective(w)
        var res = rhs
        for i in 0..<res.values.count { res.values[i] -= aw.values[i] }
        let target = max(dot(rhs, rhs).squareRoot() * tolerance, .leastNormalMagnitude)
        var z = precondition(res), p = z, rz = dot(res, z)
        for _ in 0..<maxIterations where dot(res, res).squareRoot() > target {
            let ap = apply(p), pap = dot(p, ap)
            guard pap > 0 else { break }
            let alpha = rz / pap
            for i in 0..<w.values.count {
                w.values[i] += alpha * p.values[i]
                aw.values[i] += alpha * ap.values[i]
                res.values[i] -= alpha * ap.values[i]
            }
            z = precondition(res)
            let rzNext = dot(res, z)
            for i in 0..<p.values.count { p.values[i] = z.values[i] + rzNext / rz * p.values[i] }
            rz = rzNext
        }
        let after = objective(w)
        // Never worse than the start (rounding in F32 products can only matter when nothing is gained).
        return after < before ? (w, before, after, energy) : (start, before, before, energy)
    }
}
