/// Matrix factorizations on row-major matrices through LAPACK (column-major). A row-major [m × n]
/// buffer is the column-major [n × m] transpose, so routines are called on it as is and the roles of
/// the factors swapped, which avoids the transposing copies `LAPACK_ROW_MAJOR` would make.

/// Thin SVD A = U·diag(s)·Vᵀ by divide and conquer (`?gesdd`; `?gesvd` measured 10-35× slower).
/// A is [m × n], k = min(m, n): U [m × k] and Vᵀ [k × n] with orthonormal columns/rows, s descending.
public func svd<T: LAPACKScalar>(_ a: Matrix<T>) throws -> (u: Matrix<T>, s: [T], vt: Matrix<T>) {
    let m = a.rows, n = a.cols, k = min(m, n)
    guard k > 0 else { return (.zeros(m, 0), [], .zeros(0, n)) }
    var work = a.values
    var s = [T](repeating: 0, count: k)
    var u = [T](repeating: 0, count: m * k)
    var vt = [T](repeating: 0, count: k * n)
    var iwork = [Int32](repeating: 0, count: 8 * k)
    // Column-major B = Aᵀ is [n × m]: B = U_B S V_Bᵀ with U_B [n × k] = our Vᵀ, V_Bᵀ [k × m] = our U.
    let info = try withWorkspace(routine: T.prefix + "gesdd", m, n,
                                 minimum: 4 * k * k + 6 * k + max(m, n)) { buffer, lwork in
        T.gesdd(CChar(UInt8(ascii: "S")), Int32(n), Int32(m), &work, Int32(n), &s, &vt, Int32(n), &u, Int32(k),
                buffer, lwork, &iwork)
    }
    try check(info, T.prefix + "gesdd", m, n)
    FlopCount.add(6 * Double(max(m, n)) * Double(k * k) + 20 * pow3(k), T.self)
    return (Matrix(rows: m, cols: k, values: u), s, Matrix(rows: k, cols: n, values: vt))
}

/// The top `rank` singular triplets (`?gesvdx`, range "I"): U [m × rank], s (descending), Vᵀ [rank × n].
/// Cheaper than `svd` when rank ≪ min(m, n).
public func truncatedSVD<T: LAPACKScalar>(_ a: Matrix<T>, rank: Int) throws -> (u: Matrix<T>, s: [T], vt: Matrix<T>) {
    let m = a.rows, n = a.cols, k = min(m, n)
    precondition(rank >= 1 && rank <= k, "truncatedSVD: rank \(rank) outside 1...\(k)")
    var work = a.values
    var s = [T](repeating: 0, count: k)
    var u = [T](repeating: 0, count: m * rank)
    var vt = [T](repeating: 0, count: rank * n)
    var iwork = [Int32](repeating: 0, count: 12 * k)
    var found: Int32 = 0
    let info = try withWorkspace(routine: T.prefix + "gesvdx", m, n, minimum: k * (k + 4) + 14 * k) { buffer, lwork in
        T.gesvdx(CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "I")), Int32(n), Int32(m), &work,
                 Int32(n), 1, Int32(rank), &found, &s, &vt, Int32(n), &u, Int32(rank), buffer, lwork, &iwork)
    }
    try check(info, T.prefix + "gesvdx", m, n)
    FlopCount.add(4 * Double(max(m, n)) * Double(k * k) - 4 * pow3(k) / 3 + 2 * Double((m + n) * k * rank), T.self)
    return (Matrix(rows: m, cols: rank, values: u), Array(s.prefix(rank)), Matrix(rows: rank, cols: n, values: vt))
}

/// Eigendecomposition of a symmetric matrix (`?syevd`, lower triangle read): eigenvalues in
/// DESCENDING order, `vectors` [n × n] holding the matching unit eigenvectors as COLUMNS.
public func symmetricEigen<T: LAPACKScalar>(_ a: Matrix<T>) throws -> (values: [T], vectors: Matrix<T>) {
    let (w, buf) = try syevd(a, vectors: true)
    let n = a.rows
    // Column-major output: eigenvector i (ascending) occupies buf[i*n ..< (i+1)*n].
    var vectors = Matrix<T>.zeros(n, n)
    for c in 0..<n {
        let src = (n - 1 - c) * n
        for r in 0..<n { vectors.values[r * n + c] = buf[src + r] }
    }
    return (w, vectors)
}

