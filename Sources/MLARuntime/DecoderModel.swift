import Foundation
import MLACheckpoint
import MLALinalg

/// Callbacks into a forward pass, per layer, without copying the model. Calibration observes the
/// attention inputs; per-layer drift measurement observes outputs or replaces them.
public struct LayerHooks {
    /// Called with (layer, x [T × d] = the attention input after the layer's input norm, T).
    public var attentionInput: ((Int, [Float], Int) throws -> Void)?
    /// Called with (layer, x, attention output [T × d], T); a non-nil result replaces the output.
    public var attentionOutput: ((Int, [Float], [Float], Int) throws -> [Float]?)?
    /// Stop after this many layers (skips the final norm and LM head); nil runs the whole model.
    public var stopAfterLayers: Int?

    public init(attentionInput: ((Int, [Float], Int) throws -> Void)? = nil,
                attentionOutput: ((Int, [Float], [Float], Int) throws -> [Float]?)? = nil,
                stopAfterLayers: Int? = nil) {
        self.attentionInput = attentionInput
        self.attentionOutput = attentionOutput
        self.stopAfterLayers = stopAfterLayers
    }
}

/// The parts of a decoder layer outside attention (norms and SwiGLU MLP), F32 row-major.
public struct DecoderLayerWeights: Sendable {
    public let inputNorm: [Float]
    public let postAttentionNorm: [Float]
    public let gate: [Float], up: [Float], down: [Float]
    public let gateBias: [Float]?, upBias: [Float]?, downBias: [Float]?

    public init(config c: ModelConfig, store: any TensorStore, layer: Int) throws {
        let n = LayerTensorNames(layer: layer)
        let d = c.hiddenSize, f = c.intermediateSize
        inputNorm = try store.floats(n.inputNorm, shape: [d])
        postAttentionNorm = try store.floats(n.postAttentionNorm, shape: [d])
        gate = try store.floats(n.gateProj, shape: [f, d])
        up = try store.floats(n.upProj, shape: [f, d])
        down = try store.floats(n.downProj, shape: [d, f])
        let mlpBias = c.mlpBias
        gateBias = mlpBias ? try store.floats(n.prefix + "mlp.gate_proj.bias", shape: [f]) : nil
        upBias = mlpBias ? try store.floats(n.prefix + "mlp.up_proj.bias", shape: [f]) : nil
        downBias = mlpBias ? try store.floats(n.prefix + "mlp.down_proj.bias", shape: [d]) : nil
    }
}

/// A decoder-only transformer (Llama, Mistral, Qwen2 and, with MLA attention blocks, converted
/// models): embeddings, pre-norm layers, final norm, tied or separate LM head. F32 on BLAS GEMMs.
public final class DecoderModel: @unchecked Sendable {
    // Immutable after init; `attention` entries are Sendable values. @unchecked because the class
    // is final and never mutated after construction.
    public let config: ModelConfig
    public let embedding: [Float]
    public let finalNorm: [Float]
    /// LM head [vocab × d]; the embedding when tied.
    public let lmHead: [Float]
    public let layers: [DecoderLayerWeights]
    public let attention: [any AttentionBlock]

    /// Loads every weight of a source model as F32 (a 135M model takes about 540 MB).
    public convenience init(config: ModelConfig, store: any TensorStore) throws {
        let rope = RopeFrequencies(config: config)
        let attention: [any AttentionBlock] = try (0..<config.numLayers).map {
            try SourceAttention(config: config, store: store, layer: $0, rope: rope)
        }
        try self.init(config: config, store: store, attention: attention)
    }

