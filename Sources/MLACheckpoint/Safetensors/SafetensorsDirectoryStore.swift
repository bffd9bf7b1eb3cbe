import Foundation
import MLATensor

/// The tensors of a Hugging Face model directory. Which files are read (the policy):
/// 1. `model.safetensors.index.json` when present: every file it names must exist, every mapped
///    tensor must be in its file, no tensor may sit in two shards or be missing from the map;
///    a wrong `metadata.total_size` is only a warning.
/// 2. otherwise `model.safetensors`;
/// 3. otherwise exactly one `*.safetensors` file (several without an index are refused, since
///    their roles are unknown).
public struct SafetensorsDirectoryStore: TensorStore {
    public let directory: String
    public let names: [String]
    /// Non-fatal findings (e.g. a wrong total_size in the index).
    public let warnings: [String]
    /// The shard files, in index order.
    public let files: [SafetensorsFile]
    private let owner: [String: Int]

    public static let indexName = "model.safetensors.index.json"

    public init(directory: String) throws {
        self.directory = directory
        let indexPath = directory + "/" + Self.indexName
        if FileManager.default.fileExists(atPath: indexPath) {
            let shards = try Self.indexedShards(directory: directory, indexPath: indexPath)
            (files, owner, names, warnings) = (shards.files, shards.owner, shards.names, shards.warnings)
        } else {
            let file = try SafetensorsFile(path: try Self.singleFile(directory: directory))
            files = [file]
            names = file.names
            owner = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
            warnings = []
        }
    }

    /// The shards an index names, in index order, with the tensor-to-shard map checked both ways.
    static func indexedShards(directory: String, indexPath: String) throws
        -> (files: [SafetensorsFile], owner: [String: Int], names: [String], warnings: [String]) {
        let data = try InputFile.read(indexPath)
        let index: JSONValue
        do { index = try JSONValue.parse(data) } catch {
            throw CheckpointError.malformed(file: indexPath, reason: "invalid JSON: \(error)")
        }
        guard let map = index["weight_map"]?.object else {
            throw CheckpointError.malformed(file: indexPath, reason: "missing 'weight_map' object")
        }
        var shardNames: [String] = []
        var mapped: [String: String] = [:]
        for (tensor, value) in map {
            guard let shard = value.string, !shard.contains("/") else {
                throw CheckpointError.malformed(file: indexPath, reason: "weight_map entry '\(tensor)' is not a file name in this directory")
            }
            mapped[tensor] = shard
            if !shardNames.contains(shard) { shardNames.append(shard) }
        }
        var files: [SafetensorsFile] = []
        var owner: [String: Int] = [:]
        var names: [String] = []
        for shard in shardNames {
            let shardPath = directory + "/" + shard
            guard FileManager.default.fileExists(atPath: shardPath) else {
                throw CheckpointError.missingFile(path: shardPath, reason: "shard listed in \(Self.indexName) is missing")
            }
            let file = try SafetensorsFile(path: shardPath)
            for name in file.names {
                if let previous = owner[name] {
                    throw CheckpointError.malformedTensor(
                        file: shardPath, tensor: name, reason: "also stored in \(files[previous].path); a tensor may sit in one shard only")
                }
                guard mapped[name] == shard else {
                    throw CheckpointError.malformedTensor(
                        file: shardPath, tensor: name,
                        reason: mapped[name] == nil ? "not listed in \(Self.indexName)" : "listed in \(Self.indexName) under \(mapped[name] ?? "")")
                }
                owner[name] = files.count
                names.append(name)
            }
            files.append(file)
        }
        for (tensor, shard) in map.map({ ($0.0, $0.1.string ?? "") }) where owner[tensor] == nil {
            throw CheckpointError.missingTensor(file: directory + "/" + shard, tensor: tensor)
        }
        var warnings: [String] = []
        if let total = index["metadata"]?["total_size"]?.int {
            let actual = names.reduce(0) { $0 + (files[owner[$1] ?? 0].info($1)?.storedBytes ?? 0) }
            if total != actual {
                warnings.append("\(indexPath): metadata.total_size is \(total) but the tensors hold \(actual) bytes")
            }
        }
        return (files, owner, names, warnings)
    }

    /// Without an index: `model.safetensors`, else the directory's only `*.safetensors` file.
    static func singleFile(directory: String) throws -> String {
        let single = directory + "/model.safetensors"
        if FileManager.default.fileExists(atPath: single) { return single }
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        guard !candidates.isEmpty else {
            throw CheckpointError.missingFile(path: directory, reason: "no model weights (.safetensors) in this directory")
        }
        guard candidates.count == 1 else {
            throw CheckpointError.malformed(
                file: directory,
                reason: "several .safetensors files (\(candidates.joined(separator: ", "))) and no \(Self.indexName)")
        }
        return directory + "/" + candidates[0]
    }

    public func info(_ name: String) -> TensorInfo? { owner[name].flatMap { files[$0].info(name) } }

    public func tensor(_ name: String) throws -> Tensor {
        guard let i = owner[name] else { throw CheckpointError.missingTensor(file: directory, tensor: name) }
        return try files[i].tensor(name)
    }
}
