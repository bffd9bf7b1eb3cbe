import Foundation
import MLATensor

/// How a checkpoint is stored on disk.
public enum CheckpointFormat: String, Sendable {
    /// A Hugging Face directory: config.json + safetensors (single or sharded).
    case huggingFace = "hf"
    case gguf
    case hdf5
}

/// An opened source checkpoint: its normalized description and lazy access to its tensors.
/// Opening reads headers and metadata only; tensor data is mapped or decoded on demand.
public struct Checkpoint: Sendable {
    /// The path the user gave.
    public let path: String
    public let format: CheckpointFormat
    public let config: ModelConfig
    public let store: any TensorStore
    /// The tokenizer embedded in a GGUF file, if any.
    public let ggufTokenizer: GGUFTokenizerData?
    /// Small side files to carry into converted outputs (tokenizer.json, tokenizer_config.json,
    /// generation_config.json, special_tokens_map.json, ...): file name -> bytes.
    public let auxiliaryFiles: [String: [UInt8]]
    /// Non-fatal observations made while opening, one line each (a wrong total_size in a shard index,
    /// tensors of layers past `num_hidden_layers`); the tools print them before any work.
    public let warnings: [String]

    /// Side files copied through by writers when present in a Hugging Face directory.
    public static let auxiliaryFileNames = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
        "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
    ]

    /// Opens `path`: a directory with config.json and safetensors, a `.safetensors` file with
    /// config.json beside it, a `.gguf` file, or an `.h5`/`.hdf5` file. The format is detected from
    /// the directory contents or the file's magic bytes, not only its extension.
    /// Every tensor the model family needs is checked for presence and shape (`validateTensors`).
    public static func open(_ path: String) throws -> Checkpoint {
        let checkpoint = try openUnvalidated(path)
        try checkpoint.validateTensors()
        return checkpoint
    }

    private static func openUnvalidated(_ path: String) throws -> Checkpoint {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw CheckpointError.missingFile(path: path, reason: "no such file or directory")
        }
        if isDir.boolValue { return try openHuggingFaceDirectory(path) }
        let magic = try readMagic(path)
        if magic.starts(with: Array("GGUF".utf8)) { return try openGGUF(path) }
        if magic.starts(with: [0x89, 0x48, 0x44, 0x46]) { return try openHDF5(path) }
        if path.hasSuffix(".safetensors") {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            let store = try SafetensorsFile(path: path)
            return try huggingFace(path: path, directory: dir, store: store, warnings: [])
        }
        throw CheckpointError.malformed(
            file: path, reason: "not a checkpoint this toolkit reads (expected a Hugging Face directory, .safetensors, GGUF or HDF5)")
    }

    private static func readMagic(_ path: String) throws -> [UInt8] {
        let file = try MappedFile(path: path)
        return file.bytes(offset: 0, count: min(8, file.size))
    }

    private static func openHuggingFaceDirectory(_ dir: String) throws -> Checkpoint {
        let store = try SafetensorsDirectoryStore(directory: dir)
        return try huggingFace(path: dir, directory: dir, store: store, warnings: store.warnings)
    }

    private static func huggingFace(path: String, directory: String, store: any TensorStore,
                                    warnings: [String]) throws -> Checkpoint {
        let configPath = directory + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw CheckpointError.missingFile(path: configPath, reason: "config.json not found beside the weights")
        }
        let data = try InputFile.read(configPath)
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw CheckpointError.malformed(file: configPath, reason: "invalid JSON: \(error)")
        }
        let config = try ModelAdapters.config(from: json, file: configPath)
        var aux: [String: [UInt8]] = [:]
        for name in auxiliaryFileNames {
            let file = directory + "/" + name
            if FileManager.default.fileExists(atPath: file) { aux[name] = try InputFile.read(file) }
        }
        return assemble(path: path, format: .huggingFace, config: config, configFile: configPath, store: store, ggufTokenizer: nil,
                        auxiliaryFiles: aux, warnings: warnings)
    }

    private static func openGGUF(_ path: String) throws -> Checkpoint {
        let file = try GGUFFile(path: path)
        let json = try file.hfConfig()
        let config = try ModelAdapters.config(from: json, file: path)
        return assemble(path: path, format: .gguf, config: config, configFile: path, store: try GGUFTensorStore(file: file),
                        ggufTokenizer: try file.tokenizerData(), auxiliaryFiles: [:], warnings: [])
    }

    private static func openHDF5(_ path: String) throws -> Checkpoint {
        let store = try HDF5Store(path: path)
        let config = try ModelAdapters.config(from: store.configJSON, file: path)
        return assemble(path: path, format: .hdf5, config: config, configFile: path, store: store, ggufTokenizer: nil,
                        auxiliaryFiles: try store.auxiliaryFiles(), warnings: [])
    }

    /// The checkpoint with `store` restricted to the model `config` describes (`ConfiguredTensorStore`:
    /// no non-persistent buffers, no layers past `num_hidden_layers`), and a warning naming the stray
    /// layer tensors, if any. `configFile` is where the config was read.
    private static func assemble(path: String, format: CheckpointFormat, config: ModelConfig, configFile: String,
                                 store: any TensorStore, ggufTokenizer: GGUFTokenizerData?,
                                 auxiliaryFiles: [String: [UInt8]], warnings: [String]) -> Checkpoint {
        let configured = ConfiguredTensorStore(base: store, layers: config.numLayers)
        return Checkpoint(path: path, format: format, config: config, store: configured, ggufTokenizer: ggufTokenizer,
                          auxiliaryFiles: auxiliaryFiles,
                          warnings: warnings + [configured.strayLayersNote(configFile: configFile)].compactMap { $0 })
    }

    /// Checks that every tensor the family needs is present with the right shape, so a conversion
    /// fails before any work rather than halfway. Names the first missing or misshapen tensor.
    public func validateTensors() throws {
        let c = config
        func check(_ name: String, _ shape: [Int]) throws {
            guard let info = store.info(name) else { throw CheckpointError.missingTensor(file: path, tensor: name) }
            guard info.shape == shape else {
                throw CheckpointError.shapeMismatch(file: info.file, tensor: name, expected: shape, found: info.shape)
            }
        }
        try check(ModelTensorNames.embedding, [c.vocabSize, c.hiddenSize])
        try check(ModelTensorNames.finalNorm, [c.hiddenSize])
        if !c.tiedEmbeddings { try check(ModelTensorNames.lmHead, [c.vocabSize, c.hiddenSize]) }
        for layer in 0..<c.numLayers {
            let n = LayerTensorNames(layer: layer)
            try check(n.inputNorm, [c.hiddenSize])
            try check(n.postAttentionNorm, [c.hiddenSize])
            try check(n.gateProj, [c.intermediateSize, c.hiddenSize])
            try check(n.upProj, [c.intermediateSize, c.hiddenSize])
            try check(n.downProj, [c.hiddenSize, c.intermediateSize])
        }
        // MLA attention tensors are checked by the runtime's MLA loader, which knows their layout.
        guard !c.family.isMLA else { return }
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        for layer in 0..<c.numLayers {
            let n = LayerTensorNames(layer: layer)
            try check(n.qProj, [q, c.hiddenSize])
            try check(n.kProj, [kv, c.hiddenSize])
            try check(n.vProj, [kv, c.hiddenSize])
            try check(n.oProj, [c.hiddenSize, q])
            if c.qkvBias {
                try check(n.qBias, [q])
                try check(n.kBias, [kv])
                try check(n.vBias, [kv])
            }
            if c.outputBias { try check(n.oBias, [c.hiddenSize]) }
        }
    }

    /// The source tensors a converter copies unchanged (every tensor but the layers' attention
    /// projections and biases, `LayerTensorNames.sourceAttention`), for checking before any layer is
    /// converted. Any other `self_attn.` tensor is refused, naming its file: the converted attention
    /// would silently drop what it does.
    public func passThroughTensors() throws -> [TensorInfo] {
        let attention = Set((0..<config.numLayers).flatMap { LayerTensorNames(layer: $0).sourceAttention })
        var infos: [TensorInfo] = []
        for name in store.names where !attention.contains(name) {
            guard let info = store.info(name) else { throw CheckpointError.missingTensor(file: path, tensor: name) }
            guard LayerTensorNames.attentionLayer(of: name) == nil else {
                throw CheckpointError.unsupportedModel(
                    file: info.file,
                    reason: "tensor '\(name)' belongs to the attention but is no q/k/v/o projection or bias, so the converted attention would drop it; remove it if it is a buffer, else this model is not convertible")
            }
            infos.append(info)
        }
        return infos
    }

    /// Tensor `name` for copying to an output, refused when it holds an infinity or NaN: the error names
    /// the source file, where the writers' own check (`CheckpointError.nonFiniteOutput`) could only name
    /// the output being written.
    public func checkedTensor(_ name: String) throws -> Tensor {
        let tensor = try store.tensor(name)
        guard let bad = tensor.withRawBytes({ FloatConversion.firstNonFinite($0, dtype: tensor.dtype) }) else { return tensor }
        throw CheckpointError.malformedTensor(file: store.info(name)?.file ?? path, tensor: name,
                                              reason: "holds a non-finite value at element \(bad); the checkpoint is damaged")
    }

    /// Refuses an infinity or NaN in any tensor a converted model copies unchanged (`passThroughTensors`):
    /// reads them one at a time (a quantized one dequantized) and gives their pages back, so a damaged
    /// file fails before calibration and conversion instead of when the output is written.
    public func checkPassThroughValues() throws {
        for info in try passThroughTensors() { try checkedTensor(info.name).releaseMappedPages() }
    }

    /// Total parameter count (elements of every tensor).
    public var parameterCount: Int { store.names.reduce(0) { $0 + (store.info($1)?.elementCount ?? 0) } }
}
