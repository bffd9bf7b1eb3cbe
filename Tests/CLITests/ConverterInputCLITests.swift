import Foundation
import Testing
import MLACheckpoint
import MLATensor

/// What a converter does with checkpoints whose tensors differ from what the config describes: more
/// layers than `num_hidden_layers`, legacy `rotary_emb.inv_freq` buffers, a missing or unknown tensor,
/// and weights that overflow when converted. Each runs the built tools on a 2-layer synthetic model.
@Suite(.serialized) struct ConverterInputCLITests {
    /// The converter invocations each case runs (weights only, so each takes about a second).
    static let converters: [[String]] = [
        ["gqa2mla", "--no-calib"], ["gqa2mla", "--no-calib", "--format", "native"],
        ["mha2mla", "--no-calib", "--rope-strategy", "high"],
    ]

    /// A 2-layer `mla-bench synth --shape small` model in `dir`/synth.
    static func synth(in dir: String) throws -> String {
        let path = dir + "/synth"
        let r = try CLI.run("mla-bench", ["synth", "--shape", "small", "--layers", "2", "-o", path])
        #expect(r.status == 0, "\(r.stderr)")
        return path
    }

    /// A model directory `path` with `source`'s config.json (edited by `config`) and one
    /// model.safetensors holding `source`'s tensors as `edit` leaves them.
    static func variant(of source: String, at path: String, config: (String) -> String = { $0 },
                        edit: (inout [(String, Tensor)]) -> Void) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let text = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
        try Data(config(text).utf8).write(to: URL(fileURLWithPath: path + "/config.json"))
        let store = try SafetensorsDirectoryStore(directory: source)
        var tensors = try store.names.map { ($0, try store.tensor($0)) }
        edit(&tensors)
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        try SafetensorsWriter.writeFile(path + "/model.safetensors",
                                        entries: tensors.map { TensorWriteEntry(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) },
                                        metadata: [:]) { byName[$0]! }
    }

    /// Tensor names in an output directory as written (not as a `Checkpoint` would show them).
    static func writtenNames(_ dir: String) throws -> [String] { try SafetensorsDirectoryStore(directory: dir).names }

    /// Weights of 2 layers under a config of 1 (issue 19: an index-out-of-range trap in every
    /// converter): one warning line up front naming the ignored tensors, and a consistent 1-layer output.
    @Test func layersPastTheConfigAreIgnoredWithOneWarning() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try Self.synth(in: dir), trimmed = dir + "/trimmed"
        try FileManager.default.createDirectory(atPath: trimmed, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: trimmed + "/model.safetensors", withDestinationPath: synth + "/model.safetensors")
        let config = try String(contentsOfFile: synth + "/config.json", encoding: .utf8)
        #expect(config.contains("\"num_hidden_layers\": 2"))
        try Data(config.replacingOccurrences(of: "\"num_hidden_layers\": 2", with: "\"num_hidden_layers\": 1").utf8)
            .write(to: URL(fileURLWithPath: trimmed + "/config.json"))
        for (i, arguments) in Self.converters.enumerated() {
            let out = dir + "/out\(i)"
            let r = try CLI.run("mla-convert", [arguments[0], trimmed, "-o", out] + arguments.dropFirst())
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
            let warnings = r.stderr.split(separator: "\n").filter { $0.hasPrefix("warning:") }
            #expect(warnings.count == 1 && warnings[0].contains("trimmed/config.json") && warnings[0].contains("9 tensors of layer 1"),
                    "\(r.stderr)")
            #expect(try Checkpoint.open(out).config.numLayers == 1)
            #expect(try !Self.writtenNames(out).contains { $0.hasPrefix("model.layers.1.") })
        }
    }

    /// Legacy Llama uploads store `self_attn.rotary_emb.inv_freq` (issue 19: every layer converted,
    /// then "<converted layer 0>: tensor … not found"). Dropped on read, absent from every output.
    @Test func rotaryInverseFrequencyBuffersAreDropped() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try Self.synth(in: dir), legacy = dir + "/legacy"
        try Self.variant(of: synth, at: legacy) { tensors in
            let invFreq = (0..<64).map { Float(pow(10000, -Double($0) / 64)) }
            for l in 0..<2 { tensors.append(("model.layers.\(l).self_attn.rotary_emb.inv_freq", Tensor(floats: invFreq, shape: [64]))) }
        }
        for (i, arguments) in (Self.converters + [["export"]]).enumerated() {
            let out = dir + "/out\(i)"
            let r = try CLI.run("mla-convert", [arguments[0], legacy, "-o", out] + arguments.dropFirst())
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
            #expect(try !Self.writtenNames(out).contains { $0.contains("rotary_emb") }, "\(arguments)")
            try? FileManager.default.removeItem(atPath: out)
        }
    }

    /// A tensor the output needs is missing, or an attention tensor the conversion cannot carry is
    /// present: one line naming the checkpoint and the tensor, before any layer is converted.
    @Test func missingOrUnknownTensorsFailBeforeConverting() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try Self.synth(in: dir)
        let missing = "model.layers.1.mlp.up_proj.weight", unknown = "model.layers.1.self_attn.k_norm.weight"
        try Self.variant(of: synth, at: dir + "/missing") { $0.removeAll { $0.0 == missing } }
        try Self.variant(of: synth, at: dir + "/unknown") { $0.append((unknown, Tensor(floats: [Float](repeating: 1, count: 128), shape: [128]))) }
        for (model, tensor, file) in [("missing", missing, "/missing"), ("unknown", unknown, "/unknown/model.safetensors")] {
            for arguments in Self.converters {
                let out = dir + "/out"
                let r = try CLI.run("mla-convert", [arguments[0], dir + "/" + model, "-o", out] + arguments.dropFirst())
                #expect(r.status != 0)
                let lines = r.stderr.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].contains(tensor) && lines[0].contains(dir + file), "\(arguments): \(r.stderr)")
                #expect(!FileManager.default.fileExists(atPath: out))
            }
        }
    }

    /// A finite weight at the BF16 maximum in q_proj: the DeepSeek format folds the softmax scale
    /// √(192/128) into the query rows, past the F32 maximum (issue 19: +inf written, exit 0). The
    /// writer refuses, naming the tensor, and leaves no output; the native format (no fold) converts.
    @Test func overflowToInfinityIsAnError() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = try Self.synth(in: dir), model = dir + "/bf16max"
        let q = "model.layers.0.self_attn.q_proj.weight"
        try Self.variant(of: synth, at: model) { tensors in
            guard let i = tensors.firstIndex(where: { $0.0 == q }) else { return }
            var bytes = tensors[i].1.withRawBytes { Array($0) }
            (bytes[0], bytes[1]) = (0x7F, 0x7F)  // 0x7F7F little-endian: 3.3895314e38, the largest finite BF16
            tensors[i].1 = Tensor(dtype: .bf16, shape: tensors[i].1.shape, storage: .owned(bytes))
        }
        for dtype in ["bf16", "f32"] {
            let r = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/out", "--no-calib", "--dtype", dtype])
            #expect(r.status == 1)
            let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            #expect(errors.count == 1 && errors[0].contains("'\(q)' would hold +inf at element 0"), "\(r.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["bf16max", "synth"])
        }
        let native = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/native", "--no-calib", "--format", "native"])
        #expect(native.status == 0, "\(native.stderr)")
    }
}
