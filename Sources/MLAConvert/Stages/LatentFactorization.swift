import MLALinalg

/// What the joint low-rank factorization of [NoPE keys; values] minimizes (`mla-math.md` §4.D-E, §6).
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

/// Where the singular values go when the latent's scale is chosen (mla-math.md §5): `down` keeps them
/// in kv_a (latent coordinates carry their own energy, up-projection orthonormal in the weighted
/// metric), `up` puts them in kv_b (unit-variance latent), `sqrt` splits them. BA is the same.
public enum SigmaPlacement: String, Sendable, CaseIterable {
    case down, up, sqrt
}

/// The spectrum and eigenvectors of one layer's weighted latent problem, from which any rank is cut.
///
/// z = [c_N; c_V] = Z x stacks the NoPE key coordinates (`nopeRows` of them) and the values of all KV
/// heads. With the block-diagonal weight G, the output PCA of G·Z under C (S = G Z C Zᵀ Gᵀ = U Λ Uᵀ)
/// gives the optimum of E‖G(z − B A x)‖²: A = U_rᵀ G Z, B = G⁻¹ U_r.
public struct LatentFactorization: Sendable {
    /// Λ, descending (weighted units).
    public let eigenvalues: [Double]
    let vectors: Matrix<Double>
    /// G·Z [nZ × d] and G⁻¹ [nZ × nZ].
    let weightedZ: Matrix<Double>
    let inverseWeight: Matrix<Double>
    public let nopeRows: Int

    /// Relative damping of the weight matrices' square roots: numerical safety for directions no
    /// query looks at (TransMLA damps its moments by 1 % of the mean diagonal likewise).
    static let damping = 1e-2

    /// - `nope` [nN × d]: NoPE key coordinates (R_N W_k), `values` [n_kv·d_h × d] (W_v).
    /// - `queryWeight` [nN × nN]: Σ_j N_jᵀ Q_j N_j (used when `weighting.keys == .query`).
    /// - `outputWeight` [n_kv·d_h × n_kv·d_h]: block-diagonal Σ_{h∈j} W_o,hᵀ W_o,h (`.output`).
    /// - `moment`: C (nil for weights only).
    ///
    /// Keys are measured uncentered: a centered key objective (softmax ignores a shared key offset) was
    /// tried and raised perplexity several-fold on the sample model, so the keys' mean is kept.
    public init(nope: Matrix<Double>, values: Matrix<Double>, moment: Matrix<Double>?,
                weighting: LatentWeighting, queryWeight: () -> Matrix<Double>, outputWeight: () -> Matrix<Double>) throws {
        let keyRoot = try weighting.keys == .query ? Self.root(queryWeight()) : nil
        let valueRoot = try weighting.values == .output ? Self.root(outputWeight()) : nil
        let gk = keyRoot.map { matmul($0.root, nope) } ?? nope
        let gv = valueRoot.map { matmul($0.root, values) } ?? values
        let nN = nope.rows, nV = values.rows, nZ = nN + nV
        var z = Matrix<Double>.zeros(nZ, nope.cols)
        z.values.replaceSubrange(0..<(nN * z.cols), with: gk.values)
        z.values.replaceSubrange((nN * z.cols)..<(nZ * z.cols), with: gv.values)
        // One moment S = Z C Zᵀ; its diagonal blocks give the key and value energies. Balance: scale the
        // key block to the value block's energy (exactly undone in G⁻¹), i.e. key rows of Z and key rows
        // and columns of S by `balance`.
        var zm = outputMoment(z, moment)
        let ek = (0..<nN).reduce(0.0) { $0 + zm[$1, $1] }, ev = (nN..<nZ).reduce(0.0) { $0 + zm[$1, $1] }
        let balance = ek > 0 && ev > 0 ? (ev / ek).squareRoot() : 1
        for i in 0..<(nN * z.cols) { z.values[i] *= balance }
        for r in 0..<nZ {
            for c in 0..<nZ { zm[r, c] *= (r < nN ? balance : 1) * (c < nN ? balance : 1) }
        }
        var inverse = Matrix<Double>.zeros(nZ, nZ)
        for (offset, count, root, scale) in [(0, nN, keyRoot, balance), (nN, nV, valueRoot, 1.0)] {
            for a in 0..<count {
                for b in 0..<count {
                    let value = root.map { $0.inverse[a, b] } ?? (a == b ? 1 : 0)
                    inverse[offset + a, offset + b] = value / scale
                }
            }
        }
        let (lambda, u) = try symmetricEigen(zm)
        eigenvalues = lambda.map { max($0, 0) }
        vectors = u
        weightedZ = z
        inverseWeight = inverse
        nopeRows = nN
    }

    /// Σ_{i<rank} λ_i / Σ λ_i: the weighted energy a rank keeps.
    public func energyRetained(rank: Int) -> Double {
        let total = eigenvalues.reduce(0, +)
        return total > 0 ? eigenvalues.prefix(rank).reduce(0, +) / total : 1
    }

    /// The rank-`rank` factors: A [rank × d] (latent rows), B_N [nN × rank] and B_V [nV × rank]
    /// (up-projections of the NoPE coordinates and the values), scaled per `sigma`.
    public func factors(rank: Int, sigma: SigmaPlacement) -> (a: Matrix<Double>, bNope: Matrix<Double>, bValue: Matrix<Double>) {
        let ur = vectors.columns(0..<rank)
        var a = matmul(ur, weightedZ, transA: true)
        var b = matmul(inverseWeight, ur)
        for i in 0..<rank {
            let sd = eigenvalues[i].squareRoot()
            guard sd > 0 else { continue }
            let f: Double
            switch sigma {
            case .down: f = 1
            case .up: f = 1 / sd
            case .sqrt: f = 1 / sd.squareRoot()
            }
            for c in 0..<a.cols { a[i, c] *= f }
            for r in 0..<b.rows { b[r, i] /= f }
        }
        return (a, b.rows(0..<nopeRows), b.rows(nopeRows..<b.rows))
    }

    /// Symmetric square root of a PSD matrix and its inverse, damped by `damping`·mean diagonal.
    static func root(_ m: Matrix<Double>) throws -> (root: Matrix<Double>, inverse: Matrix<Double>) {
        let n = m.rows
        guard trace(m) > 0 else { return (.identity(n), .identity(n)) }
        let delta = damping * trace(m) / Double(n)
        let (lambda, q) = try symmetricEigen(m)
        func scaled(_ f: (Double) -> Double) -> Matrix<Double> {
            var qs = q
            for r in 0..<n { for c in 0..<n { qs[r, c] *= f(max(lambda[c], 0) + delta) } }
            return matmul(qs, q, transB: true)
        }
        return (scaled { $0.squareRoot() }, scaled { 1 / $0.squareRoot() })
    }
}

/// Sum of the diagonal.
func trace(_ m: Matrix<Double>) -> Double { (0..<min(m.rows, m.cols)).reduce(0.0) { $0 + m[$1, $1] } }
