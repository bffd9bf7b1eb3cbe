import Foundation
import Testing
import MLACheckpoint
import MLALinalg
import MLATensor

/// `mla-bench synth`: the synthetic checkpoints the scale measurements of docs/performance.md use.
@Suite(.serialized) struct SynthCommandTests {
    /// An interrupted write leaves neither the output nor its temporary sibling, and the process ends
    /// by the signal it got.
    @Test func interruptRemovesThePartialOutput() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binDirectory + "/mla-bench")
        process.arguments = ["synth", "--shape", "medium", "-o", dir + "/out"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let partial = "\(dir)/.out.partial-\(process.processIdentifier)"
        let deadline = Date().addingTimeInterval(60)
        // Wait until the temporary output exists, so the signal lands mid-write.
        while Date() < deadline, process.isRunning, !FileManager.default.fileExists(atPath: partial) {
            usleep(20_000)
        }
        usleep(500_000)
        #expect(process.isRunning, "the write finished before it could be interrupted")
        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGTERM,
                "ended by \(process.terminationReason == .exit ? "exit" : "signal") \(process.terminationStatus)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// A loadable sharded Llama checkpoint of the requested shape whose matrices have the designed
    /// spectrum (not white noise), whose norms sit around 1, and whose bytes the seed alone fixes.
    @Test func smallShapeIsLoadableStructuredAndSeeded() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func synth(_ name: String, seed: Int) throws -> String {
            let out = dir + "/" + name
            let r = try CLI.run("mla-bench", ["synth", "--shape", "small", "--layers", "1", "--seed", String(seed),
                                              "--max-shard-size", "100MB", "-o", out])
            #expect(r.status == 0, "\(r.stderr)")
            return out
        }
        let a = try synth("a", seed: 7)
        let checkpoint = try Checkpoint.open(a)
        let c = checkpoint.config
        #expect(c.family == .llama && c.numLayers == 1 && c.hiddenSize == 1024 && c.intermediateSize == 2816)
        #expect(c.numHeads == 8 && c.numKVHeads == 2 && c.headDim == 128 && c.vocabSize == 32000)
        #expect(c.ropeTheta == 10000 && c.rmsNormEps == 1e-5 && !c.tiedEmbeddings)
        let files = try FileManager.default.contentsOfDirectory(atPath: a).sorted()
        #expect(files == [OutputManifest.fileName, "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                          "model.safetensors.index.json"])
        #expect(checkpoint.store.names.count == 12)
        for name in checkpoint.store.names { #expect(try checkpoint.store.tensor(name).dtype == .bf16, "\(name)") }

        // W = c·A·diag(σ)·B + E·diag(τ) with 90 % of the energy in the rank-256 part: the top 256
        // singular values hold at least that, and at most that plus the top-256 share of the colored
        // noise's 10 % (88 %, numpy). Past 256 the spectrum keeps decaying: σ₇₆₇/σ₂₅₆ is 0.14 where a
        // white-noise tail (Marchenko–Pastur) gives 0.31. Elements have RMS 1/√1024.
        let q = Matrix<Float>(try checkpoint.store.tensor(LayerTensorNames(layer: 0).qProj))
        let sigma = try svd(q).s.map { Double($0) }
        let top = sigma.prefix(256).reduce(0) { $0 + $1 * $1 } / sigma.reduce(0) { $0 + $1 * $1 }
        #expect(top > 0.9 && top < 0.9 + 0.1 * 0.88 + 0.01, "energy in the top 256: \(top)")
        #expect(sigma[767] / sigma[256] < 0.2, "tail ratio \(sigma[767] / sigma[256])")
        let rms = (q.frobeniusNorm * q.frobeniusNorm / Double(q.values.count)).squareRoot()
        #expect(abs(rms * 32 - 1) < 0.01, "element RMS \(rms)")
        // Norm weights exp(u/2), u uniform in [-1, 1]: inside [e^-½, e^½] = [0.607, 1.649] widened by
        // BF16 rounding (2^-8 relative), mean sinh(½)/½ = 1.042.
        let norm = try checkpoint.store.tensor(LayerTensorNames(layer: 0).inputNorm).floats()
        #expect(norm.allSatisfy { $0 > 0.604 && $0 < 1.656 })
        #expect(abs(norm.reduce(0, +) / 1024 - 1.042) < 0.02)

        func contents(_ dir: String) throws -> [Data] {
            try files.map { try Data(contentsOf: URL(fileURLWithPath: dir + "/" + $0)) }
        }
        let same = try synth("b", seed: 7), other = try synth("c", seed: 8)
        #expect(try contents(a) == contents(same))
        #expect(try contents(a)[2] != contents(other)[2], "the first shard depends on the seed")
    }

    /// A model without a tokenizer verifies from `--ids`, one layer at a time (the layer count as
    /// progress): a synthetic 2-layer checkpoint converted weights-only to a stock DeepSeek-V3 export
    /// gives a report whose original perplexity is `mla-verify perplexity`'s on the same ids, with
    /// the MLA core's two forms equal to float rounding and every layer measured.
    @Test func verifiesATokenizerlessModelFromIds() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = dir + "/synth", mla = dir + "/mla"
        var r = try CLI.run("mla-bench", ["synth", "--shape", "small", "--layers", "2", "-o", synth])
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("mla-convert", ["gqa2mla", synth, "-o", mla, "--no-calib", "--kv-lora-rank", "128"])
        #expect(r.status == 0, "\(r.stderr)")
        let ids = (0..<300).map { String(($0 * 7919 + 13) % 32000) }.joined(separator: ",")
        r = try CLI.run("mla-verify", [synth, mla, "--ids", ids, "--window", "128", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONValue.parse(r.stdout)
        #expect(report["tokens"]?.int == 297 && report["layers"]?.array?.count == 2)
        #expect(r.stderr.contains("verify: 3 done"), "\(r.stderr)")
        #expect((report["mla_core"]?["absorbed_vs_naive_max_rel"]?.double ?? 1) < 1e-4)
        let ratio = try #require(report["perplexity_ratio"]?.double)
        #expect(ratio.isFinite && ratio > 0)
        // The perplexity gate: just under the measured ratio it fails and says why, just over it passes.
        r = try CLI.run("mla-verify", [synth, mla, "--ids", ids, "--window", "128", "--max-ppl-increase", String(ratio * 0.999)])
        #expect(r.status == 1 && r.stderr.contains("is above --max-ppl-increase"), "\(r.stderr)")
        r = try CLI.run("mla-verify", [synth, mla, "--ids", ids, "--window", "128", "--max-ppl-increase", String(ratio * 1.001)])
        #expect(r.status == 0 && !r.stderr.contains("--max-ppl-increase"), "\(r.stderr)")
        r = try CLI.run("mla-verify", ["perplexity", synth, "--ids", ids, "--window", "128", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let alone = try #require(try JSONValue.parse(r.stdout)["perplexity"]?.double)
        let inReport = try #require(report["original"]?["perplexity"]?.double)
        #expect(abs(alone / inReport - 1) < 1e-9, "\(alone) vs \(inReport)")
        r = try CLI.run("mla-verify", [synth, mla, "--ids", "5,32000"])
        #expect(r.status != 0 && r.stderr.contains("32000"), "\(r.stderr)")
        // An empty piece of --layers is refused (',' selected no layer and dropped the per-layer part).
        r = try CLI.run("mla-verify", [synth, mla, "--ids", ids, "--window", "128", "--layers", "0,"])
        #expect(r.status == 64 && r.stderr.contains("--layers: '' is not a layer index"), "\(r.stderr)")
    }

    /// A window longer than the model's trained context (the tiny shape's 512 positions) is noted on
    /// standard error; it ran silently. One within it is not.
    @Test func windowsBeyondTheContextAreNoted() throws {
        let dir = CLI.temporaryDirectory(), model = dir + "/tiny"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try CLI.run("mla-bench", ["synth", "--shape", "tiny", "-o", model]).status == 0)
        let ids = (0..<600).map { String(3 + $0 % 250) }.joined(separator: ",")
        let beyond = try CLI.run("mla-verify", ["perplexity", model, "--ids", ids, "--window", "600"])
        #expect(beyond.status == 0 && beyond.stderr.contains("note: a window of 600 tokens is beyond \(model)'s context of 512 positions"), "\(beyond.stderr)")
        let within = try CLI.run("mla-verify", ["perplexity", model, "--ids", ids, "--window", "512"])
        #expect(within.status == 0 && !within.stderr.contains("beyond"), "\(within.stderr)")
        let empty = try CLI.run("mla-verify", ["perplexity", model, "--ids", "5,,6"])
        #expect(empty.status == 64 && empty.stderr.contains("--ids: '' is not a token id"), "\(empty.stderr)")
    }

    /// A weight that is not a number where the readers do not look (an MLP) makes the perplexity NaN:
    /// `mla-verify perplexity` prints it and fails, as it does with --json (which cannot hold it); it
    /// exited 0 in text mode. The converters and export copy that tensor: they refuse it naming the
    /// source file and the tensor (the writers' check named the temporary output) and write nothing;
    /// the converters before any work (one line, no progress).
    @Test func aNaNWeightFailsEveryTool() throws {
        let dir = CLI.temporaryDirectory(), model = dir + "/tiny"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try CLI.run("mla-bench", ["synth", "--shape", "tiny", "-o", model])
        #expect(synth.status == 0, "\(synth.stderr)")
        // Its summary counts the parameters in digits (the tiny shape's count printed as "0.00 B").
        let parameters = try Checkpoint.open(model).parameterCount
        #expect(synth.stdout.contains("21 tensors, \(groupDigits(parameters)) parameters"), "\(synth.stdout)")
        // One BF16 NaN (0x7FC0) as the first element of layer 1's up_proj.
        let path = model + "/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        let header = try JSONValue.parse(bytes.subdata(in: 8..<(8 + headerLength)))
        let offset = try #require(header["model.layers.1.mlp.up_proj.weight"]?["data_offsets"]?.array?.first?.int)
        #expect(header["model.layers.1.mlp.up_proj.weight"]?["dtype"]?.string == "BF16")
        bytes[8 + headerLength + offset] = 0xC0
        bytes[8 + headerLength + offset + 1] = 0x7F
        try bytes.write(to: URL(fileURLWithPath: path))
        let r = try CLI.run("mla-verify", ["perplexity", model, "--ids", "1,2,3,4,5,6"])
        #expect(r.status == 1 && r.stdout.contains("perplexity nan") && r.stderr.contains("not finite"), "\(r.stdout)\(r.stderr)")
        // DeepSeek-V3 (gqa2mla's default), native (mha2mla's) and export; a GGUF output needs a tokenizer.
        for (arguments, out) in [(["gqa2mla", model, "--no-calib"], dir + "/mla"), (["mha2mla", model, "--no-calib"], dir + "/mla"),
                                 (["export", model], dir + "/exported")] {
            let refused = try CLI.run("mla-convert", arguments + ["-o", out])
            #expect(refused.status == 1 && refused.stderr.contains("Error: \(path): tensor 'model.layers.1.mlp.up_proj.weight': holds a non-finite value at element 0"),
                    "\(arguments): \(refused.stderr)")
            if arguments[0] != "export" { #expect(refused.stderr.split(separator: "\n").count == 1, "\(arguments): \(refused.stderr)") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["tiny"])
        }
    }
}
