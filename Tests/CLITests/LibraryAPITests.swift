import Foundation
import MLACheckpoint
import MLAConvert
import MLALinalg
import MLATestSupport
import Testing

/// A conversion through the `MLAConvert` API alone (a `ConversionPlan` run on a `Checkpoint`) writes the
/// same model as `mla-convert` with the same settings: the executable only parses, calls and prints.
@Suite(.serialized) struct LibraryAPITests {
    /// gqa2mla at half the cache with fixed rope flags, 1,024 calibration tokens (the default sequential
    /// pass with the o_proj refit), native format, uniform ranks (nothing searched): every tensor equal,
    /// bit for bit, and the same ranks in both summaries. Both on one BLAS thread: the thread count is
    /// process-wide, the in-process tests beside this one split it among their workers and set it back
    /// (`inParallel`), and on OpenBLAS's Haswell and Zen kernels a product's last bits follow it. With 2
    /// threads here, a run beside `refinedFinalistsDecideTheChoice` differed in every layer.
    @Test(.needsSampleData) func libraryConversionMatchesTheCLI() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", dir + "/cli", "--kv-budget", "0.5", "--rope-dim", "32",
                                           "--rope-frequencies", "high", "--freqfold", "1", "--calib-tokens", "1024",
                                           "--format", "native", "--rank-allocation", "uniform", "--threads", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")

        var plan = ConversionPlan(method: .gqa2mla(SharedRopeRequest(dims: 32, frequencies: .high, freqfold: .pairs(1))), format: .native)
        plan.budget = .fraction(0.5)
        plan.allocation = .uniform
        plan.calibration = .text(CalibrationText(tokens: 1024))
        plan.threads = 1
        let previous = BLASThreads.current
        BLASThreads.set(1)
        defer { BLASThreads.set(previous) }
        let writer = CheckpointWriter(format: .hf)
        let output = try writer.output(dir + "/library", force: false, inputs: [sample] + plan.calibration.inputs)
        let summary = try plan.run(checkpoint: try Checkpoint.open(sample), to: output, writer: writer)

        let cliSummary = try JSONValue.parse(r.stdout)
        let ranks = summary.layers.map(\.kvRank)
        #expect(ranks.count == 30 && ranks == cliSummary["layers"]?.array?.map { $0["kv_rank"]?.int ?? 0 })
        #expect(summary.calibration == cliSummary["calibration"]?.string)
        let cli = try Checkpoint.open(dir + "/cli").store, library = try Checkpoint.open(dir + "/library").store
        #expect(cli.names.sorted() == library.names.sorted())
        for name in cli.names {
            let a = try cli.tensor(name), b = try library.tensor(name)
            #expect(a.shape == b.shape && a.dtype == b.dtype, "\(name)")
            let x = a.floats().map(\.bitPattern), y = b.floats().map(\.bitPattern)
            #expect(differingCount(x, y) == 0, "\(name): \(differingCount(x, y)) of \(x.count) values differ")
        }
    }
}
