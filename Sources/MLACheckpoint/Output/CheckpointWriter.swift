import Foundation
import MLATensor

/// Output formats for rewritten or converted checkpoints.
public enum OutputFormat: String, Sendable, CaseIterable {
    /// Hugging Face directory: config.json, safetensors (sharded past the size limit), side files.
    case hf
    /// One HDF5 file (docs/formats.md): a dataset per tensor, config and side files inside.
    case hdf5
}

/// Writes a complete checkpoint through an `OutputPlan` (checked at command start), streaming tensor by tensor:
/// `tensor(name)` is called once per entry, in order, and its result is released after writing.
public struct CheckpointWriter: Sendable {
    public var format: OutputFormat
    /// Shard size limit for `.hf` (bytes of tensor data per file); nil = one file.
    public var maxShardBytes: Int?
    /// Deflate level 1-9 for `.hdf5`; nil = contiguous, uncompressed (memory-mappable).
    public var deflateLevel: Int?

    public init(format: OutputFormat, maxShardBytes: Int? = nil, deflateLevel: Int? = nil) {
        self.format = format
        self.maxShardBytes = maxShardBytes
        self.deflateLevel = deflateLevel
    }

    /// The output plan for writing this format to `path` (a directory for `.hf`, a file for `.hdf5`):
    /// make it at command start, before any long work, with every path the command reads as `inputs`.
    public func output(_ path: String, force: Bool, inputs: [String]) throws -> OutputPlan {
        try OutputPlan(path, kind: format == .hf ? .directory : .file, force: force, inputs: inputs)
    }

    /// Writes `config` (the config.json object), every entry's tensor, safetensors `metadata` and the
    /// side files to `output`. `lateFiles` are side
    /// files known only once every tensor is written (a streaming converter's summary); both formats
    /// ask for them after the tensors.
    public func write(to output: OutputPlan, config: JSONValue, entries: [TensorWriteEntry], metadata: [String: String],
                      auxiliaryFiles: [String: [UInt8]], lateFiles: () throws -> [String: [UInt8]] = { [:] },
                      tensor: (String) throws -> Tensor) throws {
        try write(to: output, config: { config }, entries: entries, metadata: metadata, auxiliaryFiles: auxiliaryFiles,
                  lateFiles: lateFiles) { .whole(try tensor($0)) }
    }

    /// The general form: `config()` may depend on what the tensors produced (both formats ask for it after the
    /// tensors), and each entry's data comes as a `TensorPayload`,
    /// so a large derived tensor can be written in row blocks without ever being whole in memory.
    public func write(to output: OutputPlan, config: () throws -> JSONValue, entries: [TensorWriteEntry], metadata: [String: String],
                      auxiliaryFiles: [String: [UInt8]], lateFiles: () throws -> [String: [UInt8]] = { [:] },
                      payload: (String) throws -> TensorPayload) throws {
        guard output.kind == (format == .hf ? .directory : .file) else {
            throw CheckpointError.writeFailed(path: output.path, reason: "the output plan is not for the \(format.rawValue) format (caller bug)")
        }
        switch format {
        case .hf:
            try output.write { dir in
                for (name, bytes) in auxiliaryFiles.sorted(by: { $0.key < $1.key }) {
                    try writeFile(dir + "/" + name, bytes)
                }
                _ = try SafetensorsWriter.writeDirectoryInPieces(dir, entries: entries, metadata: metadata,
                                                                 maxShardBytes: maxShardBytes) { sink in
                    try payload(sink.entry.name).write(to: sink)
                }
                let configText = try naming(output.path + "/config.json") { try config().serialized(indent: 2) }
                try writeFile(dir + "/config.json", Array((configText + "\n").utf8))
                let late = try naming(output.path) { try lateFiles() }
                for (name, bytes) in late.sorted(by: { $0.key < $1.key }) {
                    try writeFile(dir + "/" + name, bytes)
                }
            }
        case .hdf5:
            try output.write { file in
                try naming(output.path) { try HDF5Writer.write(path: file, config: config, entries: entries, deflateLevel: deflateLevel,
                                     files: { auxiliaryFiles.merging(try lateFiles()) { _, late in late } }) { name in
                    let t = try payload(name).whole(entry: entries.first { $0.name == name })
                    try t.withRawBytes { try TensorPayload.checkFinite($0, dtype: t.dtype, file: file, tensor: name, firstElement: 0) }
                    return t
                } }
            }
        }
    }

    /// `body`, with a value JSON cannot hold (a non-finite number in the config or a side file)
    /// reported as a failed write of `file`.
    private func naming<T>(_ file: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as JSONSerializationError {
            throw CheckpointError.writeFailed(path: file, reason: error.description)
        }
    }

