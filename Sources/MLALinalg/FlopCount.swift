import Foundation

/// Floating-point operations the BLAS and LAPACK calls of this process have done, per precision: the
/// work of a run, against which its time is compared with the machine's large-GEMM rate (its "GEMM
/// floor", docs/performance.md). Level-3 BLAS calls are counted exactly (GEMM 2mnk, SYRK n²k, TRSM
/// m·n·side); LAPACK factorizations by their textbook operation counts (Golub and Van Loan, *Matrix
/// Computations*, 4th ed., §5 and §8), which are estimates: the iterative parts of an eigensolver
/// depend on the matrix. Work outside BLAS and LAPACK (softmax, norms, element-wise loops) is not counted.
public enum FlopCount {
    /// Operations in single and double precision.
    public struct Totals: Sendable, Equatable {
        public var single: Double
        public var double: Double

        public init(single: Double = 0, double: Double = 0) {
            self.single = single
            self.double = double
        }

        /// The operations done between `earlier` and these totals.
        public func since(_ earlier: Totals) -> Totals { Totals(single: single - earlier.single, double: double - earlier.double) }
    }

    private static let lock = NSLock()
    // Whole operations in integers, so that differences of totals are exact.
    nonisolated(unsafe) private static var single = 0
    nonisolated(unsafe) private static var double = 0

    /// Operations so far (every thread of the process).
    public static var totals: Totals {
        lock.lock()
        defer { lock.unlock() }
        return Totals(single: Double(single), double: Double(double))
    }

    /// Adds `flops` operations (rounded to a whole number) done on `T` scalars.
    @usableFromInline
    static func add<T: LinalgScalar>(_ flops: Double, _: T.Type) {
        let whole = Int(flops.rounded())
        lock.lock()
        if T.self == Float.self { single += whole } else { double += whole }
        lock.unlock()
    }
}
