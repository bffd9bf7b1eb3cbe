import Foundation
import Testing
import MLATestSupport

/// The input fuzz test (docs/input-validation.md): `mla-bench fuzz` mutates real checkpoint files
/// and runs `mla-convert inspect` (and every tenth time `export`) on each mutation in a fresh
/// process; every run must end in success or a one-line error, never a signal, hang or leftover.
///
/// The count per format is bounded for CI (`MLA_FUZZ_COUNT`, default 1000: about 4000 mutations in
/// about 2.5 minutes on 2 cores). Seeds are deterministic; a failure prints the seed, and
/// `regressionSeeds` are run first every time.
@Suite(.serialized) struct InputFuzzTests {
    static let count = ProcessInfo.processInfo.environment["MLA_FUZZ_COUNT"].flatMap { Int($0) } ?? 1000
    /// First seed of the range (`MLA_FUZZ_START`, default 0): a nightly run can move on to new seeds.
    static let start = ProcessInfo.processInfo.environment["MLA_FUZZ_START"].flatMap { Int($0) } ?? 0

    /// Seeds that failed once, per target, kept as regression cases. The HDF5 seeds crashed
    /// (SIGSEGV in libhdf5's global heap) or hung libhdf5 on the superblock-0 files the writer
    /// produced before; they now run against the checksummed 1.10-format base. The GGUF seeds gave
    /// errors of 2 to 1638 lines (a key with a newline, a key swallowing part of the vocabulary).
    static let regressionSeeds: [String: [Int]] = ["hdf5": [613, 624, 716, 847], "gguf": [1496, 2410, 3044, 3641]]

    /// `exportEvery`: also run export on every N-th seed (a GGUF export dequantizes the whole sample
    /// model, about a second, so it runs rarely there).
    func fuzz(_ target: String, base: String, exportEvery: Int = 10) throws {
        let also = (Self.regressionSeeds[target] ?? []).map(String.init).joined(separator: ",")
        let r = try CLI.run("mla-bench", ["fuzz", "--target", target, "--base", base, "--seeds", "\(Self.start)..<\(Self.start + Self.count)",
                                          "--also", also, "--jobs", "2", "--timeout", "20", "--export-every", String(exportEvery)])
        #expect(r.status == 0, "fuzz \(target) failed:\n\(r.stdout)\(r.stderr)")
        let summary = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        print(summary)
        // The mutations must reach the readers' checks: a tenth of them at least is refused.
        let rejected = summary.firstMatch(of: /(\d+) rejected/).flatMap { Int($0.1) } ?? 0
        #expect(rejected * 10 >= Self.count, "fuzz \(target): only \(rejected) of \(Self.count) mutations were refused: \(summary)")
    }

    @Test func configJSON() throws { try fuzz("config", base: TinyModel.directory) }

    @Test func safetensors() throws { try fuzz("safetensors", base: TinyModel.directory) }

    @Test func hdf5() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h5 = dir + "/tiny.h5"
        let export = try CLI.run("mla-convert", ["export", TinyModel.directory, "-o", h5, "--format", "hdf5"])
        #expect(export.status == 0, "\(export.stderr)")
        try fuzz("hdf5", base: h5)
    }

    /// The sample GGUF's real header (metadata with the 49k-token vocabulary, 272 tensor infos).
    @Test(.needsSampleData) func gguf() throws {
        let sample = SampleData.modelPath
        try fuzz("gguf", base: sample, exportEvery: 250)
    }
}
