import CLAPACK
import Foundation

/// The compute kernels OpenBLAS runs. Debian's OpenBLAS is built for every x86-64 CPU (DYNAMIC_ARCH) and
/// picks its kernels by CPU model when the library loads; a model it does not know gets its generic
/// SSE3 kernels ("Prescott"). Debian 12's OpenBLAS 0.3.21 does not know 5th-generation Xeons (family 6,
/// model 207), whose AVX-512 units its SkylakeX kernels use: there it ran sgemm at about 80 GFLOP/s
/// instead of 414 on 2 threads (docs/performance.md). `OPENBLAS_CORETYPE` overrides the choice, but only
/// when set before the library loads, so a tool that finds the fallback restarts itself with it set
/// (`BLASEnvironmentRestart` in MLACLI).
public enum BLASKernel {
    /// The kernels OpenBLAS chose, e.g. "SkylakeX", "Haswell" or "Prescott".
    public static var current: String { String(cString: openblas_get_corename()) }

    /// The environment variable that fixes OpenBLAS's kernels when set before it loads.
    public static let environmentVariable = "OPENBLAS_CORETYPE"

    /// OpenBLAS's kernels for an x86-64 CPU it did not recognize.
    static let fallback = "Prescott"

    /// The newest kernels this CPU's vector units run: SkylakeX's with AVX-512 (F, CD, BW, DQ, VL),
    /// Haswell's with AVX2 and FMA, else nil (OpenBLAS's own choice is as good as any).
    public static var forThisCPU: String? {
        if clapack_cpu_has_avx512_skx() != 0 { return "SkylakeX" }
        if clapack_cpu_has_avx2_fma() != 0 { return "Haswell" }
        return nil
    }

    /// The kernels to run instead of this process's, or nil when OpenBLAS's own choice stands.
    public static var recommended: String? {
        recommended(fixed: ProcessInfo.processInfo.environment[environmentVariable], current: current, forCPU: forThisCPU)
    }

    /// The kernels to run instead of `current`: `forCPU` when OpenBLAS fell back to its generic kernels
    /// and the environment does not fix the kernels (`fixed`, the variable's value; empty counts as
    /// unset), else nil.
    public static func recommended(fixed: String?, current: String, forCPU: String?) -> String? {
        guard fixed?.isEmpty ?? true, current == fallback else { return nil }
        return forCPU
    }
}
