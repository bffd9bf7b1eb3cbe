import Foundation
import MLATensor

/// Streaming safetensors writer: plans shards and headers from the entries, then asks for each
/// tensor once and writes it straight to disk, so memory holds one tensor at a time.
public enum SafetensorsWriter {
    /// Writes `entries` into the existing directory `directory`: `model.safetensors`, or shards
    /// `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` when the data exceeds
    /// `maxShardBytes` (greedy fill in entry order; a tensor larger than the limit gets its own shard).
    /// Returns the file names written.
    @discardableResult
    public static func writeDirectory(_ directory: String, entries: [TensorWriteEntry], metadata: [String: String],
                                      maxShardBytes: Int?, tensor: (String) throws -> Tensor) throws -> [String] {
        try writeDirectoryInPieces(directory, entries: entries, metadata: metadata, maxShardBytes: maxShardBytes) {
            try write(tensor($0.entry.name), to: $0)
        }
    }

    /// `writeDirectory` for tensors produced in pieces: `pieces(sink)` is called once per entry, in
    /// order, and writes that tensor's bytes (`sink.entry`) through `sink.write` in as many pieces as it
    /// likes, so not even one whole tensor need be in memory (the synthetic 7B/8B generator holds a
    /// block of rows).
    @discardableResult
    public static func writeDirectoryInPieces(_ directory: String, entries: [TensorWriteEntry], metadata: [String: String],
                                              maxShardBytes: Int?, pieces: (TensorByteSink) throws -> Void) throws -> [String] {
        let shards = shardPlan(entries, maxShardBytes: maxShardBytes)
        if shards.count == 1 {
            try writeFileInPieces(directory + "/model.safetensors", entries: entries, metadata: metadata, pieces: pieces)
            return ["model.safetensors"]
        }
        var names: [String] = []
        var weightMap: [(String, JSONValue)] = []
        for (i, shard) in shards.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try writeFileInPieces(directory + "/" + name, entries: shard, metadata: metadata, pieces: pieces)
            names.append(name)
            weightMap += shard.map { ($0.name, .string(name)) }
        }
        weightMap.sort { $0.0 < $1.0 }
        let index = JSONValue.object([
            ("metadata", .object([
                ("total_size", JSONValue(entries.reduce(0) { $0 + $1.byteCount })),
                ("total_parameters", JSONValue(entries.reduce(0) { $0 + $1.shape.reduce(1, *) })),
            ])),
            ("weight_map", .object(weightMap)),
        ])
        let indexPath = directory + "/" + SafetensorsDirectoryStore.indexName
        guard FileManager.default.createFile(atPath: indexPath, contents: Data((try index.serialized(indent: 2) + "\n").utf8)) else {
            throw CheckpointError.writeFailed(path: indexPath, reason: "cannot create file")
        }
        names.append(SafetensorsDirectoryStore.indexName)
        return names
    }

    /// Entries per shard: greedy fill in entry order; a tensor larger than the limit gets its own shard.
    static func shardPlan(_ entries: [TensorWriteEntry], maxShardBytes: Int?) -> [[TensorWriteEntry]] {
        var shards: [[TensorWriteEntry]] = [[]]
        var filled = 0
        for e in entries {
            if let limit = maxShardBytes, filled > 0, filled + e.byteCount > limit {
                shards.append([])
                filled = 0
            }
            shards[shards.count - 1].append(e)
            filled += e.byteCount
        }
        return shards
    }

    /// The order in which `writeDirectoryInPieces` asks for the entries' data (shard by shard, each
    /// file in the reference order), so a producer can prepare tensors ahead of the writer.
    public static func writeOrder(_ entries: [TensorWriteEntry], maxShardBytes: Int?) -> [String] {
        shardPlan(entries, maxShardBytes: maxShardBytes).flatMap { fileOrder($0).map(\.name) }
    }

    /// One file's entries in the reference writer's order.
    static func fileOrder(_ entries: [TensorWriteEntry]) -> [TensorWriteEntry] {
        func rank(_ d: DType) -> Int { referenceOrder.firstIndex(of: d) ?? referenceOrder.count }
        return entries.sorted { (rank($0.dtype), $0.name) < (rank($1.dtype), $1.name) }
    }

    /// The reference writer's (safetensors 0.8) tensor order: by this dtype list, then by name. It
    /// puts larger elements first, which keeps every tensor aligned to its element size.
    static let referenceOrder: [DType] = [.u64, .i64, .f64, .f32, .u32, .i32, .bf16, .f16, .u16, .i16, .f8e4m3, .f8e5m2, .i8, .u8, .bool]

    /// Writes one safetensors file. Tensors are ordered as the reference writer orders them
    /// (`referenceOrder`), so our output is byte-identical to its output; the header is
    /// padded with spaces to a multiple of 8. `__metadata__` always carries `"format": "pt"`
    /// (transformers 4.51-4.57 refuse other values). A failed write removes the file.
    public static func writeFile(_ path: String, entries: [TensorWriteEntry], metadata: [String: String],
                                 tensor: (String) throws -> Tensor) throws {
        try writeFileInPieces(path, entries: entries, metadata: metadata) { try write(tensor($0.entry.name), to: $0) }
    }

    /// `writeFile` for tensors produced in pieces (see `writeDirectoryInPieces`). Each tensor must get
    /// exactly its entry's byte count, else the write fails naming the tensor.
    public static func writeFileInPieces(_ path: String, entries: [TensorWriteEntry], metadata: [String: String],
                                         pieces: (TensorByteSink) throws -> Void) throws {
        let ordered = fileOrder(entries)
        var header: [(String, JSONValue)] = []
        var meta: [(String, JSONValue)] = [("format", .string("pt"))]
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) where k != "format" { meta.append((k, .string(v))) }
        header.append(("__metadata__", .object(meta)))
        var offset = 0
        for e in ordered {
            header.append((e.name, .object([
                ("dtype", .string(e.dtype.rawValue)),
                ("shape", .array(e.shape.map { JSONValue($0) })),
                ("data_offsets", .array([JSONValue(offset), JSONValue(offset + e.byteCount)])),
            ])))
            offset += e.byteCount
        }
        var headerBytes = Array(try JSONValue.object(header).serialized().utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        guard let handle = FileOutput(path: path) else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create file")
        }
        do {
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try handle.write($0) }
            try headerBytes.withUnsafeBytes { try handle.write($0) }
            for e in ordered {
                let sink = TensorByteSink(entry: e, file: handle)
                try pieces(sink)
                guard sink.written == e.byteCount else {
                    throw CheckpointError.malformedTensor(file: path, tensor: e.name,
                                                          reason: "writer got \(sink.written) of \(e.byteCount) bytes")
                }
            }
            try handle.close()
        } catch {
            handle.abandon()
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    /// Writes a whole tensor after checking it matches its entry.
    private static func write(_ t: Tensor, to sink: TensorByteSink) throws {
        try TensorPayload.whole(t).write(to: sink)
    }
}

