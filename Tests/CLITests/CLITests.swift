import Foundation
import Testing
import MLACheckpoint
import MLAConvert
import MLARuntime
import MLATestSupport

/// Runs the built `mla-convert` / `mla-verify` executables (they sit beside the test bundle) the way
/// a user does, checking output, exit status, one-line errors, and that inputs stay untouched.
enum CLI {
    static let binDirectory: String = {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while !url.path.hasSuffix(".xctest") && url.pathComponents.count > 1 { url.deleteLastPathComponent() }
        return url.deletingLastPathComponent().path
    }()

    static var cache: String { SampleData.cache }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs `tool` with `arguments`, the test process's environment changed by `environment` (a nil
    /// value removes the variable), without the `OPENBLAS_NUM_THREADS` that `scripts/test` sets for the
    /// in-process tests: the tool runs on all cores, as users run it.
    static func run(_ tool: String, _ arguments: [String], environment: [String: String?] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binDirectory + "/" + tool)
        process.arguments = arguments
        var changed = ProcessInfo.processInfo.environment
        changed["OPENBLAS_NUM_THREADS"] = nil
        for (name, value) in environment { changed[name] = value }
        process.environment = changed
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "mla-cli-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

@Suite(.serialized) struct CLITests {
    @Test(.needsSampleData) func inspectSampleModel() throws {
        let sample = SampleData.modelPath
        let r = try CLI.run("mla-convert", ["inspect", sample, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONValue.parse(r.stdout)
        #expect(json["family"]?.string == "llama")
        #expect(json["num_layers"]?.int == 30 && json["hidden_size"]?.int == 576)
        #expect(json["num_heads"]?.int == 9 && json["num_kv_heads"]?.int == 3 && json["head_dim"]?.int == 64)
        #expect(json["rope_theta"]?.double == 100000)
        #expect(json["kv_cache_values_per_token"]?.int == 2 * 3 * 64 * 30)
        #expect(json["parameters"]?.int == 134_515_008)
        let text = try CLI.run("mla-convert", ["inspect", sample, "--tensors"])
        #expect(text.stdout.contains("GQA: 9 heads, 3 KV heads") && text.stdout.contains("Q4_1"))
    }

    /// Bad inputs: one line on stderr naming the file, non-zero exit, no output written.
    @Test(.needsSampleData) func badInputsFailCleanly() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = try Data(contentsOf: URL(fileURLWithPath: sample))
        let truncated = dir + "/truncated.gguf"
        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: truncated))
        let badMagic = dir + "/bad.gguf"
        var bytes = original.prefix(4096)
        bytes[0] = UInt8(ascii: "X")
        try bytes.write(to: URL(fileURLWithPath: badMagic))
        let emptyDir = dir + "/empty"
        try FileManager.default.createDirectory(atPath: emptyDir, withIntermediateDirectories: false)
        try Data("{\"model_type\": \"qwen3\"}".utf8).write(to: URL(fileURLWithPath: emptyDir + "/config.json"))
        for (input, mention) in [(truncated, "truncated.gguf"), (badMagic, "bad.gguf"), (emptyDir, "empty"),
                                 (dir + "/missing.gguf", "missing.gguf")] {
            let r = try CLI.run("mla-convert", ["export", input, "-o", dir + "/out"])
            #expect(r.status != 0, "\(input)")
            let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
            #expect(lines.count == 1, "\(r.stderr)")
            #expect(r.stderr.contains(mention), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: sample)) == original, "input unchanged")
    }

