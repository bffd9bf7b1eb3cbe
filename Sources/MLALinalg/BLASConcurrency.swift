import Foundation

/// Whether this process may call OpenBLAS from several threads at once. Debian 12's OpenBLAS 0.3.21
/// returns wrong results (NaN, eigensolvers that fail to converge) on some of its kernels when a
/// single-precision factorization runs while another thread runs a double-precision one: in a test of
/// two threads doing so 40 times each, 5-15 of the single-precision results were wrong on the
/// Prescott, Core2, Penryn, Dunnington, Atom and Barcelona kernels, with 2 BLAS threads each and
/// (rarely) with 1; none on the kernels in `verifiedKernels` (docs/performance.md, "Concurrent BLAS
/// calls"). On any other kernels every BLAS and LAPACK call of the process runs alone (`exclusive`),
/// and parallel work keeps all BLAS threads for each call instead of sharing them out (`inParallel`).
public enum BLASConcurrency {
    /// The kernels measured to give correct results under concurrent calls (`ConcurrentBLASTests`).
    public static let verifiedKernels: Set<String> = ["Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake"]

    /// True when calls may overlap: this process's kernels (`BLASKernel.current`) are verified.
    public static let callsMayOverlap = verifiedKernels.contains(BLASKernel.current)

    private static let lock = NSRecursiveLock()

    /// Runs `call` (one BLAS or LAPACK routine), alone in the process unless `callsMayOverlap`.
    static func exclusive<R>(_ call: () -> R) -> R {
        guard !callsMayOverlap else { return call() }
        lock.lock()
        defer { lock.unlock() }
        return call()
    }
}
