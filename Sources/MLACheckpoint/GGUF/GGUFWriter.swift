import Foundation
import MLATensor

/// Writes a GGUF v3 file (docs/formats.md "GGUF") streaming, tensor by tensor: the header (magic,
/// version, counts, typed metadata including arrays, tensor infos) is built first from the planned
/// entries, then each tensor's data is written at its 32-byte aligned offset as `tensor` delivers it,
/// so the model is never whole in memory. Write through an `OutputPlan` (`.file`) so that a failure
/// leaves no output.
public enum GGUFWriter {
    /// Data alignment (GGUF's default; `general.alignment` is not written).
    public static let alignment = 32

    /// The GGML type that stores `dtype`: F32, F16 and BF16 only.
    public static func ggmlType(_ dtype: DType) -> GGMLType? {
        switch dtype {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        default: return nil
        }
    }

    /// Writes `path`: `metadata` in order, then the `entries` (row-major shapes, outermost first; the
    /// file stores them reversed, ne0 innermost, as ggml does) in order. `tensor(sink)` is called once
    /// per entry, in order, and must write exactly the entry's bytes through `sink`
    /// (`TensorPayload.write(to:)` checks them finite on the way). The entries named in `q8_0` (F32,
    /// rows a whole number of 32-value blocks) are stored as Q8_0 (`GGMLQuantize.q8_0`), encoded as their
    /// F32 bytes arrive (in whole blocks, as row blocks of whole rows are).
    public static func write(path: String, metadata: [(String, GGUFValue)], entries: [TensorWriteEntry], q8_0: Set<String> = [],
                             tensor: (TensorByteSink) throws -> Void) throws {
        var header = GGUFBytes()
        header.bytes += Array("GGUF".utf8)
        header.u32(3)
        header.u64(UInt64(entries.count))
        header.u64(UInt64(metadata.count))
        for (key, value) in metadata {
            header.string(key)
            header.u32(value.ggufTypeId)
            header.value(value)
        }
        var offset = 0
        var offsets: [Int] = []
        var storedBytes: [Int] = []
        for e in entries {
            guard var type = ggmlType(e.dtype) else {
                throw CheckpointError.writeFailed(path: path, reason: "tensor '\(e.name)': \(e.dtype.rawValue) has no GGUF type here (F32, F16 and BF16 are written)")
            }
            var bytes = e.byteCount
            if q8_0.contains(e.name) {
                guard e.dtype == .f32, let rowLength = e.shape.last, rowLength % GGMLQuantize.q8_0BlockValues == 0 else {
                    throw CheckpointError.writeFailed(path: path, reason: "tensor '\(e.name)' (\(e.dtype.rawValue) \(e.shape)) cannot be stored as Q8_0: it needs F32 rows of a multiple of 32 values")
                }
                type = .q8_0
                bytes = e.byteCount / 4 / GGMLQuantize.q8_0BlockValues * GGMLQuantize.q8_0BlockBytes
            }
            storedBytes.append(bytes)
            guard e.name.utf8.count <= GGUFFile.maxTensorNameBytes else {
                throw CheckpointError.writeFailed(path: path, reason: "tensor name '\(e.name)' is longer than ggml's \(GGUFFile.maxTensorNameBytes) bytes")
            }
            header.string(e.name)
            header.u32(UInt32(e.shape.count))
            for n in e.shape.reversed() { header.u64(UInt64(n)) }
            header.u32(type.rawValue)
            header.u64(UInt64(offset))
            offsets.append(offset)
            offset = padded(offset + bytes)
        }
        header.bytes += [UInt8](repeating: 0, count: padded(header.bytes.count) - header.bytes.count)
        guard let file = FileOutput(path: path) else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create file")
        }
        do {
            try header.bytes.withUnsafeBytes { try file.write($0) }
            var position = 0
            for (i, e) in entries.enumerated() {
                try zeros(offsets[i] - position, to: file)
                let sink = TensorByteSink(entry: e, file: file, encode: q8_0.contains(e.name) ? { try q8_0Blocks($0, path: path, entry: e) } : nil)
                try tensor(sink)
                guard sink.written == e.byteCount else {
                    throw CheckpointError.malformedTensor(file: path, tensor: e.name, reason: "writer got \(sink.written) of \(e.byteCount) bytes")
                }
                position = offsets[i] + storedBytes[i]
            }
            try zeros(offset - position, to: file)
            try file.close()
        } catch {
            file.abandon()
            throw error
        }
    }

    /// The Q8_0 blocks of the F32 bytes `raw` of `entry` (a whole number of blocks).
    private static func q8_0Blocks(_ raw: UnsafeRawBufferPointer, path: String, entry: TensorWriteEntry) throws -> [UInt8] {
        let blockBytes = 4 * GGMLQuantize.q8_0BlockValues
        guard raw.count % blockBytes == 0 else {
            throw CheckpointError.malformedTensor(file: path, tensor: entry.name, reason: "Q8_0 writer got \(raw.count) bytes, not whole blocks of \(blockBytes)")
        }
        let values = [Float](unsafeUninitializedCapacity: raw.count / 4) { buffer, count in
            _ = raw.copyBytes(to: buffer)
            count = raw.count / 4
        }
        var out: [UInt8] = []
        if values.withUnsafeBufferPointer({ GGMLQuantize.q8_0($0, into: &out) }) != nil {
            throw CheckpointError.writeFailed(path: path, reason: "tensor '\(entry.name)' has a value beyond 127 × 65504, whose Q8_0 scale overflows F16; write it with --dtype f32 or bf16")
        }
        return out
    }

    /// `n` rounded up to the alignment.
    static func padded(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    private static func zeros(_ count: Int, to file: FileOutput) throws {
        guard count > 0 else { return }
        try [UInt8](repeating: 0, count: count).withUnsafeBytes { try file.write($0) }
    }
}

extension GGUFValue {
    /// The GGUF value type id (gguf_type: u8 0 … f64 12).
    var ggufTypeId: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }
}

/// Little-endian GGUF header bytes.
struct GGUFBytes {
    var bytes: [UInt8] = []

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }

    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes += Array(s.utf8)
    }

    /// The value's payload (its type id is written by the caller). An array's elements take the first
    /// element's type (an empty array is written as an array of u8).
    mutating func value(_ v: GGUFValue) {
        switch v {
        case let .uint8(x): bytes.append(x)
        case let .int8(x): bytes.append(UInt8(bitPattern: x))
        case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
        case let .int16(x): withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
        case let .uint32(x): u32(x)
        case let .int32(x): u32(UInt32(bitPattern: x))
        case let .uint64(x): u64(x)
        case let .int64(x): u64(UInt64(bitPattern: x))
        case let .float32(x): u32(x.bitPattern)
        case let .float64(x): u64(x.bitPattern)
        case let .bool(x): bytes.append(x ? 1 : 0)
        case let .string(s): string(s)
        case let .array(items):
            u32(items.first?.ggufTypeId ?? 0)
            u64(UInt64(items.count))
            for item in items { value(item) }
        }
    }
}
