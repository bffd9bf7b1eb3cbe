import MLATensor

/// A checkpoint's tensors as its config describes the model: what a file holds beyond that is hidden
/// from every command (conversions, export, verification), so each sees one consistent tensor list.
///
/// Hidden:
/// - non-persistent buffers, `model.layers.N.self_attn.rotary_emb.inv_freq`: Llama-2-era uploads saved
///   them, though transformers computes them from `rope_theta` and registers them with
///   `persistent=False`, so loading ignores them;
/// - the tensors of layers at or past the config's `num_hidden_layers` (people trim a config to test
///   on fewer layers). `strayLayersNote` says which were hidden, for the one warning line.
struct ConfiguredTensorStore: TensorStore {
    let base: any TensorStore
    let names: [String]
    /// The config's `num_hidden_layers`.
    let layers: Int
    /// Stray layer tensors: how many, and of which layers (ascending).
    let strayTensorCount: Int
    let strayLayers: [Int]

    /// Name suffixes of non-persistent buffers, which carry nothing a model needs.
    static let nonPersistentBufferSuffixes = [".self_attn.rotary_emb.inv_freq"]

    /// `base` restricted to the model of `layers` decoder layers.
    init(base: any TensorStore, layers: Int) {
        self.base = base
        self.layers = layers
        names = base.names.filter { Self.isVisible($0, layers: layers) }
        let stray = base.names.filter { !Self.isBuffer($0) }.compactMap(LayerTensorNames.layer(of:)).filter { $0 >= layers }
        strayTensorCount = stray.count
        strayLayers = Set(stray).sorted()
    }

    func info(_ name: String) -> TensorInfo? {
        Self.isVisible(name, layers: layers) ? base.info(name) : nil
    }

    /// A hidden tensor is missing like an absent one (the base names the file of an absent one).
    func tensor(_ name: String) throws -> Tensor {
        if !Self.isVisible(name, layers: layers), let hidden = base.info(name) {
            throw CheckpointError.missingTensor(file: hidden.file, tensor: name)
        }
        return try base.tensor(name)
    }

    static func isBuffer(_ name: String) -> Bool { nonPersistentBufferSuffixes.contains { name.hasSuffix($0) } }

    /// Decided from the name alone, so no set of every name is kept.
    static func isVisible(_ name: String, layers: Int) -> Bool {
        !isBuffer(name) && (LayerTensorNames.layer(of: name).map { $0 < layers } ?? true)
    }

    /// One line naming the hidden stray layer tensors and why, or nil when there are none.
    /// `configFile` is where `num_hidden_layers` was read.
    func strayLayersNote(configFile: String) -> String? {
        guard let first = strayLayers.first, let last = strayLayers.last else { return nil }
        let which = strayLayers.count == last - first + 1
            ? (first == last ? "layer \(first)" : "layers \(first)-\(last)")
            : "layers " + strayLayers.map(String.init).joined(separator: ", ")
        return "\(configFile): num_hidden_layers is \(layers), so the \(strayTensorCount) tensors of \(which) in the weights are ignored and left out of any output (set num_hidden_layers to use them)"
    }
}
