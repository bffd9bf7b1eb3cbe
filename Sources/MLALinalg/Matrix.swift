import MLATensor

/// A dense row-major matrix `rows × cols` of F32 or F64. Weights `[out, in]` from checkpoints map
/// directly onto it.
///
/// Everything here is `@inlinable` so client modules get code specialized for Float/Double: without
/// it each element access went through generic witness tables, which took 17 % of an 8B layer's
/// conversion time in `perf` (generic metadata lookups under `columns` and subscripts).
@frozen
public struct Matrix<T: LinalgScalar>: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    /// Row-major values, `rows * cols` of them.
    public var values: [T]

    @inlinable
    public init(rows: Int, cols: Int, values: [T]) {
        precondition(values.count == rows * cols, "Matrix: \(values.count) values for \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    @inlinable
    public static func zeros(_ rows: Int, _ cols: Int) -> Matrix {
        Matrix(rows: rows, cols: cols, values: [T](repeating: 0, count: rows * cols))
    }

    @inlinable
    public static func identity(_ n: Int) -> Matrix {
        var m = zeros(n, n)
        for i in 0..<n { m.values[i * n + i] = 1 }
        return m
    }

    @inlinable
    public subscript(r: Int, c: Int) -> T {
        get { values[r * cols + c] }
        set { values[r * cols + c] = newValue }
    }

    @inlinable
    public var transposed: Matrix {
        var out = [T](repeating: 0, count: rows * cols)
        let block = 32
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for r0 in stride(from: 0, to: rows, by: block) {
                    for c0 in stride(from: 0, to: cols, by: block) {
                        for r in r0..<min(r0 + block, rows) {
                            for c in c0..<min(c0 + block, cols) { dst[c * rows + r] = src[r * cols + c] }
                        }
                    }
                }
            }
        }
        return Matrix(rows: cols, cols: rows, values: out)
    }

    /// The matrices' rows one after another (all with the same column count).
    @inlinable
    public init(stacking parts: [Matrix]) {
        let cols = parts.first?.cols ?? 0
        precondition(parts.allSatisfy { $0.cols == cols }, "Matrix(stacking:): column counts differ")
        self.init(rows: parts.reduce(0) { $0 + $1.rows }, cols: cols, values: parts.flatMap(\.values))
    }

    /// Rows `range` as a new matrix.
    @inlinable
    public func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, values: Array(values[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }

    /// Columns `range` as a new matrix.
    @inlinable
    public func columns(_ range: Range<Int>) -> Matrix {
        let width = range.count
        var out = [T](repeating: 0, count: rows * width)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for r in 0..<rows {
                    for j in 0..<width { dst[r * width + j] = src[r * cols + range.lowerBound + j] }
                }
            }
        }
        return Matrix(rows: rows, cols: width, values: out)
    }

    /// Frobenius norm, accumulated in Double.
    @inlinable
    public var frobeniusNorm: Double {
        values.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }
}

extension Matrix where T == Float {
    /// The matrix in double precision (exact).
    @inlinable
    public var toDouble: Matrix<Double> { Matrix<Double>(rows: rows, cols: cols, values: widened(values)) }

    /// A 2-D floating tensor as a matrix (widened to F32).
    public init(_ tensor: Tensor) {
        precondition(tensor.shape.count == 2, "Matrix(tensor): shape \(tensor.shape) is not 2-D")
        self.init(rows: tensor.shape[0], cols: tensor.shape[1], values: tensor.floats())
    }
}

extension Matrix where T == Double {
    /// The matrix rounded to single precision.
    @inlinable
    public var toFloat: Matrix<Float> { Matrix<Float>(rows: rows, cols: cols, values: narrowed(values)) }
}

/// The values rounded to single precision.
@inlinable
public func narrowed(_ values: [Double]) -> [Float] { converted(values, Float.init) }

/// The values in double precision (exact).
@inlinable
public func widened(_ values: [Float]) -> [Double] { converted(values, Double.init) }

/// Element-wise `convert`, as a plain loop over unsafe buffers (`map` does not vectorize).
@inlinable
func converted<A, B>(_ values: [A], _ convert: (A) -> B) -> [B] {
    [B](unsafeUninitializedCapacity: values.count) { out, count in
        values.withUnsafeBufferPointer { v in
            for i in 0..<v.count { out.initializeElement(at: i, to: convert(v[i])) }
        }
        count = values.count
    }
}

