import MLALinalg

/// What the joint low-rank factorization of [NoPE keys; values] minimizes (`docs/method.md` §4.D-E, §6).
/// Keys and values are always balanced first (Balanced KV: the key block is scaled to the value
/// block's energy, so rank is not spent on whichever is larger); the weightings then decide which
/// directions inside each block matter.
public struct LatentWeighting: Sendable, Equatable {
    public enum Keys: String, Sendable, CaseIterable {
        /// ‖k − k̂‖² (TransMLA).
        case plain
        /// The score error E[(q·(k − k̂))²] under the calibration queries of the key's group.
        case query
    }

    public enum Values: String, Sendable, CaseIterable {
        /// ‖v − v̂‖² (TransMLA).
        case plain
        /// The error after o_proj, Σ_h ‖W_o,h (v − v̂)‖² over the query heads reading the value.
        case output
    }

    public var keys: Keys
    public var values: Values

    public init(keys: Keys, values: Values) {
        self.keys = keys
        self.values = values
    }

    public static let plain = LatentWeighting(keys: .plain, values: .plain)
}

/// Where the singular values go when the latent's scale is chosen (`docs/method.md` §5): `down` keeps them
/// in kv_a (latent coordinates carry their own energy, up-projection orthonormal in the weighted
/// metric), `up` puts them in kv_b (unit-variance latent), `sqrt` splits them. BA is the same.
public enum SigmaPlacement: String, Sendable, CaseIterable {
    case down, up, sqrt
}

/// The spectrum and eigenvectors of one layer's weighted latent problem, from which any rank is cut.
///
/// z = [c_N; c_V] = Z x stacks the NoPE key coordinates (`nopeRows` of them) and the values of all KV
/// heads. With the weight W = RᵀR (block diagonal: R = Lᵀ from the Cholesky factor of each block),
/// the optimum of E‖R(z − B A x)‖² under C = E[x xᵀ] has two equivalent Gram forms; the smaller one
/// is decomposed:
/// - output side (n_Z ≤ d, GQA): S = Y C Yᵀ [n_Z × n_Z], Y = R Z, S = U Λ Uᵀ; A = U_rᵀ Y, B = R⁻¹ U_r.
/// - input side (n_Z > d, MHA: Llama-2-7B has n_Z ≈ 2d): K = Lᵀ Yᵀ Y L [d × d] with C = L Lᵀ,
///   K = V Λ Vᵀ (the same nonzero Λ); A = V_rᵀ L⁻¹ (= Λ^-½ U_rᵀ Y), and B the least-squares optimum
///   for that A, B = Z C Aᵀ (A C Aᵀ)⁻¹ = Z L V_r (V_rᵀ V_r)⁻¹, which is R⁻¹ U_r Λ^½ in exact
///   arithmetic and needs no R. Its large products and the d × d eigendecomposition run in single
///   precision, 2x faster (Llama-2-7B: 4096³); rounding there only perturbs which subspace is kept,
///   and at full rank (V square) BA = Z to F32 rounding whatever the accuracy of V (tested).
public struct LatentFactorization: Sendable {
    /// Λ, descending (weighted units), min(n_Z, d) of them.
    public let eigenvalues: [Double]
    public let nopeRows: Int
    /// The largest rank `factors` can cut: the eigenvectors kept (`upToRank` at construction).
    public let vectorCount: Int
    let problem: Problem

    /// Which Gram form is decomposed (see the type's documentation).
    public enum Side: Sendable {
        case output, input
    }

    enum Problem: Sendable {
        /// U [n_Z × vectorCount], Y = R Z with the key rows balanced, the lower factors of W's key and value
        /// blocks (nil: identity weight), and the key balance.
        case output(vectors: Matrix<Double>, weighted: Matrix<Double>, keyFactor: [Matrix<Double>]?,
                    valueFactor: [Matrix<Double>]?, balance: Double)
        /// V [d × vectorCount] (F32), L with C = L Lᵀ (nil when weights only), and Z·L [n_Z × d] (F32;
        /// empty when no vectors are kept).
        case input(vectors: Matrix<Float>, momentFactor: Matrix<Double>?, zTimesFactor: Matrix<Float>)
    }

    /// Relative damping of the weight matrices: numerical safety for directions no query looks at
    /// (TransMLA damps its moments by 1 % of the mean diagonal likewise).
    public static let damping = 1e-2

