import CLAPACK
import Foundation

/// How long OpenBLAS's idle threads wait for the next call before they sleep. After a call on several
/// threads, OpenBLAS's helper threads spin in `sched_yield` for 2^28 CPU cycles (about 0.1 s) by default
/// before they sleep. In the conversions, whose parallel work runs one BLAS thread per worker on every core
/// between such calls, that spinning takes CPU time from the workers: with it shortened, a default
/// conversion of the sample spent 5-7 s of system time instead of 12-16 s, and took 4 % less wall time
/// (docs/performance.md, "Idle BLAS threads"). `OPENBLAS_THREAD_TIMEOUT` shortens the spin, but only when
/// set before the library loads, so the tools restart themselves with it set (`BLASEnvironmentRestart` in
/// MLACLI).
public enum BLASIdleThreads {
    /// The environment variable OpenBLAS reads when it loads: the spin as a power of two of CPU cycles,
    /// clamped to 4...30.
    public static let environmentVariable = "OPENBLAS_THREAD_TIMEOUT"

    /// The tools' setting: OpenBLAS's shortest spin, 2^4 cycles, so idle threads sleep at once.
    public static let toolSetting = "4"

    /// The spin this process's OpenBLAS uses, as a power of two of CPU cycles (28 unless the variable set
    /// another when the library loaded); nil when this OpenBLAS build has no thread pool of its own
    /// (sequential or OpenMP builds), where the variable does nothing.
    public static var spinExponent: Int? {
        guard openblas_get_parallel() == 1 else { return nil }
        let read = Int(openblas_thread_timeout())
        return read > 0 ? min(max(read, 4), 30) : 28
    }

    /// The setting to restart with, or nil when the environment sets the spin already or this build has
    /// no thread pool of its own (a restart would change nothing).
    public static var recommended: String? {
        guard spinExponent != nil else { return nil }
        return recommended(fixed: ProcessInfo.processInfo.environment[environmentVariable])
    }

    /// `toolSetting` unless `fixed` (the variable's value; empty counts as unset) sets the spin.
    public static func recommended(fixed: String?) -> String? {
        (fixed?.isEmpty ?? true) ? toolSetting : nil
    }
}
