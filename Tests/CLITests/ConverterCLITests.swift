import Foundation
import MLACheckpoint
import MLALinalg
import MLATensor
import Testing
import MLATestSupport

/// `mla-convert gqa2mla` and `mha2mla` run as a user runs them: a full conversion of the sample model
/// that `mla-verify` then checks, and refusals that leave nothing behind.
@Suite(.serialized) struct ConverterCLITests {
    /// (converter arguments, model_type written, kv_lora_rank, cache values per token of the whole model).
    /// The rope plan is given, so nothing is searched: the automatic search is `DefaultsCLITests`' subject.
    @Test("each converter's output has a consistent summary, cache, report and perplexity", .needsSampleData, arguments: [
        (["gqa2mla", "--kv-budget", "0.5", "--rope-dim", "32", "--rope-frequencies", "high", "--freqfold", "1"], "deepseek_v3", 160, 5760),
        (["mha2mla", "--kv-budget", "0.3125", "--rope-strategy", "high", "--rope-pairs", "4", "--rank-allocation", "uniform"], "mla_convert", 96, 3600),
    ])
    func converterEndToEnd(arguments: [String], modelType: String, rank: Int, cache: Int) throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory(), out = dir + "/out"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", [arguments[0], sample, "-o", out] + arguments.dropFirst() + ["--calib-tokens", "1024", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONValue.parse(r.stdout)
        #expect(summary["kv_cache"]?["source_values_per_token"]?.int == 11520)
        #expect(summary["kv_cache"]?["converted_values_per_token"]?.int == cache)
        #expect(summary["layers"]?.array?.count == 30)
        #expect(summary["layers"]?.array?.allSatisfy { $0["kv_rank"]?.int == rank } == true)
        let written = try JSONValue.parse(String(contentsOfFile: out + "/mla_convert.json", encoding: .utf8))
        #expect(written["layers"] == summary["layers"])
        let config = try JSONValue.parse(String(contentsOfFile: out + "/config.json", encoding: .utf8))
        #expect(config["model_type"]?.string == modelType)
        // mla-verify reads the output and reports the same cache saving.
        let text = CLI.cache + "/corpus/hamlet_gut.txt"
        let v = try CLI.run("mla-verify", [sample, out, "--text", text, "--tokens", "256", "--layers", "0", "--json", "--report", dir + "/report"])
        #expect(v.status == 0, "\(v.stderr)")
        let report = try JSONValue.parse(v.stdout)
        #expect(report["kv_cache"]?["converted_values_per_token"]?.int == cache)
        let ppl = try #require(report["converted"]?["perplexity"]?.double)
        #expect(ppl.isFinite && ppl > 1)
        // The HTML report found the converter's per-layer metadata (mla_convert.json).
        let html = try String(contentsOfFile: dir + "/report/index.html", encoding: .utf8)
        #expect(!html.contains("no conversion metadata"))
        // The same perplexity as mla-verify perplexity on the converted model alone.
        let alone = try CLI.run("mla-verify", ["perplexity", out, "--text", text, "--tokens", "256", "--json"])
        let separate = try #require(try JSONValue.parse(alone.stdout)["perplexity"]?.double)
        #expect(abs(separate / ppl - 1) < 1e-6, "\(separate) vs \(ppl)")
    }

    /// Calibration text of fewer windows than the o_proj refit (2) and the refinement (4) need: the
    /// conversion runs without them and its summary says so and how to get them, instead of claiming them.
    @Test(.needsSampleData) func tooFewWindowsForTheDefaultStages() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (tokens, refit) in [(512, false), (1024, true)] {
            let r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", dir + "/\(tokens)", "--kv-budget", "0.5", "--rope-dim", "32", "--rope-frequencies", "high",
                                                "--freqfold", "1", "--calib-tokens", "\(tokens)", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let summary = try JSONValue.parse(r.stdout)
            let calibration = try #require(summary["calibration"]?.string)
            #expect(calibration.contains("no refinement") && calibration.contains("--calib-tokens 2048 or more"), "\(calibration)")
            #expect(calibration.contains("refinement steps") == false, "\(calibration)")
            #expect(calibration.contains("no o_proj refit") == !refit, "\(calibration)")
            let stages = summary["stages"]?.array?.compactMap { $0["stage"]?.string } ?? []
            #expect(!stages.contains("refinement"), "\(stages)")
            #expect(stages.contains("o_proj refit") == refit, "\(stages)")
            let layers = try #require(summary["layers"]?.array)
            #expect(layers.allSatisfy { $0["errors"] != nil && $0["errors"]?["refinement_step_kept"] == nil })
        }
    }

    /// Two layers converted at once on one BLAS thread each (the default for small layers on
    /// several cores) write the same tensors as one layer at a time on two BLAS threads.
    @Test(.needsSampleData) func layerWorkersWriteTheSameModel() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var outputs: [Checkpoint] = []
        for (name, options) in [("one", ["--layer-workers", "1", "--threads", "2"]), ("two", ["--layer-workers", "2", "--threads", "1"])] {
            let r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", dir + "/" + name, "--kv-budget", "0.5", "--no-calib", "--json"] + options)
            #expect(r.status == 0, "\(r.stderr)")
            let workers = name == "one" ? "1 layer worker × 2 BLAS threads" : "2 layer workers × 1 BLAS thread"
            let settings = try JSONValue.parse(r.stdout)["settings"]
            #expect(settings?["parallelism"]?.string == workers)
            // The tool's kernels: this process's, unless the tool restarted on better ones.
            #expect(settings?["blas"]?.string == "OpenBLAS \(BLASKernel.recommended ?? BLASKernel.current) kernels")
            outputs.append(try Checkpoint.open(dir + "/" + name))
        }
        let (one, two) = (outputs[0].store, outputs[1].store)
        #expect(one.names.sorted() == two.names.sorted())
        for name in one.names {
            let a = try one.tensor(name), b = try two.tensor(name)
            #expect(a.shape == b.shape, "\(name)")
            let x = a.floats(), y = b.floats()
            let scale = max(x.map(abs).max() ?? 0, 1e-30)
            let diff = zip(x, y).map { abs($0 - $1) }.max() ?? 0
            #expect(diff / scale < 1e-5, "\(name): \(diff / scale)")
        }
    }

    /// A DeepSeek-V3 or GGUF output holds one rope key for all heads, so with the sample's 3 KV heads
    /// mha2mla without `--rope-strategy` keeps rorope there (it kept `high`, which those formats refuse),
    /// and `high` in the native format.
    @Test(.needsSampleData, arguments: [("deepseek", "rorope"), ("gguf", "rorope"), ("native", "high")])
    func mha2mlaKeepsAStrategyTheFormatHolds(format: String, strategy: String) throws {
        let dir = CLI.temporaryDirectory(), out = dir + "/out"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", ["mha2mla", SampleData.modelPath, "-o", out, "--format", format, "--no-calib", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let rope = try #require(try JSONValue.parse(r.stdout)["settings"]?["rope"]?.string)
        #expect(rope.hasPrefix(strategy + ":"), "\(rope)")
        // inspect counts the rope key's pairs, not those of the whole query/key head (nope + rope).
        let pairs = try #require(rope.firstMatch(of: /keeps (\d+) pairs/).map { String($0.1) })
        let inspect = try CLI.run("mla-convert", ["inspect", out])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout.contains(format == "native" ? "pairs set per layer" : pairs + " pairs (qk_rope_head_dim)"), "\(inspect.stdout)")
    }

    /// inspect of a BF16 DeepSeek-V3 output: its stored dtype (read from layer 0's k_proj, which an MLA
    /// model lacks, so it said F32) and its interleaved rope layout (it said rotate-half for every model).
    @Test(.needsSampleData) func inspectDescribesAnMLAOutput() throws {
        let dir = CLI.temporaryDirectory(), out = dir + "/out"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", ["gqa2mla", SampleData.modelPath, "-o", out, "--no-calib", "--dtype", "bf16"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONValue.parse(try CLI.run("mla-convert", ["inspect", out, "--json"]).stdout)
        let values = try #require(json["kv_cache_values_per_token"]?.int)
        #expect(json["kv_cache_stored_dtype"]?.string == "BF16" && json["kv_cache_bytes_per_token_stored"]?.int == 2 * values)
        // The latent rank and rope key of the fixed rule at 50 % (rope 32 of 192 values), and the cache per layer.
        #expect(json["kv_lora_rank"]?.int == 160 && json["qk_rope_head_dim"]?.int == 32)
        #expect(json["cache_values_per_layer"]?.array?.map(\.int) == Array(repeating: 192, count: 30))
        let text = try CLI.run("mla-convert", ["inspect", out]).stdout
        #expect(text.contains("interleaved layout") && text.contains("\(groupDigits(2 * values)) at BF16 (") && !text.contains("at F32"), "\(text)")
        #expect(try CLI.run("mla-convert", ["inspect", SampleData.modelPath]).stdout.contains("rotate-half layout"))
    }

    @Test("impossible requests fail with one line before any work and write nothing", .needsSampleData, arguments: [
        ["gqa2mla", "--kv-budget", "1.5"],
        ["gqa2mla", "--kv-lora-rank", "5000"],
        ["gqa2mla", "--rope-dim", "66"],
        ["gqa2mla", "--rank-allocation", "greedy"],
        ["mha2mla", "--rope-pairs", "40"],
        ["mha2mla", "--rope-strategy", "uniform", "--uniform-start", "8", "--no-calib"],
        ["mha2mla", "--kv-lora-rank", "100000", "--no-calib"],
        ["mha2mla", "--kv-budget", "0"],
        ["mha2mla", "--rope-strategy", "2-norm", "--no-calib"],
        ["gqa2mla", "--calib-tokens", "1024", "--refine-steps", "8"],
        ["mha2mla", "--calib-tokens", "512", "--output-refit"],
        ["mha2mla", "--calib-window", "1"],
    ])
    func impossibleRequests(arguments: [String]) throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory(), out = dir + "/out"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", [arguments[0], sample, "-o", out] + arguments.dropFirst())
        #expect(r.status == 64, "\(r.stderr)")
        // One line (no usage lines after it) and no progress: the refusal came before calibration. It names
        // the flag to change, and the model file when the model sets the limit.
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("--"), "\(r.stderr)")
        if arguments.contains("--rope-pairs") || arguments.contains("--uniform-start") || arguments.contains("--kv-lora-rank") {
            #expect(r.stderr.hasPrefix("Error: \(sample): "), "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
