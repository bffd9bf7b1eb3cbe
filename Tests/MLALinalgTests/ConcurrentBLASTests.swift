import Foundation
import Testing
@testable import MLALinalg
import MLATestSupport

/// BLAS and LAPACK calls from several threads at once give the results they give alone
/// (`BLASConcurrency`). On the kernels where Debian's OpenBLAS 0.3.21 goes wrong under such calls
/// (Prescott's, Atom's, Barcelona's, Core2's) this holds only because each call then runs alone: with
/// the calls overlapping, 1-15 of the 100 single-precision results here came out wrong (NaN, or an
/// eigensolver that did not converge) on those kernels.
@Suite struct ConcurrentBLASTests {
    /// One thread runs a single-precision randomized eigendecomposition (GEMMs, QR, syevd) of a 576²
    /// matrix (a q_proj's size) 100 times while the other runs double-precision SVDs (gesdd) of a 256²
    /// one; every result must equal the one computed alone, to float rounding.
    @Test func concurrentFactorizationsMatchSerial() throws {
        let b = randomMatrix(576, 576, seed: 5, as: Float.self)
        let s = matmul(b, b, transB: true)
        let w = randomMatrix(256, 256, seed: 6, as: Double.self)
        let jobs: [@Sendable () throws -> [Double]] = [
            { try randomizedSymmetricEigen(s, rank: 16, oversampling: 64, tolerance: 1e-6, maxIterations: 4, seed: 1).values.map { Double($0) } },
            { try svd(w).s },
        ]
        // Two BLAS threads per call, whatever the test process runs on (scripts/test: one): the wrong
        // results came mostly with threaded calls.
        let threads = BLASThreads.current
        BLASThreads.set(max(2, threads))
        defer { BLASThreads.set(threads) }
        let alone = try jobs.map { try $0() }
        let tally = Tally()
        DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
            var runs = 0
            while j == 0 ? runs < 100 : !tally.firstJobDone {
                runs += 1
                let values = (try? jobs[j]()) ?? []
                let tolerance = (j == 0 ? 1e-4 : 1e-10) * alone[j][0]
                if values.count != alone[j].count || zip(values, alone[j]).contains(where: { !(abs($0 - $1) <= tolerance) }) {
                    tally.addMismatch(j)
                }
            }
            if j == 0 { tally.finishFirstJob() }
        }
        #expect(tally.mismatches == [:], "kernels \(BLASKernel.current), calls may overlap: \(BLASConcurrency.callsMayOverlap)")
    }
}

/// Wrong results per job, and whether the first job has finished its runs, from several threads.
private final class Tally: @unchecked Sendable {
    // @unchecked: `byJob` and `done` are guarded by `lock`.
    private let lock = NSLock()
    private var byJob: [Int: Int] = [:]
    private var done = false

    func addMismatch(_ job: Int) { lock.lock(); byJob[job, default: 0] += 1; lock.unlock() }
    func finishFirstJob() { lock.lock(); done = true; lock.unlock() }
    var mismatches: [Int: Int] { lock.lock(); defer { lock.unlock() }; return byJob }
    var firstJobDone: Bool { lock.lock(); defer { lock.unlock() }; return done }
}
