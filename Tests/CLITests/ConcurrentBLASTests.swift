import Foundation
import Testing

/// BLAS and LAPACK calls from several threads at once give the results they give alone
/// (`BLASConcurrency`). On the kernels where Debian's OpenBLAS 0.3.21 goes wrong under such calls
/// (Prescott's, Atom's, Barcelona's, Core2's) this holds only because each call then runs alone: with
/// the calls overlapping, 1-15 of the 100 single-precision results came out wrong on those kernels.
/// The check runs in its own process (`mla-bench blas-concurrency`), on 2 BLAS threads per call: in the
/// test process it changed the process-wide thread count under the tests running beside it, whose
/// products then rounded differently from one call to the next (a tight comparison failed on that in CI).
@Suite struct ConcurrentBLASTests {
    /// One thread runs a single-precision randomized eigendecomposition (GEMMs, QR, syevd) of a 576²
    /// matrix 100 times while the other runs double-precision SVDs (gesdd) of a 256² one; every result
    /// must equal the one computed alone, to float rounding, and the tool's one line says so.
    @Test func concurrentFactorizationsMatchSerial() throws {
        let r = try CLI.run("mla-bench", ["blas-concurrency"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let line = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!line.contains(" 1 threads per call"), "calls must be threaded: \(line)")
        let svds = line.components(separatedBy: "0 of 100 F32 eigendecompositions and 0 of ").last.flatMap { Int($0.prefix { $0.isNumber }) }
        #expect(line.hasSuffix("F64 SVDs differ from their results alone") && (svds ?? 0) > 0, "\(line)")
    }
}
