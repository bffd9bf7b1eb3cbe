import CLAPACK
import Foundation

/// Scalars BLAS and LAPACK routines exist for (single and double precision).
public protocol LinalgScalar: BinaryFloatingPoint & Sendable {
    /// C[m×n] = alpha·op(A)·op(B) + beta·C, all row-major with leading dimensions (elements per row).
    /// op(A) is m×k (A stored k×m when `transA`), op(B) is k×n (B stored n×k when `transB`).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Self,
                     a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// The upper triangle of C[n×n] = alpha·Aᵀ·A + beta·C for A [k × n], row-major with leading
    /// dimensions; the strict lower triangle of C is not touched. Half the flops of the GEMM.
    static func syrkTransposed(n: Int, k: Int, alpha: Self, a: UnsafePointer<Self>, lda: Int,
                               beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// B[m×n] ← op(T)⁻¹·B (`left`) or B·op(T)⁻¹ with T triangular (`lower` or upper), row-major.
    static func trsm(left: Bool, lower: Bool, transT: Bool, m: Int, n: Int, t: UnsafePointer<Self>, ldt: Int,
                     b: UnsafeMutablePointer<Self>, ldb: Int)
}

/// The beta to call a GEMM with after C [m × n] (leading dimension `ldc`) is zeroed here when `beta` is 0:
/// OpenBLAS's own zeroing (its `gemm_beta` loop, 4 % of the default conversion's CPU time) is slower than
/// `memset` for the many small products with short inner dimensions (the per-head scores), and the kernel
/// then adds its product to zero, which gives the same bits (docs/performance.md, "Zeroing C").
@inline(__always)
func zeroedForAccumulation<T: BinaryFloatingPoint>(_ beta: T, _ c: UnsafeMutablePointer<T>, m: Int, n: Int, ldc: Int) -> T {
    guard beta == 0, m > 0, n > 0 else { return beta }
    if ldc == n {
        memset(c, 0, m * n * MemoryLayout<T>.stride)
    } else {
        for row in 0..<m { memset(c + row * ldc, 0, n * MemoryLayout<T>.stride) }
    }
    return 1
}

extension Float: LinalgScalar {
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        FlopCount.add(2 * Double(m) * Double(n) * Double(k), Float.self)
        let beta = zeroedForAccumulation(beta, c, m: m, n: n, ldc: ldc)
        BLASConcurrency.exclusive { cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                                                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc)) }
    }
}

extension Float {
    public static func syrkTransposed(n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        FlopCount.add(Double(n) * Double(n) * Double(k), Float.self)
        BLASConcurrency.exclusive { cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, blasint(n), blasint(k), alpha, a, blasint(lda), beta, c, blasint(ldc)) }
    }

    public static func trsm(left: Bool, lower: Bool, transT: Bool, m: Int, n: Int, t: UnsafePointer<Float>, ldt: Int,
                            b: UnsafeMutablePointer<Float>, ldb: Int) {
        FlopCount.add(Double(m) * Double(n) * Double(left ? m : n), Float.self)
        BLASConcurrency.exclusive { cblas_strsm(CblasRowMajor, left ? CblasLeft : CblasRight, lower ? CblasLower : CblasUpper, transT ? CblasTrans : CblasNoTrans,
                                                CblasNonUnit, blasint(m), blasint(n), 1, t, blasint(ldt), b, blasint(ldb)) }
    }
}

extension Double: LinalgScalar {
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                            a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                            beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        FlopCount.add(2 * Double(m) * Double(n) * Double(k), Double.self)
        let beta = zeroedForAccumulation(beta, c, m: m, n: n, ldc: ldc)
        BLASConcurrency.exclusive { cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                                                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc)) }
    }
}

extension Double {
    public static func syrkTransposed(n: Int, k: Int, alpha: Double, a: UnsafePointer<Double>, lda: Int,
                                      beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        FlopCount.add(Double(n) * Double(n) * Double(k), Double.self)
        BLASConcurrency.exclusive { cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, blasint(n), blasint(k), alpha, a, blasint(lda), beta, c, blasint(ldc)) }
    }

    public static func trsm(left: Bool, lower: Bool, transT: Bool, m: Int, n: Int, t: UnsafePointer<Double>, ldt: Int,
                            b: UnsafeMutablePointer<Double>, ldb: Int) {
        FlopCount.add(Double(m) * Double(n) * Double(left ? m : n), Double.self)
        BLASConcurrency.exclusive { cblas_dtrsm(CblasRowMajor, left ? CblasLeft : CblasRight, lower ? CblasLower : CblasUpper, transT ? CblasTrans : CblasNoTrans,
                                                CblasNonUnit, blasint(m), blasint(n), 1, t, blasint(ldt), b, blasint(ldb)) }
    }

    /// B[m×n] ← B·T for T [n × n] lower triangular, row-major (half the flops of the GEMM).
    public static func trmmRightLower(m: Int, n: Int, t: UnsafePointer<Double>, ldt: Int, b: UnsafeMutablePointer<Double>, ldb: Int) {
        FlopCount.add(Double(m) * Double(n) * Double(n), Double.self)
        BLASConcurrency.exclusive { cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, blasint(m), blasint(n), 1, t, blasint(ldt), b, blasint(ldb)) }
    }
}

/// OpenBLAS's thread count is process-global: set it once at program start (from `--threads`).
public enum BLASThreads {
    public static func set(_ count: Int) { openblas_set_num_threads(Int32(max(1, count))) }
    public static var current: Int { Int(openblas_get_num_threads()) }
    /// OpenBLAS build description (kernel, threading), for logs and benchmark records.
    public static var configuration: String { String(cString: openblas_get_config()) }
}