    @Test(.needsSampleData) func exportRefusesToOverwriteWithoutForce() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: false)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: dir + "/out/keep.txt"))
        let r = try CLI.run("mla-convert", ["export", sample, "-o", dir + "/out"])
        #expect(r.status != 0 && r.stderr.contains("--force"))
        #expect(try String(contentsOfFile: dir + "/out/keep.txt", encoding: .utf8) == "precious")
        let bad = try CLI.run("mla-convert", ["export", sample, "-o", dir + "/x", "--dtype", "int4"])
        #expect(bad.status == 64 && bad.stderr.contains("--dtype"))
    }

    @Test(.needsSampleData) func perplexityCommandMatchesReference() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hamlet = try Data(contentsOf: URL(fileURLWithPath: CLI.cache + "/corpus/hamlet_gut.txt"))
        try hamlet[3000..<6000].write(to: URL(fileURLWithPath: dir + "/excerpt.txt"))
        let r = try CLI.run("mla-verify", ["perplexity", sample, "--text", dir + "/excerpt.txt", "--tokens", "512", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONValue.parse(r.stdout)
        #expect(abs((json["perplexity"]?.double ?? 0) / 50.020 - 1) < 0.005)
        #expect(json["tokens"]?.int == 511)
        #expect(abs((json["top1"]?.double ?? 0) - 0.364) < 0.005)
        let ids = try CLI.run("mla-verify", ["perplexity", sample, "--ids", "6403,1980,253,655,28,260", "--json"])
        #expect(ids.status == 0)
        #expect(try JSONValue.parse(ids.stdout)["tokens"]?.int == 5)
        let help = try CLI.run("mla-verify", ["perplexity", "--help"])
        #expect(help.stdout.contains("without BOS") && help.stdout.contains("exp(mean NLL"))
    }

    /// docs/samples.md greedy generation through the command line.
    @Test(.needsSampleData) func generateMatchesReference() throws {
        let sample = SampleData.modelPath
        let r = try CLI.run("mla-verify", ["generate", sample, "--prompt", "Once upon a time", "--tokens", "10", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONValue.parse(r.stdout)
        #expect(json["generated_ids"]?.array?.compactMap(\.int) == [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228])
        #expect(json["text"]?.string == ", the city of Nova Haven was a thriving metropolis")
    }
}

extension CLITests {
    /// The exact head merge of the sample model written natively, with the energy figures a converter
    /// records (all 1: nothing is truncated).
    static func writeHeadMerge(of sample: String, to path: String) throws {
        let checkpoint = try Checkpoint.open(sample)
        let c = checkpoint.config
        let layers = try (0..<c.numLayers).map { try MLALayerWeights.headMerge(c, checkpoint.store, layer: $0) }
        let energy: JSONValue = .object([("kv_energy_retained", JSONValue(1.0)), ("rope_energy_retained", JSONValue(1.0))])
        let writer = CheckpointWriter(format: .hf)
        try MLAModelWriter.write(NativeMLAEncoder(source: checkpoint, provenance: [("method", .object([("name", .string("head-merge (test)"))]))],
                                                  writer: writer),
                                 to: try writer.output(path, force: false, inputs: [sample]), layers: layers,
                                 layerExtras: layers.map { _ in [("errors", energy)] })
    }

    /// `--report` on a lossless MLA conversion of the real model: the page is written with one mark per
    /// layer in every per-layer chart, no external references, and the JSON's numbers; absorbed and
    /// naive MLA agree to float rounding and the values match the source's. A second run into the
    /// same directory without --force fails at once with one line and leaves the page as it was.
    @Test(.needsSampleData) func reportOfLosslessMLAConversion() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.writeHeadMerge(of: sample, to: dir + "/mla")
        let report = dir + "/report"
        let r = try CLI.run("mla-verify", [sample, dir + "/mla", "--tokens", "256", "--window", "128", "--report", report, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONValue.parse(r.stdout)
        #expect((json["mla_core"]?["absorbed_vs_naive_max_rel"]?.double ?? 1) < 1e-4)
        let layers = try #require(json["layers"]?.array)
        #expect(layers.count == 30 && layers.allSatisfy {
            ($0["values_rel_error"]?.double ?? 1) < 1e-5 && $0["keys_comparable"]?.bool == false
        })
        let page = ReportPage(try String(contentsOfFile: report + "/index.html", encoding: .utf8))
        let all = (0..<30).map(String.init)
        for series in ["relative error", "1 − cosine"] { #expect(page.markKeys(series: series) == [all, all], "\(series)") }
        for series in ["kv rank", "kv energy retained", "rope energy retained", "attention output max rel diff"] {
            #expect(page.markKeys(series: series) == [all], "\(series)")
        }
        #expect(!page.html.contains("http://") && !page.html.contains("https://"))
        #expect(page.tableValues.count > 100 && page.mismatches(with: json).isEmpty, "\(page.mismatches(with: json))")

        let before = try Data(contentsOf: URL(fileURLWithPath: report + "/index.html"))
        let again = try CLI.run("mla-verify", [sample, dir + "/mla", "--report", report])
        #expect(again.status != 0)
        #expect(again.stderr.split(separator: "\n").count == 1 && again.stderr.contains(report) && again.stderr.contains("--force"),
                "\(again.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: report).sorted() == [OutputManifest.fileName, "index.html"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: report + "/index.html")) == before)
        // With --force a report replaces a report, never the converted model (a mistyped --report path
        // replaced the model directory with the page).
        let other = dir + "/tiny"
        #expect(try CLI.run("mla-bench", ["synth", "--shape", "tiny", "-o", other]).status == 0)
        let model = try FileManager.default.contentsOfDirectory(atPath: other).sorted()
        let overModel = try CLI.run("mla-verify", [sample, dir + "/mla", "--tokens", "16", "--report", other, "--force"])
        #expect(overModel.status == 1 && overModel.stderr.contains("is a model of mla-convert, and this command writes a verification report"),
                "\(overModel.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: other).sorted() == model)
        let overReport = try CLI.run("mla-verify", [sample, dir + "/mla", "--tokens", "16", "--window", "8", "--report", report, "--force"])
        #expect(overReport.status == 0, "\(overReport.stderr)")
    }
}
