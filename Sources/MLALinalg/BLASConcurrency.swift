import Foundation

/// Whether this process may call OpenBLAS from several threads at once. Debian 12's OpenBLAS 0.3.21
/// returns wrong results (NaN, eigensolvers that fail to converge) on some of its kernels when a
/// single-precision factorization runs while another thread runs a double-precision one: in `check(runs:)`
/// (`mla-bench blas-concurrency`) up to 15 of 100 single-precision results came out wrong on the Prescott, Atom,
/// Barcelona and Core2 kernels (and on Penryn's and Dunnington's, Core2's family), mostly with 2 BLAS
/// threads per call but also with 1; none on the six measured in `verifiedKernels` (docs/performance.md,
/// "Concurrent BLAS calls"). On kernels not listed there every BLAS and LAPACK call of the process runs
/// alone (`exclusive`), and parallel work keeps all BLAS threads for each call instead of sharing them
/// out (`inParallel`).
public enum BLASConcurrency {
    /// The kernels measured to give correct results under concurrent calls (`check(runs:)`), and
    /// SapphireRapids', which are Cooperlake's for single and double precision (OpenBLAS's kernel list
    /// for it includes Cooperlake's) and could not be run on the machine measured.
    public static let verifiedKernels: Set<String> = ["Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"]

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
