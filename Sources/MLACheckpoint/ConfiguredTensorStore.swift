import MLATensor

/// A checkpoint's tensors as its config describes the model: what a file holds beyond that is hidden
/// from every command (conversions, export, verification), so each sees one consistent tensor list.
///
/// Hidden:
/// - non-persistent buffers, `model.layers.N.self_attn.rotary_emb.inv_freq`: Llama-2-era uploads saved
///   them, though transformers recomputes them from `rope_theta` and never loads them (they are
///   `persistent=False` buffers since transformers 4.31);
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
        var kept: [String] = [], strayCount = 0, stray = Set<Int>()
        for name in base.names where !Self.nonPersistentBufferSuffixes.contains(where: { name.hasSuffix($0) }) {
            if let l = LayerTensorNames.layer(of: name), l >= layers {
                strayCount += 1
                stray.insert(l)
            } else {
                kept.append(name)
            }
        }
        names = kept
        strayTensorCount = strayCount
        strayLayers = stray.sorted()
    }

    func info(_ name: String) -> TensorInfo? {
        isVisible(name) ? base.info(name) : nil
    }

    func tensor(_ name: String) throws -> Tensor {
        guard isVisible(name) else { throw CheckpointError.missingTensor(file: base.info(name)?.file ?? "<checkpoint>", tensor: name) }
        return try base.tensor(name)
    }

    /// Hidden tensors are the exceptions, so visibility is decided from the name alone (no set of
    /// every name is kept).
    private func isVisible(_ name: String) -> Bool {
        if Self.nonPersistentBufferSuffixes.contains(where: { name.hasSuffix($0) }) { return false }
        guard let l = LayerTensorNames.layer(of: name) else { return true }
        return l < layers
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
