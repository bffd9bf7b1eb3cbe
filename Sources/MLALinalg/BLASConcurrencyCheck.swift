import Foundation

extension BLASConcurrency {
    /// What `check(runs:)` saw: how often each of its two jobs ran beside the other, and how many of
    /// those results differed from the one the job gives alone.
    public struct CheckResult: Sendable {
        /// Single-precision randomized eigendecompositions run, and how many came out wrong.
        public let singleRuns: Int, singleWrong: Int
        /// Double-precision SVDs run meanwhile, and how many came out wrong.
        public let doubleRuns: Int, doubleWrong: Int
        public var passed: Bool { singleWrong == 0 && doubleWrong == 0 }
    }

    /// Provokes the failure `callsMayOverlap` guards against, on this process's kernels and BLAS thread
    /// count: one thread computes a randomized eigendecomposition in F32 (GEMMs, QR, `ssyevd`) of a 576²
    /// Gram matrix (a q_proj's size) `runs` times, while another computes SVDs in F64 (`dgesdd`) of a
    /// 256² matrix until the first is done. Every result is compared with the one computed alone: the
    /// eigenvalues within 1e-4 of the largest, the singular values within 1e-10 of the largest. On the
    /// kernels that go wrong (docs/performance.md, "Concurrent BLAS calls") 1-15 of 100 F32 results did
    /// when the calls overlapped, mostly with 2 BLAS threads per call; with `exclusive` none.
    /// Changes nothing in the process but the BLAS work it does.
    public static func check(runs: Int) throws -> CheckResult {
        precondition(runs >= 1, "BLASConcurrency.check: at least one run")
        var generator = SplitMix64(seed: 5)
        let b = Matrix<Float>(rows: 576, cols: 576, values: generator.floats(576 * 576, scale: 1))
        let gram = matmul(b, b, transB: true)
        var doubles = SplitMix64(seed: 6)
        let w = Matrix<Double>(rows: 256, cols: 256, values: (0..<(256 * 256)).map { _ in Double(doubles.float(1)) })
        let jobs: [@Sendable () throws -> [Double]] = [
            { try randomizedSymmetricEigen(gram, rank: 16, oversampling: 64, tolerance: 1e-6, maxIterations: 4, seed: 1).values.map { Double($0) } },
            { try svd(w).s },
        ]
        let alone = try jobs.map { try $0() }
        let tally = Tally()
        DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
            while j == 0 ? tally.runs(of: 0) < runs : !tally.firstJobDone {
                let values = (try? jobs[j]()) ?? []
                let tolerance = (j == 0 ? 1e-4 : 1e-10) * alone[j][0]
                let wrong = values.count != alone[j].count || zip(values, alone[j]).contains { !(abs($0 - $1) <= tolerance) }
                tally.record(job: j, wrong: wrong)
            }
            if j == 0 { tally.finishFirstJob() }
        }
        return CheckResult(singleRuns: tally.runs(of: 0), singleWrong: tally.wrong(of: 0), doubleRuns: tally.runs(of: 1), doubleWrong: tally.wrong(of: 1))
    }
}

/// Runs and wrong results per job, and whether the first job has finished its runs, from several threads.
private final class Tally: @unchecked Sendable {
    // @unchecked: every stored property is read and written under `lock` only.
    private let lock = NSLock()
    private var counts = [(runs: 0, wrong: 0), (runs: 0, wrong: 0)]
    private var done = false

    func record(job: Int, wrong: Bool) {
        lock.lock()
        defer { lock.unlock() }
        counts[job].runs += 1
        if wrong { counts[job].wrong += 1 }
    }

    func runs(of job: Int) -> Int { lock.lock(); defer { lock.unlock() }; return counts[job].runs }
    func wrong(of job: Int) -> Int { lock.lock(); defer { lock.unlock() }; return counts[job].wrong }
    func finishFirstJob() { lock.lock(); done = true; lock.unlock() }
    var firstJobDone: Bool { lock.lock(); defer { lock.unlock() }; return done }
}
