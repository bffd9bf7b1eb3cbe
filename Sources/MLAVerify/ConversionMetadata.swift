import Foundation
import MLACheckpoint
import MLATensor

/// What a converter recorded per layer about a conversion, for the report's rank and energy plot
/// (`docs/formats-native-mla.md`, `mla_convert.layers`).
public struct ConversionMetadata: Sendable, Equatable {
    /// One entry of `mla_convert.layers`.
    public struct Layer: Sendable, Equatable {
        /// `kv_rank`: r_i, the latent width of the layer.
        public let kvRank: Int
        /// `errors.kv_energy_retained`: fraction (0...1) of the key/value energy the latent keeps.
        public let kvEnergyRetained: Double?
        /// `errors.rope_energy_retained`: fraction (0...1) of the RoPE energy the kept pairs carry.
        public let ropeEnergyRetained: Double?

        public init(kvRank: Int, kvEnergyRetained: Double? = nil, ropeEnergyRetained: Double? = nil) {
            self.kvRank = kvRank
            self.kvEnergyRetained = kvEnergyRetained
            self.ropeEnergyRetained = ropeEnergyRetained
        }
    }

    /// One entry per layer, in layer order.
    public let layers: [Layer]
    /// The file the entries were read from.
    public let file: String

    public init(layers: [Layer], file: String) {
        self.layers = layers
        self.file = file
    }

    /// Parses a `layers` array read from `file` at `key` (both named in errors): each entry needs an
    /// integer `kv_rank` ≥ 0; `errors.kv_energy_retained` and `errors.rope_energy_retained` are
    /// optional numbers in 0...1.
    public init(layers entries: [JSONValue], file: String, key: String = "mla_convert.layers") throws {
        layers = try entries.enumerated().map { i, entry in
            let path = "\(key)[\(i)]."
            guard let rank = entry["kv_rank"]?.int, rank >= 0 else {
                throw CheckpointError.invalidConfig(file: file, key: path + "kv_rank", reason: "must be a non-negative integer")
            }
            func fraction(_ key: String) throws -> Double? {
                guard let value = entry["errors"]?[key], !value.isNull else { return nil }
                guard let x = value.double, (0...1).contains(x) else {
                    throw CheckpointError.invalidConfig(file: file, key: path + "errors." + key,
                                                        reason: "must be a fraction between 0 and 1 (not a percentage)")
                }
                return x
            }
            return Layer(kvRank: rank, kvEnergyRetained: try fraction("kv_energy_retained"),
                         ropeEnergyRetained: try fraction("rope_energy_retained"))
        }
        self.file = file
    }

    /// The metadata of a converted model: `mla_convert.layers` of its configuration (config.json of a
    /// Hugging Face directory or `.safetensors` file, the stored config of HDF5), else the `layers` of
    /// `mla_convert.json` in the same directory (Hugging Face layouts only). Nil when neither exists;
    /// throws when one exists but is malformed.
    public static func load(_ checkpoint: Checkpoint) throws -> ConversionMetadata? {
        guard checkpoint.format == .huggingFace else {
            return try load(config: checkpoint.config.raw, configFile: checkpoint.path, directory: nil)
        }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: checkpoint.path, isDirectory: &isDirectory)
        let directory = exists && isDirectory.boolValue
            ? checkpoint.path : URL(fileURLWithPath: checkpoint.path).deletingLastPathComponent().path
        return try load(config: checkpoint.config.raw, configFile: directory + "/config.json", directory: directory)
    }

    /// The same from a parsed configuration `config` (read from `configFile`, named in errors) and the
    /// directory to look for `mla_convert.json` in (nil: do not look).
    public static func load(config: JSONValue, configFile: String, directory: String?) throws -> ConversionMetadata? {
        if let layers = config["mla_convert"]?["layers"]?.array {
            return try ConversionMetadata(layers: layers, file: configFile)
        }
        guard let directory else { return nil }
        let side = directory + "/mla_convert.json"
        guard FileManager.default.fileExists(atPath: side) else { return nil }
        let data = try InputFile.read(side)
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw CheckpointError.malformed(file: side, reason: "invalid JSON: \(error); fix or remove the file")
        }
        guard let layers = json["layers"]?.array else {
            throw CheckpointError.missingConfigKey(file: side, key: "layers")
        }
        return try ConversionMetadata(layers: layers, file: side, key: "layers")
    }
}
