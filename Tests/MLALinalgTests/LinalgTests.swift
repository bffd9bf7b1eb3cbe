import Testing
@testable import MLALinalg
import MLATestSupport

func randomMatrix<T: LinalgScalar>(_ m: Int, _ n: Int, seed: UInt64, as: T.Type = T.self) -> Matrix<T> {
    var g = SplitMix64(seed: seed)
    return Matrix(rows: m, cols: n, values: (0..<(m * n)).map { _ in T(Double.random(in: -1...1, using: &g)) })
}

/// Naive float64 product, the independent reference for GEMM.
func naiveProduct<T: LinalgScalar>(_ a: Matrix<T>, _ b: Matrix<T>) -> Matrix<Double> {
    var c = Matrix<Double>.zeros(a.rows, b.cols)
    for i in 0..<a.rows {
        for j in 0..<b.cols {
            var s = 0.0
            for k in 0..<a.cols { s += Double(a[i, k]) * Double(b[k, j]) }
            c[i, j] = s
        }
    }
    return c
}

func maxAbsDiff<T: LinalgScalar, U: LinalgScalar>(_ a: Matrix<T>, _ b: Matrix<U>) -> Double {
    zip(a.values, b.values).map { abs(Double($0) - Double($1)) }.max() ?? 0
}

/// u = unit roundoff of T; tolerances below are c·n·u·‖A‖ with small constants (backward-stable routines).
func unitRoundoff<T: LinalgScalar>(_: T.Type) -> Double { T.self == Float.self ? 0x1p-24 : 0x1p-53 }

func diagonalProduct<T: LinalgScalar>(_ u: Matrix<T>, _ s: [T], _ vt: Matrix<T>) -> Matrix<T> {
    var us = u
    for r in 0..<u.rows { for c in 0..<u.cols { us[r, c] *= s[c] } }
    return matmul(us, vt)
}

