import Foundation
import Testing
import MLACheckpoint
import MLACLI
import MLATestSupport

/// Runs a built executable with a deadline (`TimedProcess`): a run that blocks (a FIFO opened for
/// reading waits for a writer forever) is killed and reported instead of hanging the test.
enum TimedCLI {
    typealias Result = TimedProcess.Outcome

    static func run(_ tool: String, _ arguments: [String], timeout: Double = 30) throws -> Result {
        try TimedProcess.run(CLI.binDirectory + "/" + tool, arguments, timeout: timeout)
    }

    /// Expects a clean refusal: no signal, no hang, a non-zero status below 128, exactly one line on
    /// stderr that contains every string of `mentions`.
    static func expectOneLineError(_ r: Result, mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!r.timedOut, "hung (killed after the deadline)", sourceLocation: sourceLocation)
        #expect(r.signal == nil, "died of signal \(r.signal ?? 0): \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.status > 0 && r.status < 128, "exit status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2 && lines[1].isEmpty, "expected one stderr line, got: \(r.stderr)", sourceLocation: sourceLocation)
        for m in mentions { #expect(r.stderr.contains(m), "stderr does not mention '\(m)': \(r.stderr)", sourceLocation: sourceLocation) }
    }
}

/// The tiny synthetic Llama (`mla-bench synth --shape tiny`), made once per test process and
/// removed when it exits.
enum TinyModel {
    static let root = NSTemporaryDirectory() + "mla-cli-tiny-\(getpid())"

    static let directory: String = {
        let dir = root + "/tiny"
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let r = try? CLI.run("mla-bench", ["synth", "--shape", "tiny", "-o", dir])
        precondition(r?.status == 0, "mla-bench synth --shape tiny failed: \(r?.stderr ?? "did not run")")
        atexit { try? FileManager.default.removeItem(atPath: TinyModel.root) }
        return dir
    }()

