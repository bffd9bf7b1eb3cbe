import CKernels
import MLALinalg

/// Sums of products over many rows of F32 activations, kept in F64: each block of at most `blockRows`
/// rows is multiplied in F32 by one BLAS call and added into the F64 sum, so rounding does not grow
/// with the row count (a block's error is about √256 · 2⁻²⁴ ≈ 1e-6 of its entries' scale, far below
/// the sampling noise of statistics over calibration tokens). Used for calibration second moments and
/// the least-squares refits of a conversion.
public enum ProductSums {
    /// Rows per F32 block.
    public static let blockRows = 256

    /// Adds the upper triangle of Xᵀ·X to `upper` ([n × n] row-major; the lower triangle is left
    /// untouched) for x [rows × n], through SSYRK (half the flops of a GEMM).
    public static func addGram(_ upper: inout [Double], x: [Float], rows: Int, n: Int) {
        precondition(upper.count == n * n && x.count >= rows * n, "addGram: sizes disagree")
        // Written by each ssyrk (beta = 0) before it is read; only its upper triangle is used.
        var block = [Float](unsafeUninitializedCapacity: n * n) { $1 = n * n }
        x.withUnsafeBufferPointer { xp in
            block.withUnsafeMutableBufferPointer { bp in
                upper.withUnsafeMutableBufferPointer { sp in
                    for first in stride(from: 0, to: rows, by: blockRows) {
                        let count = min(blockRows, rows - first)
                        Float.syrkTransposed(n: n, k: count, alpha: 1, a: xp.baseAddress! + first * n, lda: n, beta: 0,
                                             c: bp.baseAddress!, ldc: n)
                        for i in 0..<n { ck_add_widened(sp.baseAddress! + i * n + i, bp.baseAddress! + i * n + i, n - i) }
                    }
                }
            }
        }
    }

    /// Adds Aᵀ·B to `sum` ([m × n] row-major) for a [rows × m] and b [rows × n].
    public static func addCross(_ sum: inout [Double], a: [Float], m: Int, b: [Float], n: Int, rows: Int) {
        precondition(sum.count == m * n && a.count >= rows * m && b.count >= rows * n, "addCross: sizes disagree")
        var block = [Float](unsafeUninitializedCapacity: m * n) { $1 = m * n }
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                block.withUnsafeMutableBufferPointer { cp in
                    sum.withUnsafeMutableBufferPointer { sp in
                        for first in stride(from: 0, to: rows, by: blockRows) {
                            let count = min(blockRows, rows - first)
                            Float.gemm(transA: true, transB: false, m: m, n: n, k: count, alpha: 1, a: ap.baseAddress! + first * m, lda: m,
                                       b: bp.baseAddress! + first * n, ldb: n, beta: 0, c: cp.baseAddress!, ldc: n)
                            ck_add_widened(sp.baseAddress!, cp.baseAddress!, m * n)
                        }
                    }
                }
            }
        }
    }
}
