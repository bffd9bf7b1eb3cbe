/// Top-r eigenpairs and singular triplets without a full factorization: LAPACK's partial MRRR
/// (`?syevr`) and randomized subspace iteration (Halko, Martinsson, Tropp, "Finding structure with
/// randomness", SIAM Review 2011: algorithms 4.4 and 5.1). The converters need the top eigenvectors of
/// S = W·C·Wᵀ (n up to 8192, r a fraction of n) and the top singular triplets of weights.

/// How `topEigen` finds the top eigenpairs of a symmetric matrix.
public enum EigenMethod: Sendable, Equatable {
    /// Every eigenvalue by divide and conquer, the top r vectors back-transformed
    /// (`symmetricEigen(_:vectors:)`, the steps of `?syevd`). Exact; O(n³).
    case full
    /// The top ones only (`?syevr`, range "I", MRRR). Exact; reduces the whole matrix to tridiagonal
    /// form like syevd (about (4/3)·n³ flops, half of them matrix-vector) but computes and
    /// back-transforms only r eigenvectors: 1.5-1.8x faster than syevd at n = 2048...8192, r = 512.
    case partial
    /// Randomized subspace iteration on r + `oversampling` columns until the captured energy has
    /// converged to `tolerance` (see `randomizedSymmetricEigen`). Approximate; each iteration is one
    /// GEMM with S (2n²(r + p) flops) plus a QR of the basis.
    case randomized(oversampling: Int, tolerance: Double)

    /// The randomized settings `topEigen` uses: p = max(64, r) extra columns and tolerance 1e-5.
    /// On S = W·Wᵀ of every other layer's q_proj and stacked k/v_proj of the sample model (flat
    /// spectra, the hard case) this stopped within 1.2e-5 of the exact captured energy after at most
    /// 9 iterations, where p = r/2 took 15 and p = r/4 took 27 (the extra columns pay for themselves).
    public static func randomized(rank: Int) -> EigenMethod {
        .randomized(oversampling: max(64, rank), tolerance: 1e-5)
    }

    /// The method `topEigen` picks for n × n and `rank`, from `mla-bench eig` on this project's 2-core
    /// machine kind (docs/performance.md, F32): syevd up to n = 1024 (0.20 s at r = 512, where syevr
    /// ties and the randomized method takes 1 s) and when r > n/4 (n = 4096, r = 2048: 12 s against
    /// syevr's 22 s; at r = 1024 syevr still wins, 10 s against 12.6 s); syevr at n = 2048 and 4096,
    /// r = 512 (0.71 s and 4.3 s against syevd's 1.0 s and 7.9 s; randomized 2.2 s and 5.1 s); the
    /// randomized method once its basis of 2r columns is at most n/8 (n = 8192, r = 512: 18 s against
    /// syevr's 35 s and syevd's 55 s): its cost grows with r·n² per iteration, the others' with n³.
    public static func automatic(n: Int, rank: Int) -> EigenMethod {
        if n <= 1024 || 4 * rank > n { return .full }
        if 16 * rank <= n { return randomized(rank: rank) }
        return .partial
    }
}

/// The `rank` largest eigenvalues of the symmetric matrix `s` [n × n] (DESCENDING) and their unit
/// eigenvectors as the COLUMNS of `vectors` [n × rank]. `method` nil picks by size
/// (`EigenMethod.automatic`); `seed` fixes the randomized method's test matrix.
public func topEigen<T: LAPACKScalar>(_ s: Matrix<T>, rank: Int, method: EigenMethod? = nil,
                                      seed: UInt64 = 0) throws -> (values: [T], vectors: Matrix<T>) {
    precondition(s.rows == s.cols, "topEigen: \(s.rows)×\(s.cols) is not square")
    precondition(rank >= 1 && rank <= s.rows, "topEigen: rank \(rank) outside 1...\(s.rows)")
    switch method ?? .automatic(n: s.rows, rank: rank) {
    case .full:
        let (values, vectors) = try symmetricEigen(s, vectors: rank)
        return (Array(values.prefix(rank)), vectors)
    case .partial:
        return try partialSymmetricEigen(s, rank: rank)
    case let .randomized(p, tolerance):
        return try randomizedSymmetricEigen(s, rank: rank, oversampling: p, tolerance: tolerance, seed: seed)
    }
}

