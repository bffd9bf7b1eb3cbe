import Foundation
import MLACheckpoint
import MLATestSupport
import Testing

/// `--format gguf` through the command line: one file, read back by `mla-verify`.
@Suite(.serialized) struct GGUFCLITests {
    /// gqa2mla writes OUT.gguf (a single file, deepseek2 with the latent cache keys), and mla-verify
    /// ORIGINAL OUT.gguf reports the conversion's cache and the same perplexity as mla-verify perplexity.
    /// The rope plan is given, so nothing is searched (`DefaultsCLITests` covers the search).
    @Test(.needsSampleData) func gqa2mlaWritesAGGUFThatMLAVerifyReads() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory(), out = dir + "/out.gguf"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", out, "--format", "gguf", "--kv-budget", "0.5", "--rope-dim", "32",
                                            "--rope-frequencies", "high", "--freqfold", "1", "--calib-tokens", "1024", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try JSONValue.parse(r.stdout)["kv_cache"]?["converted_values_per_token"]?.int == 5760)
        let file = try GGUFFile(path: out)
        #expect(file.architecture == "deepseek2" && file.value("deepseek2.attention.kv_lora_rank")?.int == 160)
        #expect(file.value("mla_convert.method")?.string == "gqa2mla")
        let text = CLI.cache + "/corpus/hamlet_gut.txt"
        let v = try CLI.run("mla-verify", [sample, out, "--text", text, "--tokens", "256", "--layers", "0", "--json"])
        #expect(v.status == 0, "\(v.stderr)")
        let report = try JSONValue.parse(v.stdout)
        #expect(report["kv_cache"]?["converted_values_per_token"]?.int == 5760)
        let ppl = try #require(report["converted"]?["perplexity"]?.double)
        let alone = try CLI.run("mla-verify", ["perplexity", out, "--text", text, "--tokens", "256", "--json"])
        let separate = try #require(try JSONValue.parse(alone.stdout)["perplexity"]?.double)
        #expect(abs(separate / ppl - 1) < 1e-6, "\(separate) vs \(ppl)")
        // Its latent norms use the file's one epsilon, which a DeepSeek-V3 checkpoint cannot say: export
        // refuses in one line instead of writing a model with another latent norm, and writes nothing.
        for format in ["hf", "hdf5"] {
            let exported = dir + "/exported-" + format
            let e = try CLI.run("mla-convert", ["export", out, "-o", exported, "--format", format])
            #expect(e.status != 0 && e.stderr.split(separator: "\n").count == 1 && e.stderr.contains("--format deepseek"), "\(e.stderr)")
            #expect(!FileManager.default.fileExists(atPath: exported))
        }
        // A second run without --force refuses the existing file; with --force it replaces it (it carries mla_convert.kind).
        let again = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", out, "--format", "gguf", "--kv-lora-rank", "64", "--rope-dim", "32", "--no-calib"])
        #expect(again.status != 0 && again.stderr.split(separator: "\n").count == 1, "\(again.stderr)")
    }

    @Test("--dtype f16 is refused at once for the HF formats, whose latent-norm scales it cannot hold", .needsSampleData)
    func f16OnlyForGGUF() throws {
        let dir = CLI.temporaryDirectory(), out = dir + "/out"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run("mla-convert", ["gqa2mla", SampleData.modelPath, "-o", out, "--dtype", "f16", "--kv-budget", "0.5"])
        #expect(r.status != 0 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("gguf"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// The DeepSeek-V3 export's limit is printed with its summary (terminal and --json, so mla_convert.json too),
    /// not with the native format's; its config passes llama.cpp's expert check (fewer expert groups than experts).
    @Test func deepSeekSummaryStatesItsStorageLimit() throws {
        let dir = CLI.temporaryDirectory(), model = dir + "/synth"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try CLI.run("mla-bench", ["synth", "--shape", "small", "--layers", "2", "-o", model])
        #expect(synth.status == 0, "\(synth.stderr)")
        func note(_ text: String) -> [Substring] { text.split(separator: "\n").filter { $0.contains("note: keep this DeepSeek-V3 checkpoint F32 or BF16") } }
        let text = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/ds", "--no-calib"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(note(text.stdout).count == 1 && note(text.stdout)[0].contains("--format gguf"), "\(text.stdout)")
        let config = try JSONValue.parse(String(contentsOfFile: dir + "/ds/config.json", encoding: .utf8))
        let groups = try #require(config["n_group"]?.int), experts = try #require(config["n_routed_experts"]?.int)
        #expect(groups < experts)
        let json = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/ds-json", "--no-calib", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let printed = try #require(try JSONValue.parse(json.stdout)["note"]?.string)
        #expect(note(printed).count == 1)
        let saved = try JSONValue.parse(String(contentsOfFile: dir + "/ds-json/mla_convert.json", encoding: .utf8))
        #expect(saved["note"]?.string != nil)
        // (The synthetic model has no tokenizer, which --format gguf needs.)
        let native = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/native", "--no-calib", "--format", "native"])
        #expect(native.status == 0 && note(native.stdout).isEmpty, "\(native.stderr)")
    }
}
