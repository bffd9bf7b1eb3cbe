import Foundation
import MLATensor
import Testing
import MLATestSupport

/// Paths and byte builders shared by the GGUF suites.
enum GGUFTestSupport {
    static let fixtures = Fixtures.path("gguf")

    static let samplePath = SampleData.modelPath

    /// Little-endian F32 values of a fixture file.
    static func floats(_ name: String) throws -> [Float] {
        let f = try MappedFile(path: fixtures + "/" + name)
        return f.withBytes(offset: 0, count: f.size) { raw in
            (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        }
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        let f = try MappedFile(path: fixtures + "/" + name)
        return f.bytes(offset: 0, count: f.size)
    }

    /// A fresh temporary directory for crafted files.
    static func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

/// Hand-assembles GGUF bytes (independent of the reader) so tests can break one rule at a time.
struct GGUFBuilder {
    struct TensorSpec {
        var name: String
        var ne: [UInt64]
        var type: UInt32
        var offset: UInt64
        var nDims: UInt32? = nil
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var kvs: [[UInt8]] = []
    var tensors: [TensorSpec] = []
    var kvCountOverride: UInt64? = nil
    var tensorCountOverride: UInt64? = nil
    var alignment = 32
    /// Bytes of (zero) tensor data after the aligned data start.
    var dataBytes = 0
    /// When set, the data section is these bytes instead of `dataBytes` zeros.
    var data: [UInt8]? = nil
    /// When set, `build()` returns exactly these bytes (for files too short to have a structure).
    var rawOverride: [UInt8]? = nil

    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }

    /// A KV pair with value type `type` and already-encoded value bytes.
    static func kv(_ key: String, type: UInt32, _ value: [UInt8]) -> [UInt8] { str(key) + u32(type) + value }
    static func kvU32(_ key: String, _ v: UInt32) -> [UInt8] { kv(key, type: 4, u32(v)) }
    static func kvString(_ key: String, _ v: String) -> [UInt8] { kv(key, type: 8, str(v)) }
    static func kvF32(_ key: String, _ v: Float) -> [UInt8] { kv(key, type: 6, u32(v.bitPattern)) }
    static func kvU32Array(_ key: String, _ v: [UInt32]) -> [UInt8] {
        kv(key, type: 9, u32(4) + u64(UInt64(v.count)) + v.flatMap(u32))
    }

    func build() -> [UInt8] {
        if let rawOverride { return rawOverride }
        var b = magic + Self.u32(version)
        b += Self.u64(tensorCountOverride ?? UInt64(tensors.count))
        b += Self.u64(kvCountOverride ?? UInt64(kvs.count))
        for kv in kvs { b += kv }
        for t in tensors {
            b += Self.str(t.name) + Self.u32(t.nDims ?? UInt32(t.ne.count))
            for d in t.ne { b += Self.u64(d) }
            b += Self.u32(t.type) + Self.u64(t.offset)
        }
        while b.count % alignment != 0 { b.append(0) }
        return b + (data ?? [UInt8](repeating: 0, count: dataBytes))
    }

    /// A valid llama-ish file with two F32 tensors of 32 and 64 elements.
    static func valid() -> GGUFBuilder {
        var g = GGUFBuilder()
        g.kvs = [kvString("general.architecture", "llama"), kvU32("llama.block_count", 1)]
        g.tensors = [TensorSpec(name: "output_norm.weight", ne: [32], type: 0, offset: 0),
                     TensorSpec(name: "blk.0.attn_norm.weight", ne: [64], type: 0, offset: 128)]
        g.dataBytes = 128 + 256
        return g
    }
}