    /// A copy of the tiny model in a new directory with its config.json changed by `edit`.
    static func withConfig(_ edit: (JSONValue) -> JSONValue) throws -> String {
        let dir = CLI.temporaryDirectory()
        try FileManager.default.copyItem(atPath: directory + "/model.safetensors", toPath: dir + "/model.safetensors")
        let config = try JSONValue.parse(Data(contentsOf: URL(fileURLWithPath: directory + "/config.json")))
        try Data(edit(config).serialized().utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return dir
    }

    /// The same with config.json replaced by `text` verbatim (for numbers JSONValue would not write).
    static func withConfigText(_ text: String) throws -> String {
        let dir = try withConfig { $0 }
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return dir
    }
}

/// Issue 19, input side: each crafted input below crashed (a Swift trap), hung or was accepted
/// before; each must now end in a one-line error naming the file and the key or tensor.
@Suite(.serialized) struct InputValidationCLITests {
    /// A FIFO as the model, as model.safetensors, as config.json and as mla-verify's CONVERTED: each
    /// hung forever in open() before; now refused at once.
    @Test func fifosAreRefusedWithoutBlocking() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/model.gguf"
        #expect(mkfifo(fifo, 0o600) == 0)
        let weightsDir = dir + "/weights-fifo"
        try FileManager.default.createDirectory(atPath: weightsDir, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: TinyModel.directory + "/config.json", toPath: weightsDir + "/config.json")
        #expect(mkfifo(weightsDir + "/model.safetensors", 0o600) == 0)
        let configDir = dir + "/config-fifo"
        try FileManager.default.createDirectory(atPath: configDir, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: TinyModel.directory + "/model.safetensors", toPath: configDir + "/model.safetensors")
        #expect(mkfifo(configDir + "/config.json", 0o600) == 0)
        let cases: [(String, [String], String)] = [
            ("mla-convert", ["inspect", fifo], fifo),
            ("mla-convert", ["inspect", weightsDir], weightsDir + "/model.safetensors"),
            ("mla-convert", ["export", weightsDir, "-o", dir + "/out"], weightsDir + "/model.safetensors"),
            ("mla-convert", ["inspect", configDir], configDir + "/config.json"),
            ("mla-verify", [TinyModel.directory, fifo, "--ids", "1,2,3"], fifo),
        ]
        for (tool, arguments, named) in cases {
            let r = try TimedCLI.run(tool, arguments, timeout: 10)
            TimedCLI.expectOneLineError(r, mentions: [named, "FIFO"])
            #expect(r.seconds < 5, "\(tool) \(arguments) took \(r.seconds) s")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    }

    /// Config values whose derived sizes overflow or whose conversions are inexact: traps before.
    @Test func hugeAndInexactConfigValuesAreRefused() throws {
        let cases: [(JSONValue, [String])] = [
            (.object([("num_attention_heads", JSONValue(1 << 40)), ("num_key_value_heads", JSONValue(1 << 40)),
                      ("head_dim", JSONValue(1 << 40))]), ["num_attention_heads", "overflows"]),
            (.object([("rope_scaling", .object([("rope_type", .string("llama3")), ("factor", JSONValue(8.0)),
                                                ("low_freq_factor", JSONValue(1.0)), ("high_freq_factor", JSONValue(4.0)),
                                                ("original_max_position_embeddings", .number("1e300"))]))]),
             ["original_max_position_embeddings"]),
            (.object([("rope_scaling", .object([("rope_type", .string("yarn")), ("factor", JSONValue(4.0)),
                                                ("original_max_position_embeddings", .number("-1e300"))]))]),
             ["original_max_position_embeddings"]),
            (.object([("num_hidden_layers", .number("4611686018427387904"))]), ["num_hidden_layers"]),
        ]
        for (changes, mentions) in cases {
            let dir = try TinyModel.withConfig { config in
                changes.object?.reduce(config) { $0.setting($1.0, $1.1) } ?? config
            }
            defer { try? FileManager.default.removeItem(atPath: dir) }
            TimedCLI.expectOneLineError(try TimedCLI.run("mla-convert", ["inspect", dir]), mentions: [dir + "/config.json"] + mentions)
        }
    }

    /// `rope_theta: 1e999` parses to infinity; it was accepted (and written back as the bare token
    /// `inf`). Non-finite and non-positive RoPE bases and norm epsilons are refused at config reading.
    @Test func nonFiniteConfigNumbersAreRefused() throws {
        let base = try String(contentsOfFile: TinyModel.directory + "/config.json", encoding: .utf8)
        let cases: [(String, String)] = [
            (#""rope_theta": 1e999"#, "rope_theta"),
            (#""rope_theta": -1e999"#, "rope_theta"),
            (#""rope_theta": 0"#, "rope_theta"),
            (#""rms_norm_eps": 1e999"#, "rms_norm_eps"),
            (#""rms_norm_eps": -1e-5"#, "rms_norm_eps"),
            (#""rope_parameters": {"rope_type": "default", "rope_theta": 1e999}"#, "rope_parameters.rope_theta"),
            (#""rope_scaling": {"rope_type": "linear", "factor": 1e999}"#, "rope_scaling.factor"),
        ]
        for (member, key) in cases {
            let name = member.split(separator: "\"")[0]
            // Replace the member if the config has it, else add it after the opening brace.
            var lines = base.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if let i = lines.firstIndex(where: { $0.contains("\"\(name)\"") }) {
                lines[i] = "  " + member + (lines[i].hasSuffix(",") ? "," : "")
            } else {
                lines.insert("  " + member + ",", at: 1)
            }
            let dir = try TinyModel.withConfigText(lines.joined(separator: "\n"))
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try TimedCLI.run("mla-convert", ["inspect", dir])
            TimedCLI.expectOneLineError(r, mentions: [dir + "/config.json", "key '\(key)'"])
            #expect(!r.stderr.contains("duplicate"), "the test built a bad config: \(r.stderr)")
        }
    }

    /// A GGUF holding an extra zero-byte tensor with dims [0, 2^40, 2^40]: its byte size is 0 but its
    /// element count overflows, which trapped `inspect`. Built from the sample's real header with
    /// the tensor data left as a sparse hole.
    @Test(.needsSampleData) func zeroByteTensorWithHugeDimsIsRefused() throws {
        let sample = SampleData.modelPath
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/extra.gguf"
        try GGUFRewriter.appendTensor(to: sample, writing: path, name: "extra.weight", ne: [0, 1 << 40, 1 << 40])
        TimedCLI.expectOneLineError(try TimedCLI.run("mla-convert", ["inspect", path]), mentions: [path, "extra.weight"])
    }

    /// Mutations of the superblock-0 reference file (h5py's default format, as fixtures/hdf5 held it
    /// before) that crashed libhdf5 1.10 with SIGSEGV (seed 352) or made it loop forever (seed 624),
    /// found by `mla-bench fuzz --target hdf5 --base reference.h5` against the previous build.
    /// Files without checksummed metadata are now refused before libhdf5 reads them.
    @Test func damagedUnchecksummedHDF5IsRefused() throws {
        for name in ["segv-seed352.h5", "hang-seed624.h5"] {
            let path = Fixtures.path("hdf5/fuzz-regressions/" + name)
            TimedCLI.expectOneLineError(try TimedCLI.run("mla-convert", ["inspect", path], timeout: 10),
                                        mentions: [path, "superblock version 0"])
        }
    }

    /// An HDF5 export whose root object header fails its checksum (one attribute byte changed): one line
    /// naming the file. libhdf5 1.10.8 leaks the failed cache entry, so this runs in a fresh process
    /// (HDF5Tests keep to valid files); the tool must not print libhdf5's "infinite loop closing
    /// library" report as it exits.
    @Test func checksumDamagedHDF5IsRefused() throws {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/damaged.h5"
        let export = try CLI.run("mla-convert", ["export", Fixtures.path("gguf/tiny_llama.gguf"), "-o", path, "--format", "hdf5"])
        #expect(export.status == 0, "\(export.stderr)")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let format = try #require(bytes.range(of: Data("mla-convert-hdf5".utf8)))
        bytes.replaceSubrange(format, with: Data("xxx-convert-hdf5".utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        TimedCLI.expectOneLineError(try TimedCLI.run("mla-convert", ["inspect", path], timeout: 10), mentions: [path])
    }
}

/// Rewrites a GGUF header with one more tensor info; the tensor data becomes a sparse hole of zeros
/// (only headers are read by `inspect`).
enum GGUFRewriter {
    static func appendTensor(to source: String, writing path: String, name: String, ne: [UInt64]) throws {
        let file = try GGUFFile(path: source)
        func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func info(_ name: String, _ ne: [UInt64], type: UInt32, offset: UInt64) -> [UInt8] {
            u64(UInt64(name.utf8.count)) + Array(name.utf8) + u32(UInt32(ne.count)) + ne.flatMap(u64) + u32(type) + u64(offset)
        }
        let infos = file.tensors.flatMap { info($0.name, $0.ne.map { UInt64($0) }, type: $0.type.rawValue, offset: UInt64($0.offset)) }
        let header = file.mapped.bytes(offset: 0, count: file.dataOffset)
        // The metadata ends where the first tensor info (its name's length and bytes) begins.
        let first = info(file.tensors[0].name, [], type: 0, offset: 0).prefix(8 + file.tensors[0].name.utf8.count)
        let infoStart = try #require(header.indices.dropFirst(24).first { header[$0..<min($0 + first.count, header.count)].elementsEqual(first) })
        var out = Array(header[0..<8]) + u64(UInt64(file.tensors.count + 1)) + Array(header[16..<infoStart])
        out += infos + info(name, ne, type: 0, offset: 0)
        while out.count % file.alignment != 0 { out.append(0) }
        let total = out.count + (file.mapped.size - file.dataOffset)
        try Data(out).write(to: URL(fileURLWithPath: path))
        #expect(truncate(path, off_t(total)) == 0)
    }
}