@Suite struct GEMMTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func allTransposeCombinations(transA: Bool, transB: Bool) {
        let a = randomMatrix(7, 5, seed: 1, as: Float.self), b = randomMatrix(5, 6, seed: 2, as: Float.self)
        let ref = naiveProduct(a, b)
        let c = matmul(transA ? a.transposed : a, transB ? b.transposed : b, transA: transA, transB: transB)
        #expect(maxAbsDiff(c, ref) < 5 * 5 * 0x1p-24)
        let cd = matmul(transA ? a.toDouble.transposed : a.toDouble, transB ? b.toDouble.transposed : b.toDouble,
                        transA: transA, transB: transB)
        #expect(maxAbsDiff(cd, ref) < 1e-14)
    }

    /// beta = 0 overwrites C without reading it: the runtime hands GEMM and SYRK uninitialized (reused)
    /// buffers, which may hold NaN patterns that 0 · NaN would keep. `gemm` zeroes C itself before the
    /// kernel adds to it, so with C a block of a wider matrix (ldc > n) the columns beyond the block must
    /// stay untouched.
    @Test func betaZeroIgnoresWhatCHeld() {
        let a = (0..<(6 * 4)).map { Float($0 % 5) - 2 }, b = (0..<(5 * 4)).map { Float($0 % 3) - 1 }
        var c = [Float](repeating: .nan, count: 6 * 5)
        Float.gemm(transA: false, transB: true, m: 6, n: 5, k: 4, alpha: 1, a: a, lda: 4, b: b, ldb: 4, beta: 0, c: &c, ldc: 5)
        for i in 0..<6 {
            for j in 0..<5 {
                #expect(c[i * 5 + j] == (0..<4).reduce(Float(0)) { $0 + a[i * 4 + $1] * b[j * 4 + $1] })
            }
        }
        // Σ over 6 rows of xᵀx for x [6 × 4] = a: the upper triangle is written, exact in small integers.
        var s = [Float](repeating: .nan, count: 4 * 4)
        Float.syrkTransposed(n: 4, k: 6, alpha: 1, a: a, lda: 4, beta: 0, c: &s, ldc: 4)
        for i in 0..<4 {
            for j in i..<4 { #expect(s[i * 4 + j] == (0..<6).reduce(Float(0)) { $0 + a[$1 * 4 + i] * a[$1 * 4 + j] }) }
        }
        // C a block of a wider matrix: the product in the block, the columns past it left as they were.
        func checkBlock<T: LinalgScalar>(_: T.Type) {
            let a = randomMatrix(6, 4, seed: 5, as: T.self), b = randomMatrix(4, 3, seed: 6, as: T.self)
            let ldc = 5
            var c = [T](repeating: .nan, count: 6 * ldc)
            T.gemm(transA: false, transB: false, m: 6, n: 3, k: 4, alpha: 1, a: a.values, lda: 4, b: b.values, ldb: 3, beta: 0, c: &c, ldc: ldc)
            let ref = naiveProduct(a, b)
            for i in 0..<6 {
                for j in 0..<3 { #expect(abs(Double(c[i * ldc + j]) - ref[i, j]) < 1e-5) }
                for j in 3..<ldc { #expect(c[i * ldc + j].isNaN) }
            }
        }
        checkBlock(Float.self)
        checkBlock(Double.self)
    }

    /// B·L (TRMM) against the naive product with L's lower triangle; the strict upper triangle, set to
    /// NaN, is never read.
    @Test func lowerTriangularProductReadsTheLowerTriangleOnly() {
        let b = randomMatrix(7, 5, seed: 3, as: Double.self)
        var lower = randomMatrix(5, 5, seed: 4, as: Double.self), poisoned = lower
        for i in 0..<5 { for j in (i + 1)..<5 { lower[i, j] = 0; poisoned[i, j] = .nan } }
        #expect(maxAbsDiff(lowerTriangularProduct(b, poisoned), naiveProduct(b, lower)) < 1e-14)
    }
}

@Suite struct FactorizationTests {
    static let shapes = [(30, 30), (40, 17), (17, 40), (1, 9), (9, 1)]

    func checkSVD<T: LAPACKScalar>(_ a: Matrix<T>) throws {
        let (u, s, vt) = try svd(a)
        let k = min(a.rows, a.cols)
        let tol = 30 * Double(max(a.rows, a.cols)) * unitRoundoff(T.self) * max(a.frobeniusNorm, 1)
        #expect(u.rows == a.rows && u.cols == k && vt.rows == k && vt.cols == a.cols)
        #expect(maxAbsDiff(diagonalProduct(u, s, vt), a) < tol)
        #expect(maxAbsDiff(matmul(u, u, transA: true), Matrix<T>.identity(k)) < tol)
        #expect(maxAbsDiff(matmul(vt, vt, transB: true), Matrix<T>.identity(k)) < tol)
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
        if k > 2 {
            let top = try truncatedSVD(a, rank: 2)
            #expect(abs(Double(top.s[0] - s[0])) < tol && abs(Double(top.s[1] - s[1])) < tol)
            // Singular vectors are unique up to sign for distinct values: compare |u·u'|.
            for i in 0..<2 {
                var dot = 0.0
                for r in 0..<a.rows { dot += Double(top.u[r, i]) * Double(u[r, i]) }
                #expect(abs(abs(dot) - 1) < 1e3 * unitRoundoff(T.self) * Double(a.rows))
            }
        }
    }

    @Test func svdFloatAndDouble() throws {
        for (i, (m, n)) in Self.shapes.enumerated() {
            try checkSVD(randomMatrix(m, n, seed: UInt64(i), as: Float.self))
            try checkSVD(randomMatrix(m, n, seed: UInt64(i), as: Double.self))
        }
    }

    @Test func svdOfRankDeficientMatrix() throws {
        let a = matmul(randomMatrix(25, 3, seed: 7, as: Double.self), randomMatrix(3, 20, seed: 8, as: Double.self))
        let (_, s, _) = try svd(a)
        #expect(s[2] > 1e-3 && s[3] < 1e-12)
    }

    func checkEigen<T: LAPACKScalar>(_ n: Int, _: T.Type) throws {
        let b = randomMatrix(n, n, seed: 11, as: T.self)
        let a = matmul(b, b, transB: true)
        let (w, v) = try symmetricEigen(a)
        let tol = 30 * Double(n) * unitRoundoff(T.self) * a.frobeniusNorm
        #expect(zip(w, w.dropFirst()).allSatisfy { $0 >= $1 })
        var vw = v
        for r in 0..<n { for c in 0..<n { vw[r, c] *= w[c] } }
        #expect(maxAbsDiff(matmul(a, v), vw) < tol)
        #expect(maxAbsDiff(matmul(v, v, transA: true), Matrix<T>.identity(n)) < tol)
    }

    @Test func eigenFloatAndDouble() throws {
        try checkEigen(33, Float.self)
        try checkEigen(33, Double.self)
    }

    /// ssyevd's float workspace query rounds down above 2^24 (n = 4096 needs 33 579 009,
    /// the query says 33 579 008). 2900 is the smallest n here whose need 1+6n+2n² is not a float.
    @Test func singlePrecisionWorkspaceRoundingBug() throws {
        func need(_ n: Int) -> Int { 1 + 6 * n + 2 * n * n }
        let n = try #require((2800...4096).first { Int(Float(need($0))) < need($0) })
        let query = Float(need(n))
        #expect(Workspace.size(query: query, minimum: 0) >= need(n))
        var a = Matrix<Float>.zeros(n, n) as Matrix<Float>
        for i in 0..<n { a[i, i] = Float(i % 7 + 1) }
        a[0, 1] = 0.5
        a[1, 0] = 0.5
        let (w, _) = try symmetricEigen(a)
        #expect(w.first == 7 && w.count == n)
    }

    @Test func choleskyAndFailure() throws {
        let b = randomMatrix(20, 20, seed: 3, as: Double.self)
        var a = matmul(b, b, transB: true)
        for i in 0..<20 { a[i, i] += 1 }
        let l = try cholesky(a)
        #expect(maxAbsDiff(matmul(l, l, transB: true), a) < 1e-12 * a.frobeniusNorm)
        for i in 0..<20 { for j in (i + 1)..<20 { #expect(l[i, j] == 0) } }
        var indefinite = Matrix<Float>.identity(3)
        indefinite[2, 2] = -1
        let error = try #require(throws: LAPACKError.self) { try cholesky(indefinite) }
        #expect(error.routine == "spotrf" && error.info == 3 && error.description.contains("not positive definite"))
    }

    @Test func qrFloatAndDouble() throws {
        for (m, n) in [(30, 12), (12, 30), (20, 20)] {
            let a = randomMatrix(m, n, seed: 5, as: Double.self)
            let (q, r) = try qr(a)
            let k = min(m, n)
            #expect(maxAbsDiff(matmul(q, r), a) < 1e-13 * Double(m))
            #expect(maxAbsDiff(matmul(q, q, transA: true), Matrix<Double>.identity(k)) < 1e-13 * Double(m))
            for i in 0..<k { for j in 0..<i { #expect(r[i, j] == 0) } }
            let (qf, rf) = try qr(a.toFloat)
            #expect(maxAbsDiff(matmul(qf, rf), a) < 1e-5 * Double(m))
        }
    }
}
