import MLACheckpoint
import MLATensor

/// One decoder layer as the runtime runs it: its norms and MLP (F32) and its attention.
public struct DecoderLayer: Sendable {
    public let weights: DecoderLayerWeights
    public let attention: any AttentionBlock

    public init(weights: DecoderLayerWeights, attention: any AttentionBlock) {
        self.weights = weights
        self.attention = attention
    }
}

/// A decoder model as layer-major evaluation reads it (`WindowStates`): embeddings by token, one
/// layer at a time, the LM head in vocabulary chunks. A loaded `DecoderModel` hands out what it
/// holds; a `StreamedModel` reads each piece from the checkpoint when asked, so evaluating it needs
/// one layer's F32 weights at a time instead of the whole model.
public protocol LayerwiseModel: Sendable {
    var config: ModelConfig { get }
    /// Final norm weight [d].
    var finalNorm: [Float] { get }
    /// Layer `index` (read from the checkpoint on every call for a streamed model).
    func layer(_ index: Int) throws -> DecoderLayer
    /// The embeddings of `ids`, [ids.count × d]; throws `RuntimeError.invalidToken` for an id outside
    /// the vocabulary.
    func embed(_ ids: [Int]) throws -> [Float]
    /// Rows `rows` of the embedding table, [rows.count × d].
    func embeddingRows(_ rows: Range<Int>) throws -> [Float]
    /// Rows `rows` (vocabulary entries) of the LM head, [rows.count × d].
    func lmHeadRows(_ rows: Range<Int>) throws -> [Float]
}

extension DecoderModel: LayerwiseModel {
    public func layer(_ index: Int) throws -> DecoderLayer {
        DecoderLayer(weights: layers[index], attention: attention[index])
    }

    public func embed(_ ids: [Int]) throws -> [Float] {
        let d = config.hiddenSize
        var x = [Float](repeating: 0, count: ids.count * d)
        for (t, id) in ids.enumerated() {
            guard id >= 0 && id < config.vocabSize else { throw RuntimeError.invalidToken(id: id, vocabSize: config.vocabSize) }
            x.replaceSubrange((t * d)..<((t + 1) * d), with: embedding[(id * d)..<((id + 1) * d)])
        }
        return x
    }

    public func embeddingRows(_ rows: Range<Int>) throws -> [Float] {
        let d = config.hiddenSize
        return Array(embedding[(rows.lowerBound * d)..<(rows.upperBound * d)])
    }

    public func lmHeadRows(_ rows: Range<Int>) throws -> [Float] {
        let d = config.hiddenSize
        return Array(lmHead[(rows.lowerBound * d)..<(rows.upperBound * d)])
    }
}

/// A checkpoint evaluated without loading it: `layer(_:)` reads one layer's tensors from the memory
/// map and widens them to F32 (the mapped pages are released after the copy), embeddings are read
/// row by row and the LM head chunk by chunk. Resident while evaluating: the final norm, whatever
/// layer the caller holds (about 870 MB at Llama-3-8B's shape) and, for a quantized GGUF, the
/// dequantized embedding table.
public struct StreamedModel: LayerwiseModel {
    public let checkpoint: Checkpoint
    public let config: ModelConfig
    public let finalNorm: [Float]
    /// The form MLA layers run in.
    public let mlaForm: MLAAttention.Form
    private let embedding: Tensor
    private let lmHead: Tensor
    private let sourceRope: RopeFrequencies?
    private let mlaReader: MLALayerReader?

    public init(_ checkpoint: Checkpoint, mlaForm: MLAAttention.Form = .absorbed) throws {
        self.checkpoint = checkpoint
        self.mlaForm = mlaForm
        let c = checkpoint.config, store = checkpoint.store
        config = c
        finalNorm = try store.floats(ModelTensorNames.finalNorm, shape: [c.hiddenSize])
        func table(_ name: String) throws -> Tensor {
            let t = try store.tensor(name)
            let file = store.info(name)?.file ?? checkpoint.path
            guard t.shape == [c.vocabSize, c.hiddenSize] else {
                throw CheckpointError.shapeMismatch(file: file, tensor: name, expected: [c.vocabSize, c.hiddenSize], found: t.shape)
            }
            guard t.dtype.isComputeFloat else { throw CheckpointError.unsupportedDType(file: file, tensor: name, dtype: t.dtype.rawValue) }
            return t
        }
        embedding = try table(ModelTensorNames.embedding)
        lmHead = c.tiedEmbeddings ? embedding : try table(ModelTensorNames.lmHead)
        if c.family.isMLA {
            mlaReader = try MLALayerReader(checkpoint)
            sourceRope = nil
        } else {
            mlaReader = nil
            sourceRope = RopeFrequencies(config: c)
        }
    }

    public func layer(_ index: Int) throws -> DecoderLayer {
        let weights = try DecoderLayerWeights(config: config, store: checkpoint.store, layer: index)
        if let mlaReader {
            return DecoderLayer(weights: weights, attention: MLAAttentionBlock(weights: try mlaReader.layer(index), form: mlaForm))
        }
        return DecoderLayer(weights: weights, attention: try SourceAttention(config: config, store: checkpoint.store, layer: index, rope: sourceRope!))
    }

    public func embed(_ ids: [Int]) throws -> [Float] {
        var x: [Float] = []
        x.reserveCapacity(ids.count * config.hiddenSize)
        for id in ids {
            guard id >= 0 && id < config.vocabSize else { throw RuntimeError.invalidToken(id: id, vocabSize: config.vocabSize) }
            x += embedding.rows(id..<(id + 1)).floats()
        }
        return x
    }

    public func embeddingRows(_ rows: Range<Int>) throws -> [Float] { embedding.rows(rows).floats() }

    public func lmHeadRows(_ rows: Range<Int>) throws -> [Float] { lmHead.rows(rows).floats() }
}
