import Foundation
import Testing
import MLACheckpoint
import MLATensor
import MLATestSupport

/// The typed option values (`--dtype`, `--format`, `--max-shard-size`, `--freqfold`): a value that does
/// not parse is refused in one line naming the values allowed, with exit 64 and no output; one that
/// parses is accepted in any case the tools document and shapes the output.
@Suite(.serialized) struct TypedOptionCLITests {
    @Test("bad option values are refused in one line naming the fix", arguments: [
        ("mla-convert", ["export", "m", "-o", "out", "--dtype", "int4"], "Please provide one of 'f32', 'bf16' or 'f16'"),
        ("mla-convert", ["export", "m", "-o", "out", "--dtype", "i32"], "Please provide one of 'f32', 'bf16' or 'f16'"),
        ("mla-convert", ["export", "m", "-o", "out", "--format", "onnx"], "Please provide one of 'hf' and 'hdf5'"),
        ("mla-convert", ["export", "m", "-o", "out", "--max-shard-size", "5XB"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
        ("mla-convert", ["export", "m", "-o", "out", "--max-shard-size", "0"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
        ("mla-convert", ["export", "m", "-o", "out", "--max-shard-size", "-1GB"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
        ("mla-convert", ["export", "m", "-o", "out", "--max-shard-size", "1e30GB"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--dtype", "f16"], "--dtype f16 is written only with --format gguf"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--dtype", "q8_0"], "--dtype q8_0 is written only with --format gguf"),
        ("mla-convert", ["mha2mla", "m", "-o", "out", "--dtype", "float32"], "Please provide one of 'f32', 'bf16', 'f16' or 'q8_0'"),
        ("mla-convert", ["mha2mla", "m", "-o", "out", "--max-shard-size", "GB"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--freqfold", "0"], "'--freqfold <n|auto>'"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--freqfold", "Auto"], "'--freqfold <n|auto>'"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--freqfold", "2.5"], "'--freqfold <n|auto>'"),
        ("mla-bench", ["synth", "--shape", "tiny", "-o", "out", "--max-shard-size", "2XB"], "'--max-shard-size <n[KB|MB|GB|KiB|MiB|GiB]>'"),
    ])
    func badValuesAreRefused(tool: String, arguments: [String], mention: String) throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CommandLineErrorTests.expectOneLineUsageError(tool, arguments.map { $0 == "out" ? dir + "/out" : $0 }, mention: mention)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// `export` of the committed tiny GGUF with `--dtype BF16` (upper case) and `--max-shard-size 2KiB`
    /// writes BF16 floats in shards of at most 2048 bytes of tensor data (a tensor larger than the limit
    /// sits alone); `--format hdf5` writes one file holding the same tensors.
    @Test func exportTakesTypedValues() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("gguf/tiny_llama.gguf")
        let hf = try CLI.run("mla-convert", ["export", source, "-o", dir + "/hf", "--dtype", "BF16", "--max-shard-size", "2KiB"])
        #expect(hf.status == 0, "\(hf.stderr)")
        #expect(hf.stdout.contains("(hf, "))
        let sharded = try SafetensorsDirectoryStore(directory: dir + "/hf")
        #expect(sharded.files.count > 1)
        for file in sharded.files {
            let infos = file.names.compactMap { file.info($0) }
            #expect(infos.allSatisfy { !$0.dtype.isComputeFloat || $0.dtype == .bf16 })
            #expect(infos.count == 1 || infos.reduce(0) { $0 + $1.storedBytes } <= 2048, "\(file.path)")
        }
        let hdf5 = try CLI.run("mla-convert", ["export", source, "-o", dir + "/model.h5", "--format", "hdf5"])
        #expect(hdf5.status == 0, "\(hdf5.stderr)")
        var isDirectory: ObjCBool = true
        #expect(FileManager.default.fileExists(atPath: dir + "/model.h5", isDirectory: &isDirectory) && !isDirectory.boolValue)
        #expect(Set(try Checkpoint.open(dir + "/model.h5").store.names) == Set(sharded.names))
    }

    /// `gqa2mla --freqfold 2` with the other rope flags fixed converts with that fold, as given, and
    /// `--dtype F32` writes F32 tensors; the summary lists the stages that ran, FreqFold among them.
    @Test func freqfoldAndDTypeAreTaken() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try ConverterInputCLITests.synth(in: dir)
        let r = try CLI.run("mla-convert", ["gqa2mla", synth, "-o", dir + "/out", "--no-calib", "--rope-dim", "16",
                                            "--rope-frequencies", "high", "--freqfold", "2", "--dtype", "F32", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONValue.parse(r.stdout)
        #expect(summary["settings"]?["rope"]?.string?.contains("high pairs, stride 1, freqfold 2 (as given)") == true, "\(r.stdout)")
        #expect(summary["settings"]?["dtype"]?.string == "F32")
        let stages = summary["stages"]?.array?.compactMap { stage in stage["stage"]?.string.map { ($0, stage["exactness"]?.string ?? "") } }
        #expect(stages?.map(\.0) == ["rope rotation", "freqfold", "rope truncation", "latent factorization", "softmax scale fold",
                                      "linear-regime norm", "residual rescale"], "\(r.stdout)")
        #expect(stages?.first { $0.0 == "freqfold" }?.1 == "lossy" && stages?.first { $0.0 == "rope rotation" }?.1 == "exact")
        let store = try Checkpoint.open(dir + "/out").store
        #expect(store.names.compactMap { store.info($0) }.filter { $0.dtype.isComputeFloat }.allSatisfy { $0.dtype == .f32 })
    }
}

/// `FlopCount`, which the conversions' `work_flops` and scripts/phase-cost's GEMM floor read, counted in a
/// process of its own (tests running beside each other share the in-process counter): `mla-bench gemm`
/// times 3 GEMMs of the shape, so exactly 3 · 2mnk operations land in the precision it ran and none in the other.
@Suite struct FlopCountCLITests {
    @Test(arguments: [false, true])
    func gemmIsCountedExactlyInItsPrecision(double: Bool) throws {
        let (m, n, k) = (37, 23, 41)
        let r = try CLI.run("mla-bench", ["gemm", "--shape", "\(m),\(n),\(k)"] + (double ? ["--double"] : []))
        #expect(r.status == 0, "\(r.stderr)")
        let words = r.stdout.split(separator: " ")
        let counted = try #require(words.firstIndex(of: "counted"), "no count in: \(r.stdout)")
        let single = Double(words[counted + 1]), doubles = Double(words[counted + 4])
        let expected = Double(3 * 2 * m * n * k)
        #expect(single == (double ? 0 : expected) && doubles == (double ? expected : 0), "\(r.stdout)")
    }
}
