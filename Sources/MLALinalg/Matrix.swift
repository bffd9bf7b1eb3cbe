import MLATensor

/// A dense row-major matrix `rows × cols` of F32 or F64. Weights `[out, in]` from checkpoints map
/// directly onto it.
public struct Matrix<T: LinalgScalar>: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    /// Row-major values, `rows * cols` of them.
    public var values: [T]

    public init(rows: Int, cols: Int, values: [T]) {
        precondition(values.count == rows * cols, "Matrix: \(values.count) values for \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    public static func zeros(_ rows: Int, _ cols: Int) -> Matrix {
        Matrix(rows: rows, cols: cols, values: [T](repeating: 0, count: rows * cols))
    }

    public static func identity(_ n: Int) -> Matrix {
        var m = zeros(n, n)
        for i in 0..<n { m.values[i * n + i] = 1 }
        return m
    }

    public subscript(r: Int, c: Int) -> T {
        get { values[r * cols + c] }
        set { values[r * cols + c] = newValue }
    }

    public var transposed: Matrix {
        var out = Matrix.zeros(cols, rows)
        for r in 0..<rows {
            for c in 0..<cols { out.values[c * rows + r] = values[r * cols + c] }
        }
        return out
    }

    /// Rows `range` as a new matrix.
    public func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, values: Array(values[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }

    /// Columns `range` as a new matrix.
    public func columns(_ range: Range<Int>) -> Matrix {
        var out = Matrix.zeros(rows, range.count)
        for r in 0..<rows {
            for (j, c) in range.enumerated() { out.values[r * range.count + j] = values[r * cols + c] }
        }
        return out
    }

    /// Frobenius norm, accumulated in Double.
    public var frobeniusNorm: Double {
        values.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }
}

extension Matrix where T == Float {
    /// The matrix in double precision (exact).
    public var toDouble: Matrix<Double> { Matrix<Double>(rows: rows, cols: cols, values: values.map(Double.init)) }

    /// A 2-D floating tensor as a matrix (widened to F32).
    public init(_ tensor: Tensor) {
        precondition(tensor.shape.count == 2, "Matrix(tensor): shape \(tensor.shape) is not 2-D")
        self.init(rows: tensor.shape[0], cols: tensor.shape[1], values: tensor.floats())
    }
}

extension Matrix where T == Double {
    /// The matrix rounded to single precision.
    public var toFloat: Matrix<Float> { Matrix<Float>(rows: rows, cols: cols, values: values.map(Float.init)) }
}

/// op(A)·op(B) through BLAS GEMM.
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