    /// - `nope` [nN × d]: NoPE key coordinates (R_N W_k), `values` [n_kv·d_h × d] (W_v).
    /// - `keyWeight`: the diagonal blocks of Σ_j N_jᵀ Q_j N_j along the NoPE rows (used when
    ///   `weighting.keys == .query`); `valueWeight`: those of Σ_{h∈j} W_o,hᵀ W_o,h, one per KV head (`.output`).
    /// - `moment`: C (nil for weights only).
    /// - `side`: the Gram form to decompose (nil: the smaller).
    /// - `upToRank`: the largest rank `factors` will be asked for (nil: any; 0: the spectrum alone). Only
    ///   that many eigenvectors are back-transformed (`symmetricEigen(_:vectors:)`): at Llama-2-7B's
    ///   d = 4096 and rank 2048 that is 1.2 s of the layer's 4.6 s eigendecomposition saved.
    /// - `damping`: of the weights, relative to their mean diagonal (0: undamped, e.g. to compare the
    ///   query-weighted keys with KQ-SVD's optimum, `docs/method.md` §6.b).
    ///
    /// Keys are measured uncentered: a centered key objective (softmax ignores a shared key offset) was
    /// tried and raised perplexity several-fold on the sample model, so the keys' mean is kept.
    public init(nope: Matrix<Double>, values: Matrix<Double>, moment: Matrix<Double>?, weighting: LatentWeighting,
                keyWeight: () -> [Matrix<Double>], valueWeight: () -> [Matrix<Double>], side: Side? = nil,
                upToRank: Int? = nil, damping: Double = Self.damping) throws {
        let keyFactor = try weighting.keys == .query ? Self.weightFactor(keyWeight(), damping: damping) : nil
        let valueFactor = try weighting.values == .output ? Self.weightFactor(valueWeight(), damping: damping) : nil
        func weighted(_ factor: [Matrix<Double>]?, _ m: Matrix<Double>) -> Matrix<Double>? {
            factor.map { Self.blockwise($0, m) { matmul($0, $1, transA: true) } }
        }
        let nN = nope.rows, nZ = nN + values.rows, d = nope.cols
        nopeRows = nN
        // Balanced KV: the key block is scaled to the value block's energy (undone exactly in B), so
        // rank is not spent on whichever is larger.
        func balance(_ ek: Double, _ ev: Double) -> Double { ek > 0 && ev > 0 ? (ev / ek).squareRoot() : 1 }
        switch side ?? (nZ <= d ? .output : .input) {
        case .output:
            // One moment S = Y C Yᵀ; its diagonal blocks give the key and value energies.
            var y = Matrix(stacking: [weighted(keyFactor, nope) ?? nope, weighted(valueFactor, values) ?? values])
            var sm = outputMoment(y, moment)
            let b = balance((0..<nN).reduce(0.0) { $0 + sm[$1, $1] }, (nN..<nZ).reduce(0.0) { $0 + sm[$1, $1] })
            for i in 0..<(nN * d) { y.values[i] *= b }
            for r in 0..<nZ {
                for c in 0..<nZ { sm[r, c] *= (r < nN ? b : 1) * (c < nN ? b : 1) }
            }
            vectorCount = min(upToRank ?? nZ, nZ)
            let (lambda, u) = try symmetricEigen(sm, vectors: vectorCount)
            eigenvalues = lambda.map { max($0, 0) }
            problem = .output(vectors: u, weighted: y, keyFactor: keyFactor, valueFactor: valueFactor, balance: b)
        case .input:
            let nope32 = nope.toFloat, values32 = values.toFloat
            let gk = gram(weighted(keyFactor, nope)?.toFloat ?? nope32), gv = gram(weighted(valueFactor, values)?.toFloat ?? values32)
            func energy(_ g: Matrix<Float>) -> Double {
                guard let moment else { return (0..<d).reduce(0.0) { $0 + Double(g[$1, $1]) } }
                return zip(g.values, moment.values).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            }
            let b = balance(energy(gk), energy(gv)), b2 = Float(b * b)
            var g = gv
            for i in 0..<g.values.count { g.values[i] += b2 * gk.values[i] }
            let factor = try moment.map(Self.momentFactor)
            let factor32 = factor?.toFloat
            let k = factor32.map { matmul($0, matmul(g, $0), transA: true) } ?? g
            let count = min(nZ, d)
            vectorCount = min(upToRank ?? count, count)
            let (lambda, v) = try symmetricEigen(k, vectors: vectorCount)
            eigenvalues = lambda.prefix(count).map { max(Double($0), 0) }
            let z = vectorCount > 0 ? Matrix(stacking: [nope32, values32]) : .zeros(0, d)
            problem = .input(vectors: v, momentFactor: factor, zTimesFactor: factor32.map { matmul(z, $0) } ?? z)
        }
    }

    /// Σ_{i<rank} λ_i / Σ λ_i: the weighted energy a rank keeps.
    public func energyRetained(rank: Int) -> Double {
        let total = eigenvalues.reduce(0, +)
        return total > 0 ? eigenvalues.prefix(rank).reduce(0, +) / total : 1
    }

