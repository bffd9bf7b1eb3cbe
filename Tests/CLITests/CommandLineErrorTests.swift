import Foundation
import Testing
import MLACheckpoint

/// How the tools refuse a command line: one line on standard error and a non-zero exit (issue 19:
/// each validation error was followed by "Usage: …" and "See '… --help'" lines), checked options
/// (`--max-ppl-increase nan` disabled the gate) and a CONVERTED model that is no conversion.
@Suite(.serialized) struct CommandLineErrorTests {
    /// Exactly one line, `Error: …` mentioning `mention`, and exit status 64 (EX_USAGE).
    static func expectOneLineUsageError(_ tool: String, _ arguments: [String], mention: String) throws {
        let r = try CLI.run(tool, arguments)
        #expect(r.status == 64, "\(arguments): exit \(r.status)")
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        #expect(lines.count == 1 && lines[0].hasPrefix("Error: ") && lines[0].contains(mention), "\(arguments): \(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    /// Errors from `validate()` of several commands and option groups, one from `run()`, and command
    /// lines that do not parse (which lose their usage hint too: `--help` shows it on request).
    @Test("usage errors are one line", arguments: [
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--kv-budget", "1.5"], "--kv-budget"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--kv-lora-rank", "8", "--kv-budget", "0.5"], "not both"),
        ("mla-convert", ["mha2mla", "m", "-o", "out", "--rope-pairs", "0"], "--rope-pairs"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--refine-steps", "-1"], "--refine-steps"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--refine-steps", "4", "--no-calib"], "--refine-steps"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--refine-steps", "4", "--refine-rate", "0"], "--refine-rate"),
        ("mla-convert", ["export", "m", "-o", "out", "--dtype", "int4"], "--dtype"),
        ("mla-convert", ["export", "m", "-o", "out", "--format", "onnx"], "--format"),
        // Options that would otherwise be accepted and do nothing (or, --threads 0, leave BLAS's default).
        ("mla-convert", ["export", "m", "-o", "out", "--deflate", "3"], "--deflate"),
        ("mla-convert", ["export", "m", "-o", "out", "--format", "hdf5", "--max-shard-size", "1GB"], "--max-shard-size"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--format", "gguf", "--max-shard-size", "1GB"], "--max-shard-size"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--threads", "0"], "--threads"),
        ("mla-convert", ["mha2mla", "m", "-o", "out", "--rope-strategy", "high", "--uniform-start", "3"], "--uniform-start"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--calib-mix", "plays=1,plays=2"], "plays is given twice"),
        ("mla-convert", ["calibrate", "m", "-o", "out", "--no-calib"], "Unknown option '--no-calib'"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--bogus"], "--bogus"),
        ("mla-convert", ["gqa2mla", "m", "-o", "out", "--format", "onnx"], "'onnx'"),
        ("mla-convert", ["gqa2mla"], "<model>"),
        ("mla-verify", ["a", "b", "--tokens", "1"], "--tokens"),
        ("mla-verify", ["a", "b", "--text", "t.txt", "--ids", "1,2"], "not both"),
        ("mla-verify", ["perplexity", "a", "--ids", "1,2", "--bogus"], "--bogus"),
        ("mla-verify", ["perplexity", "a"], "--text FILE or --ids"),
        ("mla-verify", ["perplexity", "a", "--ids", "1,2", "--bos"], "--bos applies to --text"),
        ("mla-bench", ["synth", "--shape", "huge", "-o", "out"], "huge"),
        ("mla-bench", ["blas-concurrency", "--runs", "0"], "--runs"),
    ])
    func usageErrorsAreOneLine(tool: String, arguments: [String], mention: String) throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.expectOneLineUsageError(tool, arguments.map { $0 == "out" ? dir + "/out" : $0 }, mention: mention)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// `calibrate` reads text: its help lists the text options and not --calib-stats or --no-calib,
    /// which it refused (they shared the converters' option group); every tool prints its version.
    @Test func calibrateOffersOnlyTextOptionsAndToolsHaveVersions() throws {
        let help = try CLI.run("mla-convert", ["calibrate", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--calib-mix") && help.stdout.contains("--calib-tokens"))
        #expect(!help.stdout.contains("--calib-stats") && !help.stdout.contains("--no-calib"), "\(help.stdout)")
        for tool in ["mla-convert", "mla-verify", "mla-bench"] {
            let version = try CLI.run(tool, ["--version"])
            #expect(version.status == 0 && version.stdout == ToolkitVersion.string + "\n", "\(tool): \(version.stdout)")
        }
    }

    /// `--max-ppl-increase` must be a finite ratio above 0: NaN compared false and disabled the gate.
    @Test(arguments: ["nan", "inf", "0", "-1", "-inf"])
    func maxPerplexityIncreaseIsChecked(value: String) throws {
        try Self.expectOneLineUsageError("mla-verify", ["a", "b", "--max-ppl-increase=" + value], mention: "--max-ppl-increase")
    }

    /// CONVERTED without MLA attention is refused in one line naming it and its family, unless
    /// `--allow-non-mla` asks for the comparison (here of a model with itself: no drift).
    @Test func nonMLAConvertedModelIsRefusedUnlessAllowed() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try ConverterInputCLITests.synth(in: dir)
        let arguments = [synth, synth, "--ids", "1,2,3,4,5,6,7,8", "--window", "4", "--json"]
        try Self.expectOneLineUsageError("mla-verify", arguments, mention: "\(synth) is a llama model without MLA attention")
        let allowed = try CLI.run("mla-verify", arguments + ["--allow-non-mla"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        let json = try JSONValue.parse(allowed.stdout)
        #expect(json["mla_core"]?.isNull == true && (json["kl"]?["max"]?.double ?? 1) < 1e-6)
        // One token is a usage error, as in `perplexity` (it exited 1).
        try Self.expectOneLineUsageError("mla-verify", [synth, synth, "--ids", "5", "--allow-non-mla"], mention: "need at least 2 tokens, the input has 1")
    }
}