    /// The order in which `write` asks for the entries' data.
    public func writeOrder(_ entries: [TensorWriteEntry]) -> [String] {
        switch format {
        case .hf: return SafetensorsWriter.writeOrder(entries, maxShardBytes: maxShardBytes)
        case .hdf5: return entries.map(\.name)
        }
    }

    private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create file")
        }
    }
}

/// One entry's data for a writer.
public enum TensorPayload {
    /// The whole tensor, in the entry's dtype and shape.
    case whole(Tensor)
    /// The tensor as `count` consecutive blocks of rows (first dimension), each in the entry's dtype;
    /// `block(i)` is asked for in order and released after writing.
    case rowBlocks(count: Int, block: (Int) throws -> Tensor)

    /// Writes the payload's bytes through `sink`, checking dtypes, that every value is finite
    /// (`checkFinite`) and, for a whole tensor, the shape (the sink checks the byte count).
    public func write(to sink: TensorByteSink) throws {
        let e = sink.entry
        var element = 0
        func check(_ t: Tensor, shapeMatters: Bool) throws {
            guard t.dtype == e.dtype, !shapeMatters || t.shape == e.shape else {
                throw CheckpointError.malformedTensor(
                    file: sink.path, tensor: e.name,
                    reason: "writer expected \(e.dtype.rawValue) \(e.shape) but got \(t.dtype.rawValue) \(t.shape)")
            }
            try t.withRawBytes {
                try Self.checkFinite($0, dtype: t.dtype, file: sink.path, tensor: e.name, firstElement: element)
                try sink.write($0)
            }
            element += t.elementCount
            t.releaseMappedPages()
        }
        switch self {
        case let .whole(t):
            try check(t, shapeMatters: true)
        case let .rowBlocks(count, block):
            for i in 0..<count { try check(try block(i), shapeMatters: false) }
        }
    }

    /// Refuses an infinity or NaN in the float values `raw` of `dtype` (the part of `tensor` from flat
    /// element `firstElement` on): a conversion that overflows the output dtype (a value at the BF16
    /// maximum rotated or rescaled past it rounds to +inf) must fail, not write a model that yields
    /// NaN. Every writer's data passes here; the check reads bytes about to be written anyway
    /// (docs/performance.md: well under 1 % of a conversion).
    static func checkFinite(_ raw: UnsafeRawBufferPointer, dtype: DType, file: String, tensor: String, firstElement: Int) throws {
        guard let i = FloatConversion.firstNonFinite(raw, dtype: dtype) else { return }
        let value = Tensor(dtype: dtype, shape: [1], storage: .owned(Array(raw[(i * dtype.byteSize)..<((i + 1) * dtype.byteSize)]))).floats()[0]
        throw CheckpointError.nonFiniteOutput(file: file, tensor: tensor, element: firstElement + i, value: value.isNaN ? "NaN" : value > 0 ? "+inf" : "-inf")
    }

    /// The whole tensor (row blocks joined), for writers that need it at once (HDF5).
    func whole(entry: TensorWriteEntry?) throws -> Tensor {
        switch self {
        case let .whole(t):
            return t
        case let .rowBlocks(count, block):
            var bytes: [UInt8] = []
            var dtype = entry?.dtype ?? .f32
            for i in 0..<count {
                let t = try block(i)
                dtype = t.dtype
                t.withRawBytes { bytes.append(contentsOf: $0) }
            }
            return Tensor(dtype: dtype, shape: entry?.shape ?? [bytes.count / dtype.byteSize], storage: .owned(bytes))
        }
    }
}

/// A positive number of bytes, written as `5GB`, `500MB`, `2GiB` or `1048576` (decimal KB/MB/GB, binary
/// KiB/MiB/GiB, case-insensitive), as `--max-shard-size` takes it.
public struct ByteSize: Sendable, CustomStringConvertible {
    /// The size in bytes.
    public let bytes: Int
    /// The text it was read from (`5GB`), shown as the option's default.
    public let description: String

    /// Reads `text`; nil unless it is a positive size with one of the units above (or none) that fits an `Int`.
    public init?(_ text: String) {
        let units: [(suffix: String, scale: Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                                                     ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000), ("B", 1)]
        let upper = text.uppercased().trimmingCharacters(in: .whitespaces)
        if let unit = units.first(where: { upper.hasSuffix($0.suffix) }) {
            let scaled = Double(upper.dropLast(unit.suffix.count).trimmingCharacters(in: .whitespaces)).map { $0 * Double(unit.scale) }
            guard let scaled, scaled >= 1, scaled < Double(Int.max) else { return nil }
            bytes = Int(scaled)
        } else {
            guard let plain = Int(upper), plain > 0 else { return nil }
            bytes = plain
        }
        description = text
    }

    /// The tools' default largest safetensors shard, 5 GB (the Hugging Face hub's).
    public static let defaultShard = ByteSize("5GB")!
}
