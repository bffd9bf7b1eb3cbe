import ArgumentParser
import MLACLI
import MLALinalg

extension Bench {
    struct ConcurrencyCheck: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "blas-concurrency",
            abstract: "Check that BLAS and LAPACK calls from two threads at once give the results they give alone.",
            discussion: """
            Some of Debian 12's OpenBLAS 0.3.21 kernel sets return wrong results when two threads of a process \
            call it at once; the tools then make every call wait for the one before (docs/performance.md, \
            "Concurrent BLAS calls"). This runs an F32 eigendecomposition --runs times beside F64 SVDs on this \
            machine's kernels (OPENBLAS_CORETYPE chooses others), at least 2 BLAS threads per call, and exits \
            with 1 if any result differs from the one computed alone.
            """)
        @Option(help: "Runs of the single-precision eigendecomposition.") var runs = 100
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        }

        func run() throws {
            runtime.apply()
            // The wrong results came mostly with threaded calls.
            if runtime.threads == nil { BLASThreads.set(max(2, BLASThreads.current)) }
            let result = try BLASConcurrency.check(runs: runs)
            print("blas-concurrency: OpenBLAS \(BLASKernel.current) kernels, \(BLASThreads.current) threads per call, "
                  + "calls \(BLASConcurrency.callsMayOverlap ? "overlapping" : "one at a time"): "
                  + "\(result.singleWrong) of \(result.singleRuns) F32 eigendecompositions and \(result.doubleWrong) of "
                  + "\(result.doubleRuns) F64 SVDs differ from their results alone")
            guard result.passed else {
                writeStandardError("Error: concurrent BLAS calls gave wrong results on OpenBLAS \(BLASKernel.current) kernels; "
                                   + "run the tools with OPENBLAS_CORETYPE set to a kernel set this check passes on (docs/performance.md)\n")
                throw ExitCode.failure
            }
        }
    }
}