/// Copies the upper triangle of the row-major [n × n] `values` onto the lower one (symmetric result).
@inlinable
public func mirrorUpperTriangle<T>(_ values: inout [T], n: Int) {
    values.withUnsafeMutableBufferPointer { v in
        for r in 1..<max(n, 1) { for c in 0..<r { v[r * n + c] = v[c * n + r] } }
    }
}

/// op(A)·op(B) through BLAS GEMM.
@inlinable
public func matmul<T>(_ a: Matrix<T>, _ b: Matrix<T>, transA: Bool = false, transB: Bool = false) -> Matrix<T> {
    let m = transA ? a.cols : a.rows, k = transA ? a.rows : a.cols
    let kb = transB ? b.cols : b.rows, n = transB ? b.rows : b.cols
    precondition(k == kb, "matmul: inner dimensions \(k) and \(kb) differ")
    var c = Matrix<T>.zeros(m, n)
    guard m > 0, n > 0 else { return c }
    if k == 0 { return c }
    a.values.withUnsafeBufferPointer { ap in
        b.values.withUnsafeBufferPointer { bp in
            c.values.withUnsafeMutableBufferPointer { cp in
                T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: ap.baseAddress!, lda: a.cols,
                       b: bp.baseAddress!, ldb: b.cols, beta: 0, c: cp.baseAddress!, ldc: n)
            }
        }
    }
    return c
}

/// Aᵀ·A [n × n] for A [k × n], through one SYRK (half the flops of the GEMM), both triangles filled.
@inlinable
public func gram<T>(_ a: Matrix<T>) -> Matrix<T> {
    let n = a.cols
    var c = Matrix<T>.zeros(n, n)
    guard n > 0, a.rows > 0 else { return c }
    a.values.withUnsafeBufferPointer { ap in
        c.values.withUnsafeMutableBufferPointer { cp in
            T.syrkTransposed(n: n, k: a.rows, alpha: 1, a: ap.baseAddress!, lda: n, beta: 0, c: cp.baseAddress!, ldc: n)
        }
    }
    mirrorUpperTriangle(&c.values, n: n)
    return c
}

/// B·L for L [n × n] lower triangular (BLAS TRMM; L's strict upper triangle is not read).
public func lowerTriangularProduct(_ b: Matrix<Double>, _ l: Matrix<Double>) -> Matrix<Double> {
    precondition(l.rows == l.cols && l.rows == b.cols, "lowerTriangularProduct: \(b.rows)×\(b.cols) times \(l.rows)×\(l.cols)")
    var x = b
    guard b.rows > 0, b.cols > 0 else { return x }
    l.values.withUnsafeBufferPointer { lp in
        x.values.withUnsafeMutableBufferPointer { xp in
            Double.trmmRightLower(m: b.rows, n: b.cols, t: lp.baseAddress!, ldt: l.cols, b: xp.baseAddress!, ldb: b.cols)
        }
    }
    return x
}

/// X with op(T)·X = B (`left`) or X·op(T) = B, for T [n × n] lower (`lower`) or upper triangular;
/// op(T) = Tᵀ when `transposed`. Forward/back substitution through BLAS TRSM.
@inlinable
public func triangularSolve<T>(_ t: Matrix<T>, lower: Bool, transposed: Bool = false, _ b: Matrix<T>, left: Bool = true) -> Matrix<T> {
    var x = b
    triangularSolve(t, lower: lower, transposed: transposed, inPlace: &x, left: left)
    return x
}

/// `triangularSolve` overwriting B with X.
@inlinable
public func triangularSolve<T>(_ t: Matrix<T>, lower: Bool, transposed: Bool = false, inPlace b: inout Matrix<T>, left: Bool = true) {
    precondition(t.rows == t.cols && t.rows == (left ? b.rows : b.cols), "triangularSolve: \(t.rows)×\(t.cols) against \(b.rows)×\(b.cols)")
    guard b.rows > 0, b.cols > 0 else { return }
    let (m, n) = (b.rows, b.cols)
    t.values.withUnsafeBufferPointer { tp in
        b.values.withUnsafeMutableBufferPointer { xp in
            T.trsm(left: left, lower: lower, transT: transposed, m: m, n: n, t: tp.baseAddress!, ldt: t.cols,
                   b: xp.baseAddress!, ldb: n)
        }
    }
}
