import Foundation
import MLALinalg

/// Restarts a tool on OpenBLAS's right kernels when the library fell back to its generic ones
/// (`BLASKernel.recommended`): sets `OPENBLAS_CORETYPE` and executes the same program with the same
/// arguments again, so that the library loads anew and reads it. Nothing has run yet at that point
/// (no output, no file opened), and the restarted process sees the variable and does not restart again.
/// When the restart fails the tool says so in one line and goes on, slower, on the kernels it has.
public enum BLASKernelRestart {
    public static func restartIfNeeded() {
        guard let kernels = BLASKernel.recommended else { return }
        #if os(Linux)
        setenv(BLASKernel.environmentVariable, kernels, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv(BLASKernel.environmentVariable)
        #endif
        writeStandardError("note: OpenBLAS runs its generic \(BLASKernel.current) kernels on this CPU and the restart on its \(kernels) kernels failed; "
                           + "set \(BLASKernel.environmentVariable)=\(kernels) for about 5x faster matrix products\n")
    }
}
