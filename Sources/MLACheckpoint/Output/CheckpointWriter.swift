import Foundation
import MLATensor

/// Output formats for rewritten or converted checkpoints.
public enum OutputFormat: String, Sendable, CaseIterable {
    /// Hugging Face directory: config.json, safetensors (sharded past the size limit), side files.
    case hf
    /// One HDF5 file (docs/formats.md): a dataset per tensor, config and side files inside.
    case hdf5
}

/// Writes a complete checkpoint atomically (see `AtomicOutput`), streaming tensor by tensor:
/// `tensor(name)` is called once per entry, in order, and its result is released after writing.
public struct CheckpointWriter {
    public var format: OutputFormat
    /// Shard size limit for `.hf` (bytes of tensor data per file); nil = one file.
    public var maxShardBytes: Int?
    /// Deflate level 1-9 for `.hdf5`; nil = contiguous, uncompressed (memory-mappable).
    public var deflateLevel: Int?
    /// Replace an existing non-empty output.
    public var force: Bool

    public init(format: OutputFormat, maxShardBytes: Int? = nil, deflateLevel: Int? = nil, force: Bool = false) {
        self.format = format
        self.maxShardBytes = maxShardBytes
        self.deflateLevel = deflateLevel
        self.force = force
    }

    /// Writes `config` (the config.json object), every entry's tensor, safetensors `metadata` and the
    /// side files to `path`. `inputs` are paths the output must not overwrite. `lateFiles` are side
    /// files known only once every tensor is written (a streaming converter's summary); `.hf` writes
    /// them after the tensors, `.hdf5` asks for them first.
    public func write(to path: String, config: JSONValue, entries: [TensorWriteEntry], metadata: [String: String],
                      auxiliaryFiles: [String: [UInt8]], lateFiles: () throws -> [String: [UInt8]] = { [:] }, inputs: [String],
                      tensor: (String) throws -> Tensor) throws {
        switch format {
        case .hf:
            try AtomicOutput.write(to: path, directory: true, force: force, inputs: inputs) { dir in
                try writeFile(dir + "/config.json", Array((config.serialized(indent: 2) + "\n").utf8))
                for (name, bytes) in auxiliaryFiles.sorted(by: { $0.key < $1.key }) {
                    try writeFile(dir + "/" + name, bytes)
                }
                _ = try SafetensorsWriter.writeDirectory(dir, entries: entries, metadata: metadata,
                                                         maxShardBytes: maxShardBytes, tensor: tensor)
                for (name, bytes) in try lateFiles().sorted(by: { $0.key < $1.key }) {
                    try writeFile(dir + "/" + name, bytes)
                }
            }
        case .hdf5:
            try AtomicOutput.write(to: path, directory: false, force: force, inputs: inputs) { file in
                let files = auxiliaryFiles.merging(try lateFiles()) { _, late in late }
                try HDF5Writer.write(path: file, config: config, entries: entries, deflateLevel: deflateLevel,
                                     files: files, tensor: tensor)
            }
        }
    }

    private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create file")
        }
    }
}

/// Parses sizes such as `5GB`, `500MB`, `2GiB`, `1048576` into bytes.
public func parseByteSize(_ text: String) -> Int? {
    let units: [(String, Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                                  ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000), ("B", 1)]
    let upper = text.uppercased().trimmingCharacters(in: .whitespaces)
    for (suffix, scale) in units where upper.hasSuffix(suffix) {
        guard let v = Double(upper.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v > 0 else { return nil }
        return Int(v * Double(scale))
    }
    return Int(upper).flatMap { $0 > 0 ? $0 : nil }
}