    /// The rank-`rank` factors: A [rank × d] (latent rows), B_N [nN × rank] and B_V [nV × rank]
    /// (up-projections of the NoPE coordinates and the values), scaled per `sigma`. Throws
    /// `LAPACKError` when the rank exceeds the problem's numerical rank (input side).
    public func factors(rank: Int, sigma: SigmaPlacement) throws -> (a: Matrix<Double>, bNope: Matrix<Double>, bValue: Matrix<Double>) {
        precondition(rank <= vectorCount, "LatentFactorization: rank \(rank) asked of a factorization built up to rank \(vectorCount)")
        // Latent i comes with variance λ_i ("down"); `sigma` rescales it by f (A rows ·f, B columns /f).
        func scale(_ i: Int) -> Double {
            let sd = eigenvalues[i].squareRoot()
            guard sd > 0 else { return 1 }
            switch sigma {
            case .down: return 1
            case .up: return 1 / sd
            case .sqrt: return 1 / sd.squareRoot()
            }
        }
        var a: Matrix<Double>, b: Matrix<Double>
        switch problem {
        case let .output(vectors, y, keyFactor, valueFactor, balance):
            let ur = vectors.columns(0..<rank)
            a = matmul(ur, y, transA: true)
            func solve(_ factor: [Matrix<Double>]?, _ rows: Matrix<Double>) -> Matrix<Double> {
                factor.map { Self.blockwise($0, rows) { triangularSolve($0, lower: true, transposed: true, $1) } } ?? rows
            }
            var bk = solve(keyFactor, ur.rows(0..<nopeRows))
            for i in 0..<bk.values.count { bk.values[i] /= balance }
            b = Matrix(stacking: [bk, solve(valueFactor, ur.rows(nopeRows..<ur.rows))])
            Self.rescale(&a, &b, (0..<rank).map(scale))
        case let .input(vectors, l, zl):
            // Unit-variance latents A = V_rᵀ L⁻¹ (A C Aᵀ = V_rᵀ V_r ≈ I) and B = Z C Aᵀ (A C Aᵀ)⁻¹ =
            // Z L V_r (V_rᵀ V_r)⁻¹; then `sigma`'s scale.
            let vr = vectors.columns(0..<rank)
            let vr64 = vr.toDouble
            a = l.map { triangularSolve($0, lower: true, transposed: true, vr64).transposed } ?? vr64.transposed
            let h = try cholesky(gram(vr64)).toFloat
            b = triangularSolve(h, lower: true, triangularSolve(h, lower: true, transposed: true, matmul(zl, vr), left: false), left: false).toDouble
            Self.rescale(&a, &b, (0..<rank).map { eigenvalues[$0] > 0 ? eigenvalues[$0].squareRoot() * scale($0) : 1 })
        }
        return (a, b.rows(0..<nopeRows), b.rows(nopeRows..<b.rows))
    }

    /// Lower Cholesky factors L_b of each weight block plus δ·I (δ = `damping`·mean diagonal of the
    /// whole weight), so that R = Lᵀ has RᵀR = W + δI. Nil (identity weight) when the weight is zero.
    static func weightFactor(_ blocks: [Matrix<Double>], damping: Double) throws -> [Matrix<Double>]? {
        let n = blocks.reduce(0) { $0 + $1.rows }, total = blocks.reduce(0.0) { $0 + trace($1) }
        guard total > 0 else { return nil }
        let delta = damping * total / Double(n)
        return try blocks.map { block in
            var damped = block
            for i in 0..<block.rows { damped[i, i] += delta }
            return try cholesky(damped)
        }
    }

    /// The lower Cholesky factor L of C = L Lᵀ. A C that is only semidefinite (fewer calibration
    /// tokens than d, or directions the activations never take) is damped by the smallest of 1e-9,
    /// 1e-7, 1e-5, 1e-3 of its mean diagonal that makes it definite: the moments are summed in F32
    /// blocks (`CalibrationStatistics.accumulate`), whose rounding can leave eigenvalues of about
    /// 1e-6·√d of the mean diagonal on either side of zero.
    static func momentFactor(_ c: Matrix<Double>) throws -> Matrix<Double> {
        if let l = try? cholesky(c) { return l }
        let mean = trace(c) / Double(c.rows)
        var failure: (any Error)?
        for damping in [1e-9, 1e-7, 1e-5, 1e-3] {
            var damped = c
            for i in 0..<c.rows { damped[i, i] += damping * mean }
            do { return try cholesky(damped) } catch { failure = error }
        }
        throw failure!
    }

    /// Row i of `a` times f_i and column i of `b` divided by it (BA unchanged).
    static func rescale(_ a: inout Matrix<Double>, _ b: inout Matrix<Double>, _ f: [Double]) {
        for i in 0..<a.rows { for c in 0..<a.cols { a.values[i * a.cols + c] *= f[i] } }
        let inverse = f.map { 1 / $0 }
        for r in 0..<b.rows { for i in 0..<b.cols { b.values[r * b.cols + i] *= inverse[i] } }
    }

    /// `op(block, rows)` for each diagonal block and its rows of `m`, stacked.
    static func blockwise(_ blocks: [Matrix<Double>], _ m: Matrix<Double>,
                          _ op: (Matrix<Double>, Matrix<Double>) -> Matrix<Double>) -> Matrix<Double> {
        var offset = 0
        return Matrix(stacking: blocks.map { block in
            defer { offset += block.rows }
            return op(block, m.rows(offset..<(offset + block.rows)))
        })
    }
}

/// Sum of the diagonal.
func trace(_ m: Matrix<Double>) -> Double { (0..<min(m.rows, m.cols)).reduce(0.0) { $0 + m[$1, $1] } }