/// Every eigenvalue of the symmetric `a` [n × n] (DESCENDING) and the unit eigenvectors of the
/// largest `count` of them as the COLUMNS of `vectors` [n × count]. The steps of `?syevd` (`?sytrd` to
/// tridiagonal form, `?stedc` divide and conquer on it) with the back-transformation (`?ormtr`,
/// 2n²·count flops, the largest of the three steps) applied to those `count` vectors only: the same
/// result as `symmetricEigen` cut to `count` columns, in F32 at n = 4096 and count = 2048 3.3 s
/// against syevd's 4.6 s. `count` 0 gives the eigenvalues alone (`symmetricEigenvalues`).
public func symmetricEigen<T: LAPACKScalar>(_ a: Matrix<T>, vectors count: Int) throws -> (values: [T], vectors: Matrix<T>) {
    precondition(a.rows == a.cols, "symmetricEigen: \(a.rows)×\(a.cols) is not square")
    let n = a.rows
    precondition(count >= 0 && count <= n, "symmetricEigen: \(count) vectors outside 0...\(n)")
    if count == n { return try symmetricEigen(a) }
    if count == 0 { return (try symmetricEigenvalues(a), .zeros(n, 0)) }
    var reflectors = a.values
    var d = [T](repeating: 0, count: n), e = [T](repeating: 0, count: n), tau = [T](repeating: 0, count: n)
    try check(try withWorkspace(routine: T.prefix + "sytrd", n, n, minimum: n) { buffer, lwork in
        T.sytrd(Int32(n), &reflectors, &d, &e, &tau, buffer, lwork)
    }, T.prefix + "sytrd", n, n)
    // Column-major z [n × n]: eigenvector i of the tridiagonal (ascending) is z[i*n ..< (i+1)*n].
    var z = [T](repeating: 0, count: n * n)
    var iwork = [Int32](repeating: 0, count: 3 + 5 * n)
    try check(try withWorkspace(routine: T.prefix + "stedc", n, n, minimum: 1 + 4 * n + n * n) { buffer, lwork in
        T.stedc(Int32(n), &d, &e, &z, buffer, lwork, &iwork, Int32(iwork.count))
    }, T.prefix + "stedc", n, n)
    let first = (n - count) * n
    try z.withUnsafeMutableBufferPointer { zp in
        let top = zp.baseAddress! + first
        try check(try withWorkspace(routine: T.prefix + "ormtr", n, count, minimum: count) { buffer, lwork in
            T.ormtr(Int32(n), Int32(count), &reflectors, &tau, top, buffer, lwork)
        }, T.prefix + "ormtr", n, count)
    }
    FlopCount.add(8 * pow3(n) / 3 + 2 * Double(n * n * count), T.self)
    var vectors = Matrix<T>.zeros(n, count)
    for c in 0..<count {
        let src = first + (count - 1 - c) * n
        for r in 0..<n { vectors.values[r * count + c] = z[src + r] }
    }
    return (Array(d.reversed()), vectors)
}

/// The eigenvalues of a symmetric matrix, DESCENDING (`?syevd` without vectors, several times
/// cheaper than `symmetricEigen`).
public func symmetricEigenvalues<T: LAPACKScalar>(_ a: Matrix<T>) throws -> [T] {
    try syevd(a, vectors: false).values
}

/// `?syevd` on a copy of `a`: eigenvalues descending, and the overwritten column-major buffer.
private func syevd<T: LAPACKScalar>(_ a: Matrix<T>, vectors: Bool) throws -> (values: [T], buffer: [T]) {
    precondition(a.rows == a.cols, "symmetricEigen: \(a.rows)×\(a.cols) is not square")
    let n = a.rows
    guard n > 0 else { return ([], []) }
    var buf = a.values
    var w = [T](repeating: 0, count: n)
    var iwork = [Int32](repeating: 0, count: vectors ? 3 + 5 * n : 1)
    let info = try withWorkspace(routine: T.prefix + "syevd", n, n, minimum: vectors ? 1 + 6 * n + 2 * n * n : 2 * n + 1) { buffer, lwork in
        T.syevd(vectors, Int32(n), &buf, &w, buffer, lwork, &iwork, Int32(iwork.count))
    }
    try check(info, T.prefix + "syevd", n, n)
    FlopCount.add((vectors ? 14 : 4) * pow3(n) / 3, T.self)
    return (Array(w.reversed()), buf)
}