/// The `rank` largest eigenpairs of the symmetric `a` [n × n] by `?syevr` (range "I"): values
/// DESCENDING, `vectors` [n × rank] with the unit eigenvectors as COLUMNS.
public func partialSymmetricEigen<T: LAPACKScalar>(_ a: Matrix<T>, rank: Int) throws -> (values: [T], vectors: Matrix<T>) {
    precondition(a.rows == a.cols, "partialSymmetricEigen: \(a.rows)×\(a.cols) is not square")
    let n = a.rows
    precondition(rank >= 1 && rank <= n, "partialSymmetricEigen: rank \(rank) outside 1...\(n)")
    var buf = a.values
    var w = [T](repeating: 0, count: n)
    var z = [T](repeating: 0, count: n * rank)
    var isuppz = [Int32](repeating: 0, count: 2 * rank)
    var iwork = [Int32](repeating: 0, count: 10 * n)
    var found: Int32 = 0
    let info = try withWorkspace(routine: T.prefix + "syevr", n, n, minimum: 26 * n) { buffer, lwork in
        T.syevr(Int32(n), &buf, Int32(n - rank + 1), Int32(n), &found, &w, &z, &isuppz, buffer, lwork, &iwork, Int32(iwork.count))
    }
    try check(info, T.prefix + "syevr", n, n)
    FlopCount.add(4 * pow3(n) / 3 + 2 * Double(n * n * rank), T.self)
    // Column-major z: eigenvector j (ascending among the found ones) is z[j*n ..< (j+1)*n].
    var vectors = Matrix<T>.zeros(n, rank)
    for c in 0..<rank {
        let src = (rank - 1 - c) * n
        for r in 0..<n { vectors.values[r * rank + c] = z[src + r] }
    }
    return (Array(w.prefix(rank).reversed()), vectors)
}

/// The `rank` largest eigenpairs of a symmetric positive semidefinite `a` [n × n] by randomized
/// subspace iteration (HMT 2011 alg. 4.4 with Rayleigh–Ritz at every step): Y = A·Ω for a uniform
/// random Ω [n × l], l = min(n, rank + oversampling); then repeatedly Q = orth(Y), Z = A·Q, and the
/// Ritz values of Qᵀ·Z, with Y ← Z. The captured energy E_k (sum of the top `rank` Ritz values)
/// rises monotonically to the exact top-`rank` eigenvalue sum, geometrically with ratio ρ; the loop
/// stops when the remaining error estimated from the last two steps, ΔE·ρ/(1 − ρ) with
/// ρ = ΔE_k/ΔE_{k−1}, falls below `tolerance`·E_k, or after `maxIterations`.
///
/// Values DESCENDING (each at most the exact one), `vectors` [n × rank] with orthonormal COLUMNS.
/// Every product is a GEMM; the basis is re-orthonormalized by Householder (`?gelqf`/`?orglq`) at
/// every step, which keeps F32 accurate. On an indefinite matrix it finds the largest |λ|.
public func randomizedSymmetricEigen<T: LAPACKScalar>(_ a: Matrix<T>, rank: Int, oversampling: Int, tolerance: Double,
                                                      maxIterations: Int = 50, seed: UInt64 = 0) throws -> (values: [T], vectors: Matrix<T>) {
    precondition(a.rows == a.cols, "randomizedSymmetricEigen: \(a.rows)×\(a.cols) is not square")
    let n = a.rows
    precondition(rank >= 1 && rank <= n && oversampling >= 0 && maxIterations >= 1,
                 "randomizedSymmetricEigen: rank \(rank) outside 1...\(n), negative oversampling or no iterations")
    var q = matmul(a, uniformRandomMatrix(n, min(n, rank + oversampling), seed: seed, as: T.self))
    var convergence = EnergyConvergence(tolerance: tolerance)
    var b: Matrix<T>
    repeat {
        try orthonormalizeColumns(&q)
        let z = matmul(a, q)
        b = matmul(q, z, transA: true)
        if try convergence.converged(symmetricEigenvalues(b).prefix(rank)) || convergence.steps == maxIterations { break }
        q = z
    } while true
    let (theta, u) = try symmetricEigen(b)
    return (Array(theta.prefix(rank)), matmul(q, u.columns(0..<rank)))
}

