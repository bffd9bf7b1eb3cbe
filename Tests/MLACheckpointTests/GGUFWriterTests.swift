import Foundation
import Testing
import MLATensor
@testable import MLACheckpoint

/// `GGUFWriter` against the repository's own reader (`GGUFFile`, `GGUFTensorStore`), which the fixture
/// tests hold to files written by the reference library.
@Suite struct GGUFWriterTests {
    /// A synthetic model: typed scalars and arrays in the metadata, F32/F16/BF16 tensors of one to three
    /// dimensions with sizes that are not multiples of the alignment.
    static let metadata: [(String, GGUFValue)] = [
        ("general.architecture", .string("synthetic")), ("synthetic.block_count", .uint32(1)),
        ("synthetic.attention.layer_norm_rms_epsilon", .float32(1e-5)), ("test.f64", .float64(-0.125)),
        ("test.i64", .int64(-7)), ("test.flag", .bool(true)),
        ("tokenizer.ggml.tokens", .array(["a", "bc", "", "ü"].map { GGUFValue.string($0) })),
        ("tokenizer.ggml.token_type", .array([1, 3, 1, 6].map { GGUFValue.int32($0) })),
    ]

    static func tensor(_ dtype: DType, _ shape: [Int], seed: Float) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(floats: (0..<n).map { Float($0) * 0.25 - seed }, shape: shape).converted(to: dtype)
    }

    @Test func roundTripThroughTheReader() throws {
        let tensors: [(String, Tensor)] = [
            ("token_embd.weight", Self.tensor(.f32, [3, 5], seed: 1)),
            ("blk.0.attn_norm.weight", Self.tensor(.f32, [5], seed: 0)),
            ("blk.0.attn_q.weight", Self.tensor(.f16, [7, 5], seed: 2)),
            ("blk.0.attn_k_b.weight", Self.tensor(.bf16, [2, 3, 1], seed: 3)),
        ]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-writer-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = try OutputPlan(dir + "/model.gguf", kind: .file, force: false, inputs: [])
        let entries = tensors.map { TensorWriteEntry(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        try plan.write { file in
            try GGUFWriter.write(path: file, metadata: Self.metadata, entries: entries) { sink in
                try TensorPayload.whole(tensors.first { $0.0 == sink.entry.name }!.1).write(to: sink)
            }
        }
        let file = try GGUFFile(path: dir + "/model.gguf")
        #expect(file.version == 3 && file.alignment == 32 && file.dataOffset % 32 == 0)
        #expect(file.metadata.map(\.key) == Self.metadata.map(\.0))
        for (key, value) in Self.metadata { #expect(file.value(key) == value, "\(key)") }
        #expect(file.tensors.map(\.name) == tensors.map(\.0))
        let store = try GGUFTensorStore(file: file)
        for (info, (name, t)) in zip(file.tensors, tensors) {
            #expect(info.ne == t.shape.reversed() && info.offset % 32 == 0, "\(name)")
            #expect(info.type == GGUFWriter.ggmlType(t.dtype))
            let read = file.withTensorBytes(info) { Array($0) }
            #expect(read == t.withRawBytes { Array($0) }, "\(name): bytes differ")
            #expect(try store.tensor(GGUFNames.hfName(name)).floats() == t.floats())
        }
    }

    @Test func nonFiniteTensorLeavesNoFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-writer-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = Tensor(floats: [1, .infinity, 3], shape: [3])
        let plan = try OutputPlan(dir + "/bad.gguf", kind: .file, force: false, inputs: [])
        #expect(throws: CheckpointError.self) {
            try plan.write { file in
                try GGUFWriter.write(path: file, metadata: Self.metadata, entries: [TensorWriteEntry(name: "x.weight", dtype: .f32, shape: [3])]) {
                    try TensorPayload.whole(bad).write(to: $0)
                }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// Q8_0 storage: rows of 32-value blocks whose magnitudes span 0.1 to 7000 (and an all-zero block),
    /// written in row blocks as a streaming encoder does, read back through the repository's reader:
    /// each block's stored F16 scale is amax/127 and each value is within half a scale step, both against
    /// a float64 computation (plus the F16 rounding of the scale: 127 · 2^-11 of a step).
    @Test func q8_0BlocksRoundTripWithinHalfAStep() throws {
        let shape = [4, 3, 64]
        var values: [Float] = (0..<shape.reduce(1, *)).map { i in
            let block = i / 32, j = i % 32
            return Float(sin(Double(i) * 0.37) * pow(10, Double(block % 5) - 1) * (j == 5 ? 7 : 1))
        }
        for j in 64..<96 { values[j] = 0 }
        let t = Tensor(floats: values, shape: shape)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-q8-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = try OutputPlan(dir + "/q8.gguf", kind: .file, force: false, inputs: [])
        let entries = [TensorWriteEntry(name: "blk.0.attn_k_b.weight", dtype: .f32, shape: shape),
                       TensorWriteEntry(name: "blk.0.attn_norm.weight", dtype: .f32, shape: [5])]
        try plan.write { file in
            try GGUFWriter.write(path: file, metadata: Self.metadata, entries: entries, q8_0: ["blk.0.attn_k_b.weight"]) { sink in
                if sink.entry.shape.count == 1 { return try TensorPayload.whole(Self.tensor(.f32, [5], seed: 0)).write(to: sink) }
                try TensorPayload.rowBlocks(count: 4) { t.rows($0..<($0 + 1)) }.write(to: sink)
            }
        }
        let file = try GGUFFile(path: dir + "/q8.gguf")
        let info = try #require(file.tensorInfo("blk.0.attn_k_b.weight"))
        #expect(info.type == .q8_0 && info.ne == [64, 3, 4])
        #expect(file.tensorInfo("blk.0.attn_norm.weight")?.type == .f32)
        let raw = file.withTensorBytes(info) { Array($0) }
        #expect(raw.count == values.count / 32 * 34)
        let read = try GGUFTensorStore(file: file).tensor(GGUFNames.hfName("blk.0.attn_k_b.weight")).floats()
        for b in 0..<(values.count / 32) {
            let x = values[(b * 32)..<(b * 32 + 32)].map(Double.init)
            let step = x.map(abs).max()! / 127
            let scale = Double(Float16(bitPattern: UInt16(raw[b * 34]) | UInt16(raw[b * 34 + 1]) << 8))
            #expect(abs(scale - step) <= step * 0x1p-11, "block \(b): scale \(scale) for amax/127 = \(step)")
            let bound = step * (0.5 + 127 * 0x1p-11) + 1e-12
            for j in 0..<32 where abs(Double(read[b * 32 + j]) - x[j]) > bound {
                Issue.record("block \(b) value \(j): \(read[b * 32 + j]) for \(x[j]), step \(step)")
            }
        }
        // A row that is not whole blocks cannot be Q8_0 (llama-quantize stores such a tensor as F16).
        #expect(throws: CheckpointError.self) {
            try OutputPlan(dir + "/odd.gguf", kind: .file, force: false, inputs: []).write { file in
                try GGUFWriter.write(path: file, metadata: Self.metadata, entries: [TensorWriteEntry(name: "x.weight", dtype: .f32, shape: [2, 40])],
                                     q8_0: ["x.weight"]) { _ in }
            }
        }
    }
}
