#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MLALinalg
import MLARuntime

/// Options every subcommand that does numeric work shares.
public struct RuntimeOptions: ParsableArguments {
    @Option(help: "BLAS threads (default: all cores; parallel layer or calibration workers use one each unless this is given).")
    public var threads: Int?

    @Flag(help: "Print peak memory, wall and CPU time to standard error when the command ends.")
    public var stats = false

    public init() {}

    /// Refuses a thread count below 1 (OpenBLAS would silently use its own default).
    public func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// Sets the BLAS thread count and the allocator (`AllocatorTuning`) and, with `--stats`, arranges
    /// for `ResourceUsage.summary` to be printed at process exit (also after an error), so every
    /// command gets it without its own code.
    public func apply() {
        AllocatorTuning.reuseFreedBuffers()
        if let threads { BLASThreads.set(threads) }
        if stats { atexit { writeStandardError("stats: " + ResourceUsage.summary + "\n") } }
    }
}