/// The top `rank` singular triplets of `a` [m × n] by randomized subspace iteration (HMT 2011 alg.
/// 4.4 and 5.1) with the stopping rule of `randomizedSymmetricEigen` on the captured energy Σ s²:
/// Q = orth(Y), Z = Aᵀ·Q (so Zᵀ = Qᵀ·A), s² from the eigenvalues of Zᵀ·Z, then Y ← A·orth(Z). At
/// the end the SVD of Qᵀ·A (`?gesdd`, small) lifted by Q. Returns U [m × rank] and Vᵀ [rank × n] with
/// orthonormal columns/rows and s DESCENDING (each at most the exact singular value).
public func randomizedSVD<T: LAPACKScalar>(_ a: Matrix<T>, rank: Int, oversampling: Int, tolerance: Double,
                                           maxIterations: Int = 50, seed: UInt64 = 0) throws -> (u: Matrix<T>, s: [T], vt: Matrix<T>) {
    let m = a.rows, n = a.cols
    precondition(rank >= 1 && rank <= min(m, n) && oversampling >= 0 && maxIterations >= 1,
                 "randomizedSVD: rank \(rank) outside 1...\(min(m, n)), negative oversampling or no iterations")
    var q = matmul(a, uniformRandomMatrix(n, min(m, n, rank + oversampling), seed: seed, as: T.self))
    var convergence = EnergyConvergence(tolerance: tolerance)
    var z: Matrix<T>
    repeat {
        try orthonormalizeColumns(&q)
        z = matmul(a, q, transA: true)
        if try convergence.converged(symmetricEigenvalues(matmul(z, z, transA: true)).prefix(rank)) || convergence.steps == maxIterations { break }
        try orthonormalizeColumns(&z)
        q = matmul(a, z)
    } while true
    let (ub, s, vt) = try svd(z.transposed)
    return (matmul(q, ub.columns(0..<rank)), Array(s.prefix(rank)), vt.rows(0..<rank))
}

/// The stopping rule of the randomized methods: the captured energy E_k rises geometrically to its
/// limit, so with ΔE_k = E_k − E_{k−1} and ρ = ΔE_k/ΔE_{k−1} the remaining error is about
/// ΔE_k·ρ/(1 − ρ) (ρ capped at 0.99 so a stall cannot pass for convergence).
struct EnergyConvergence {
    let tolerance: Double
    private(set) var steps = 0
    private var energy: Double?
    private var lastGain: Double?

    init(tolerance: Double) { self.tolerance = tolerance }

    /// Records the top Ritz values of one more step; true once the estimated remaining error is
    /// below `tolerance` relative to the energy.
    mutating func converged<T: BinaryFloatingPoint>(_ values: some Collection<T>) -> Bool {
        steps += 1
        let e = values.reduce(0.0) { $0 + Double($1) }
        defer { energy = e }
        guard let previous = energy, e > 0 else { return false }
        let gain = max(0, (e - previous) / e)
        defer { lastGain = gain }
        if gain == 0 { return true }
        guard let last = lastGain, last > 0 else { return false }
        let rho = min(gain / last, 0.99)
        return gain * rho / (1 - rho) < tolerance
    }
}

/// A [rows × cols] matrix of independent values uniform in [-1, 1) from `seed`.
func uniformRandomMatrix<T: LinalgScalar>(_ rows: Int, _ cols: Int, seed: UInt64, as: T.Type) -> Matrix<T> {
    var values = [Float](repeating: 0, count: rows * cols)
    var g = SplitMix64(seed: seed)
    values.withUnsafeMutableBufferPointer { g.fill($0, scale: 1) }
    return Matrix(rows: rows, cols: cols, values: values.map { T($0) })
}

/// Replaces the columns of `y` [m × l], m ≥ l, by an orthonormal basis of their span (Householder
/// QR). A row-major [m × l] buffer is the column-major [l × m] Yᵀ, whose LQ factorization Yᵀ = L·Q̃
/// (`?gelqf`) and explicit Q̃ (`?orglq`, in place) give orthonormal rows of Yᵀ, i.e. columns of Y,
/// with no transposing copy.
func orthonormalizeColumns<T: LAPACKScalar>(_ y: inout Matrix<T>) throws {
    let m = y.rows, l = y.cols
    precondition(m >= l, "orthonormalizeColumns: \(m)×\(l) has more columns than rows")
    var tau = [T](repeating: 0, count: l)
    var info = try withWorkspace(routine: T.prefix + "gelqf", l, m, minimum: m) { buffer, lwork in
        T.gelqf(Int32(l), Int32(m), &y.values, &tau, buffer, lwork)
    }
    try check(info, T.prefix + "gelqf", l, m)
    info = try withWorkspace(routine: T.prefix + "orglq", l, m, minimum: l) { buffer, lwork in
        T.orglq(Int32(l), Int32(m), Int32(l), &y.values, &tau, buffer, lwork)
    }
    try check(info, T.prefix + "orglq", l, m)
    FlopCount.add(2 * (2 * Double(m * l * l) - 2 * pow3(l) / 3), T.self)
}
