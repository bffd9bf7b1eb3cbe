import MLACheckpoint
import MLARuntime
import MLATensor

/// How one output format lays out a model whose attention was converted to MLA: the names, shapes and
/// dtypes of its tensors, the converted tensors of each layer, the source tensors it copies (possibly
/// rescaled), and what it stores beside the tensors (config.json and side files, or GGUF metadata).
/// `MLAModelWriter` streams any encoder's model through an `OutputPlan`; one encoder per format:
/// `NativeMLAEncoder`, `DeepSeekV3Encoder`, `GGUFEncoder`.
public protocol MLAModelEncoder: Sendable {
    /// The checkpoint the converted layers come from (layer l from its layer l).
    var source: Checkpoint { get }

    /// Refuses a converted layer this format cannot hold (one line naming the layer and the option that
    /// fixes it). Called on the template before anything is written, and on every layer as it arrives
    /// with `template` (layer 0) beside it.
    func check(_ layer: MLALayerWeights, template: MLALayerWeights) throws

    /// Every tensor of the output in the order the container stores them (layer by layer), with the
    /// output's names, shapes (row-major, outermost first) and dtypes. `ranks[l]` is layer l's latent width.
    func entries(template: MLALayerWeights, ranks: [Int]) throws -> [TensorWriteEntry]

    /// The layer whose converted attention makes output tensor `name`; nil for a tensor taken from the source.
    func convertedLayer(of name: String) -> Int?

    /// Layer `l`'s converted tensors by output name, exactly the entries for which `convertedLayer` is l,
    /// in any float dtype (the writer converts each to its entry's dtype).
    func layerTensors(_ layer: MLALayerWeights, index l: Int) throws -> [String: Tensor]

    /// The per-layer record stored with the model (the native config's `layers[l]`), built from the
    /// converted layer and the caller's `extras` members; nil for formats that keep none.
    func layerRecord(_ layer: MLALayerWeights, extras: [(String, JSONValue)]) -> JSONValue?

    /// The data of output tensor `entry` that is not converted attention (embeddings, MLP, norms, head),
    /// in the entry's dtype and shape, from the source.
    func sourcePayload(_ entry: TensorWriteEntry) throws -> TensorPayload

    /// The order in which `write` asks for the entries' data.
    func writeOrder(_ entries: [TensorWriteEntry]) -> [String]

    /// Writes the container to `output`: asks `payload(name)` once per entry, in `writeOrder`, then
    /// stores `records()` (one per layer, `.null` where `layerRecord` gave nil) and `summary()` as the format
    /// keeps them; both are complete only after the last tensor.
    func write(to output: OutputPlan, entries: [TensorWriteEntry], template: MLALayerWeights, records: () -> [JSONValue],
               summary: () throws -> JSONValue?, payload: (String) throws -> TensorPayload) throws
}

extension MLAModelEncoder {
    public func layerRecord(_ layer: MLALayerWeights, extras: [(String, JSONValue)]) -> JSONValue? { nil }
}