/// Where one tensor's little-endian bytes go, in order, in pieces of any size; it refuses bytes past
/// the entry's byte count.
public final class TensorByteSink {
    /// The tensor being written (name, dtype, shape).
    public let entry: TensorWriteEntry
    /// Bytes written so far.
    public private(set) var written = 0
    let file: FileOutput
    /// Re-encodes the entry's bytes on their way to the file (a GGUF writer's Q8_0 blocks); nil: written as given.
    let encode: ((UnsafeRawBufferPointer) throws -> [UInt8])?
    /// The file being written (for error messages).
    public var path: String { file.path }

    init(entry: TensorWriteEntry, file: FileOutput, encode: ((UnsafeRawBufferPointer) throws -> [UInt8])? = nil) {
        self.entry = entry
        self.file = file
        self.encode = encode
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard written + bytes.count <= entry.byteCount else {
            throw CheckpointError.malformedTensor(file: file.path, tensor: entry.name,
                                                  reason: "writer got more than \(entry.byteCount) bytes")
        }
        if let encode {
            try encode(bytes).withUnsafeBytes { try file.write($0) }
        } else {
            try file.write(bytes)
        }
        written += bytes.count
    }
}

/// A write-only file descriptor with error reporting (POSIX write; no buffering needed since
/// tensors are written in large blocks).
final class FileOutput {
    let path: String
    private var fd: Int32

    init?(path: String) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { return nil }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
    }

    func close() throws {
        let result = Foundation.close(fd)
        fd = -1
        if result != 0 { throw CheckpointError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
    }

    func abandon() {
        if fd >= 0 { _ = Foundation.close(fd) }
        fd = -1
    }

    deinit { abandon() }
}
