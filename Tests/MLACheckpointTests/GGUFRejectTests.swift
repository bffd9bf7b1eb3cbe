import Foundation
import MLACheckpoint
import MLATensor
import Testing

/// One hand-crafted file per reject rule for GGUF (docs/input-validation.md). Each asserts the error case and that the
/// one-line message names the file (and the tensor when one is involved).
@Suite("GGUF reject rules")
struct GGUFRejectTests {
    typealias B = GGUFBuilder
    enum Kind { case malformed, malformedTensor, truncated, duplicateTensor }

    /// Writes `g`, opens it, and checks the error.
    func expectRejected(_ g: GGUFBuilder, _ kind: Kind, tensor: String? = nil, mentions: String,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        let dir = try GGUFTestSupport.tempDir()
        defer { cleanup(dir) }
        let path = dir + "/bad.gguf"
        try GGUFTestSupport.write(g.build(), to: path)
        let error = #expect(throws: CheckpointError.self, sourceLocation: sourceLocation) { try GGUFFile(path: path) }
        guard let error else { return }
        let kindMatches: Bool
        switch (kind, error) {
        case (.malformed, .malformed), (.malformedTensor, .malformedTensor), (.truncated, .truncated),
             (.duplicateTensor, .duplicateTensor):
            kindMatches = true
        default:
            kindMatches = false
        }
        #expect(kindMatches, "expected \(kind), got \(error)", sourceLocation: sourceLocation)
        let text = error.description
        #expect(text.hasPrefix(path), "message does not start with the file: \(text)", sourceLocation: sourceLocation)
        if let tensor { #expect(text.contains("'\(tensor)'"), "message does not name \(tensor): \(text)", sourceLocation: sourceLocation) }
        #expect(text.contains(mentions), "message lacks '\(mentions)': \(text)", sourceLocation: sourceLocation)
        #expect(!text.contains("\n"))
    }

    @Test("the valid baseline opens")
    func baseline() throws {
        let dir = try GGUFTestSupport.tempDir()
        defer { cleanup(dir) }
        let path = dir + "/ok.gguf"
        try GGUFTestSupport.write(B.valid().build(), to: path)
        let f = try GGUFFile(path: path)
        #expect(f.tensors.map(\.name) == ["output_norm.weight", "blk.0.attn_norm.weight"])
        #expect(f.tensors[1].fileOffset == f.dataOffset + 128)
    }

    @Test("bad magic") func badMagic() throws {
        var g = B.valid(); g.magic = Array("GGUX".utf8)
        try expectRejected(g, .malformed, mentions: "magic")
    }

    @Test("version 1") func version1() throws {
        var g = B.valid(); g.version = 1
        try expectRejected(g, .malformed, mentions: "version 1")
    }

    @Test("big-endian") func bigEndian() throws {
        var g = B.valid(); g.version = 0x0300_0000
        try expectRejected(g, .malformed, mentions: "big-endian")
    }

    @Test("KV count that cannot fit") func kvCount() throws {
        var g = B.valid(); g.kvCountOverride = 1 << 40
        try expectRejected(g, .truncated, mentions: "metadata entries")
    }

    @Test("tensor count that cannot fit") func tensorCount() throws {
        var g = B.valid(); g.tensorCountOverride = UInt64(Int64.max)
        try expectRejected(g, .truncated, mentions: "tensor infos")
    }

    @Test("array length that cannot fit") func arrayLength() throws {
        var g = B.valid(); g.kvs.append(B.kv("x.arr", type: 9, B.u32(4) + B.u64(1 << 50) + B.u32(7)))
        try expectRejected(g, .truncated, mentions: "array 'x.arr'")
    }

    @Test("string length past the end") func stringLength() throws {
        var g = B.valid(); g.kvs.append(B.kv("x.s", type: 8, B.u64(1 << 33) + Array("abc".utf8)))
        try expectRejected(g, .truncated, mentions: "value of 'x.s'")
    }

    @Test("unknown value type") func unknownValueType() throws {
        var g = B.valid(); g.kvs.append(B.kv("x.v", type: 13, B.u32(0)))
        try expectRejected(g, .malformed, mentions: "unknown value type 13")
    }

    @Test("bool other than 0/1") func badBool() throws {
        var g = B.valid(); g.kvs.append(B.kv("x.b", type: 7, [2]))
        try expectRejected(g, .malformed, mentions: "'x.b'")
    }

    @Test("duplicate key") func duplicateKey() throws {
        var g = B.valid(); g.kvs.append(B.kvU32("llama.block_count", 2))
        try expectRejected(g, .malformed, mentions: "'llama.block_count' appears more than once")
    }

    @Test("duplicate tensor name") func duplicateTensor() throws {
        var g = B.valid(); g.tensors[1].name = "output_norm.weight"
        try expectRejected(g, .duplicateTensor, tensor: "output_norm.weight", mentions: "more than once")
    }

    @Test("unknown ggml type id", arguments: [UInt32(4), 31, 99])
    func unknownType(id: UInt32) throws {
        var g = B.valid(); g.tensors[1].type = id
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "unknown ggml type id \(id)")
    }