/// Cholesky factor: lower-triangular L [n × n] with A = L·Lᵀ (`?potrf`). Throws `LAPACKError`
/// (info > 0) when A is not positive definite.
@inlinable
public func cholesky<T: LAPACKScalar>(_ a: Matrix<T>) throws -> Matrix<T> {
    var l = a
    try choleskyInPlace(&l)
    return l
}

/// `cholesky` in `a`'s storage, without the two n² copies (128 MiB each in F64 at n = 4096). When it
/// throws, `a` holds LAPACK's partial work. `@inlinable`, like `Matrix`, so that callers in other
/// modules get the triangle's move specialized for Float/Double: through generic witness tables it took
/// 0.9 % of a default conversion's CPU samples, most of it while the other core waited.
@inlinable
public func choleskyInPlace<T: LAPACKScalar>(_ a: inout Matrix<T>) throws {
    precondition(a.rows == a.cols, "cholesky: \(a.rows)×\(a.cols) is not square")
    let n = a.rows
    var info: Int32 = 0
    a.values.withUnsafeMutableBufferPointer { v in
        // LAPACK reads the row-major symmetric A as column-major; its lower factor L[i][j] (i ≥ j) lands
        // at v[i + j*n], the row-major upper triangle: moved to the lower one, the upper one zeroed.
        info = T.potrf(Int32(n), v.baseAddress!)
        guard info == 0 else { return }
        for i in 0..<n {
            for j in 0..<i {
                v[i * n + j] = v[j * n + i]
                v[j * n + i] = 0
            }
        }
    }
    try check(Int(info), T.prefix + "potrf", n, n)
    FlopCount.add(pow3(n) / 3, T.self)
}

/// Thin QR: A [m × n] = Q [m × k]·R [k × n], k = min(m, n), Q with orthonormal columns and R upper
/// triangular (`?geqrf` + `?orgqr`).
public func qr<T: LAPACKScalar>(_ a: Matrix<T>) throws -> (q: Matrix<T>, r: Matrix<T>) {
    let m = a.rows, n = a.cols, k = min(m, n)
    guard k > 0 else { return (.zeros(m, 0), .zeros(0, n)) }
    var buf = a.transposed.values  // column-major A, lda = m
    var tau = [T](repeating: 0, count: k)
    var info = try withWorkspace(routine: T.prefix + "geqrf", m, n, minimum: n) { buffer, lwork in
        T.geqrf(Int32(m), Int32(n), &buf, &tau, buffer, lwork)
    }
    try check(info, T.prefix + "geqrf", m, n)
    var r = Matrix<T>.zeros(k, n)
    for i in 0..<k {
        for j in i..<n { r.values[i * n + j] = buf[i + j * m] }
    }
    info = try withWorkspace(routine: T.prefix + "orgqr", m, n, minimum: k) { buffer, lwork in
        T.orgqr(Int32(m), Int32(k), Int32(k), &buf, &tau, buffer, lwork)
    }
    try check(info, T.prefix + "orgqr", m, n)
    FlopCount.add(2 * (2 * Double(m * k * k) - 2 * pow3(k) / 3), T.self)
    var q = Matrix<T>.zeros(m, k)
    for i in 0..<m {
        for j in 0..<k { q.values[i * k + j] = buf[i + j * m] }
    }
    return (q, r)
}

/// n³ as a Double, for the operation counts of `FlopCount`.
@usableFromInline
func pow3(_ n: Int) -> Double { Double(n) * Double(n) * Double(n) }

/// Runs `call` once as a workspace query (lwork = -1), sizes the buffer with `Workspace.size`, and
/// runs it again for real. Returns LAPACK's info.
func withWorkspace<T: LAPACKScalar>(routine: String, _ m: Int, _ n: Int, minimum: Int,
                                            _ call: (UnsafeMutablePointer<T>, Int32) -> Int32) throws -> Int {
    var query: T = 0
    let qinfo = call(&query, -1)
    try check(Int(qinfo), routine, m, n)
    let size = Workspace.size(query: query, minimum: minimum)
    guard size <= Int(Int32.max) else {
        throw LAPACKError(routine: routine, info: -1, rows: m, cols: n)
    }
    var work = [T](repeating: 0, count: size)
    return Int(work.withUnsafeMutableBufferPointer { call($0.baseAddress!, Int32(size)) })
}

@usableFromInline
func check(_ info: Int, _ routine: String, _ m: Int, _ n: Int) throws {
    if info != 0 { throw LAPACKError(routine: routine, info: info, rows: m, cols: n) }
}