    /// Loads the non-attention weights and uses the given attention blocks, one per layer.
    public init(config: ModelConfig, store: any TensorStore, attention: [any AttentionBlock]) throws {
        precondition(attention.count == config.numLayers, "DecoderModel: one attention block per layer")
        self.config = config
        let d = config.hiddenSize, v = config.vocabSize
        embedding = try store.floats(ModelTensorNames.embedding, shape: [v, d])
        finalNorm = try store.floats(ModelTensorNames.finalNorm, shape: [d])
        lmHead = config.tiedEmbeddings ? embedding : try store.floats(ModelTensorNames.lmHead, shape: [v, d])
        layers = try (0..<config.numLayers).map { try DecoderLayerWeights(config: config, store: store, layer: $0) }
        self.attention = attention
    }

    /// The hidden states after the layers (before the final norm), [T × d].
    public func hiddenStates(_ tokens: [Int], hooks: LayerHooks = LayerHooks()) throws -> [Float] {
        let d = config.hiddenSize, f = config.intermediateSize, T = tokens.count
        var x = [Float](repeating: 0, count: T * d)
        for (t, id) in tokens.enumerated() {
            guard id >= 0 && id < config.vocabSize else {
                throw RuntimeError.invalidToken(id: id, vocabSize: config.vocabSize)
            }
            for i in 0..<d { x[t * d + i] = embedding[id * d + i] }
        }
        let layerCount = min(hooks.stopAfterLayers ?? config.numLayers, config.numLayers)
        for l in 0..<layerCount {
            let w = layers[l]
            let h = Kernels.rmsNorm(x, tokens: T, weight: w.inputNorm, eps: config.rmsNormEps)
            try hooks.attentionInput?(l, h, T)
            var a = try attention[l].forward(h, tokens: T)
            if let replacement = try hooks.attentionOutput?(l, h, a, T) { a = replacement }
            for i in 0..<x.count { x[i] += a[i] }
            let h2 = Kernels.rmsNorm(x, tokens: T, weight: w.postAttentionNorm, eps: config.rmsNormEps)
            let g = Kernels.linear(h2, tokens: T, weight: w.gate, outFeatures: f, inFeatures: d, bias: w.gateBias)
            var u = Kernels.linear(h2, tokens: T, weight: w.up, outFeatures: f, inFeatures: d, bias: w.upBias)
            for i in 0..<u.count {
                let gi = g[i]
                u[i] *= gi / (1 + expf(-gi))
            }
            let m = Kernels.linear(u, tokens: T, weight: w.down, outFeatures: d, inFeatures: f, bias: w.downBias)
            for i in 0..<x.count { x[i] += m[i] }
        }
        return x
    }

    /// Next-token logits [T × vocab] for a window of token ids at positions 0..<T.
    public func logits(_ tokens: [Int], hooks: LayerHooks = LayerHooks()) throws -> [Float] {
        let x = try hiddenStates(tokens, hooks: hooks)
        let normed = Kernels.rmsNorm(x, tokens: tokens.count, weight: finalNorm, eps: config.rmsNormEps)
        return Kernels.linear(normed, tokens: tokens.count, weight: lmHead, outFeatures: config.vocabSize,
                              inFeatures: config.hiddenSize)
    }

    /// Greedy generation by full recompute of the growing window: returns the `maxNewTokens` new ids.
    public func generate(prompt: [Int], maxNewTokens: Int) throws -> [Int] {
        var tokens = prompt
        var generated: [Int] = []
        let v = config.vocabSize
        for _ in 0..<maxNewTokens {
            let logits = try self.logits(tokens)
            let last = (tokens.count - 1) * v
            var best = 0
            for i in 1..<v where logits[last + i] > logits[last + best] { best = i }
            generated.append(best)
            tokens.append(best)
        }
        return generated
    }
}

/// Runtime errors from inputs (not from checkpoints, which raise `CheckpointError`).
public enum RuntimeError: Error, CustomStringConvertible, Sendable {
    case invalidToken(id: Int, vocabSize: Int)
    case emptyInput(String)

    public var description: String {
        switch self {
        case let .invalidToken(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case let .emptyInput(what): return "\(what) is empty"
        }
    }
}