    @Test("n_dims outside 1...4", arguments: [UInt32(0), 5])
    func nDims(n: UInt32) throws {
        var g = B.valid(); g.tensors[1].nDims = n; g.tensors[1].ne = [UInt64](repeating: 2, count: Int(n))
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "\(n) dimensions")
    }

    @Test("size overflow") func overflow() throws {
        var g = B.valid(); g.tensors[1].ne = [32, 1 << 40, 1 << 40]
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "overflows")
    }

    @Test("dimension beyond Int") func hugeDim() throws {
        var g = B.valid(); g.tensors[1].ne = [UInt64.max]
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "too large")
    }

    @Test("row not a whole number of blocks") func partialBlock() throws {
        var g = B.valid(); g.tensors[1].type = 8; g.tensors[1].ne = [16, 2]
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "block size 32")
    }

    @Test("misaligned offset") func misaligned() throws {
        var g = B.valid(); g.tensors[1].offset = 136
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "alignment 32")
    }

    @Test("data past the end of the file") func pastEOF() throws {
        var g = B.valid(); g.dataBytes = 128 + 255
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "past the end")
    }

    @Test("overlapping tensors") func overlap() throws {
        var g = B.valid(); g.tensors[1].offset = 96
        try expectRejected(g, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "overlaps tensor 'output_norm.weight'")
    }

    @Test("bad general.alignment", arguments: [UInt32(0), 12, 4])
    func badAlignment(a: UInt32) throws {
        var g = B.valid(); g.kvs.append(B.kvU32("general.alignment", a))
        try expectRejected(g, .malformed, mentions: "general.alignment")
    }

    @Test("a custom alignment is honoured") func customAlignment() throws {
        var g = B.valid()
        g.kvs.append(B.kvU32("general.alignment", 64))
        g.alignment = 64
        let dir = try GGUFTestSupport.tempDir()
        defer { cleanup(dir) }
        let path = dir + "/a64.gguf"
        try GGUFTestSupport.write(g.build(), to: path)
        let f = try GGUFFile(path: path)
        #expect(f.alignment == 64 && f.dataOffset % 64 == 0)
        var h = B.valid()
        h.kvs.append(B.kvU32("general.alignment", 256))
        h.alignment = 256
        h.tensors[1].offset = 128  // not a multiple of 256
        try expectRejected(h, .malformedTensor, tensor: "blk.0.attn_norm.weight", mentions: "alignment 256")
    }

    @Test("a tensor-less (vocabulary-only) file may end unpadded after its metadata")
    func vocabOnly() throws {
        var g = B.valid()
        g.tensors = []
        g.dataBytes = 0
        g.alignment = 1  // the builder adds no padding
        let bytes = g.build()
        #expect(bytes.count % 32 != 0)
        let dir = try GGUFTestSupport.tempDir()
        defer { cleanup(dir) }
        try GGUFTestSupport.write(bytes, to: dir + "/vocab.gguf")
        let f = try GGUFFile(path: dir + "/vocab.gguf")
        #expect(f.tensors.isEmpty && f.metadata.count == 2)
    }

    @Test("empty and non-GGUF files") func tiny() throws {
        try expectRejected(GGUFBuilder(rawOverride: Array("GGUF".utf8) + [3, 0]), .truncated, mentions: "version")
        try expectRejected(GGUFBuilder(rawOverride: []), .malformed, mentions: "magic")
        var g = B.valid(); g.magic = Array("GG".utf8); g.version = 0
        try expectRejected(g, .malformed, mentions: "magic")
    }

    @Test("unsupported ggml type is refused when read, naming type and tensor")
    func unsupportedType() throws {
        var g = B.valid(); g.tensors[1].type = 10; g.tensors[1].ne = [256]; g.dataBytes = 128 + 84
        let dir = try GGUFTestSupport.tempDir()
        defer { cleanup(dir) }
        let path = dir + "/q2k.gguf"
        try GGUFTestSupport.write(g.build(), to: path)
        let store = try GGUFTensorStore(path: path)
        #expect(store.info("model.layers.0.input_layernorm.weight")?.storedType == "Q2_K")
        let error = #expect(throws: CheckpointError.self) { try store.tensor("model.layers.0.input_layernorm.weight") }
        guard case .unsupportedDType = error else {
            Issue.record("expected unsupportedDType, got \(String(describing: error))")
            return
        }
        let text = error?.description ?? ""
        #expect(text.hasPrefix(path) && text.contains("'blk.0.attn_norm.weight'") && text.contains("Q2_K"))
    }
}
