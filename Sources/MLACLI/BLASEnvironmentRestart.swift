import Foundation
import MLALinalg

/// Restarts a tool with the OpenBLAS settings that take effect only when the library loads: its right
/// kernels when it fell back to its generic ones (`BLASKernel.recommended`), and a short spin of its idle
/// threads unless the environment sets one (`BLASIdleThreads.recommended`). It sets the variables and
/// executes the same program (by its own path, so that it keeps its name) with the same arguments
/// again, so that the library loads anew and reads them. Nothing has run yet at that point (no output,
/// no file opened), and the restarted process finds them set and does not restart again. When the
/// restart fails the tool goes on with what it has, and says so in one line when that leaves it on the
/// generic kernels.
public enum BLASEnvironmentRestart {
    public static func restartIfNeeded() {
        let kernels = BLASKernel.recommended
        let settings = Self.settings(kernels: kernels, spin: BLASIdleThreads.recommended)
        guard !settings.isEmpty else { return }
        #if os(Linux)
        for (name, value) in settings { setenv(name, value, 1) }
        // By its own path first: a process executed through /proc/self/exe is named "exe" in ps, top,
        // pgrep and killall.
        if let path = realpath("/proc/self/exe", nil) {
            execv(path, CommandLine.unsafeArgv)
            free(path)
        }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        for (name, _) in settings { unsetenv(name) }
        #endif
        guard let kernels else { return }
        writeStandardError("note: OpenBLAS runs its generic \(BLASKernel.current) kernels on this CPU and the restart on its \(kernels) kernels failed; "
                           + "set \(BLASKernel.environmentVariable)=\(kernels) for about 5x faster matrix products\n")
    }

    /// The variables to set before the restart, as (name, value): the kernels and the spin that are due
    /// (nil: not due). Empty when nothing is due, and then the tool does not restart.
    static func settings(kernels: String?, spin: String?) -> [(name: String, value: String)] {
        [(BLASKernel.environmentVariable, kernels), (BLASIdleThreads.environmentVariable, spin)].compactMap { name, value in value.map { (name, $0) } }
    }
}
