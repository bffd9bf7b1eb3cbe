import Foundation
import MLACheckpoint
import MLALinalg

/// Callbacks into a forward pass, per layer, without copying the model. Calibration observes the
/// attention inputs; per-layer drift measurement observes outputs or replaces them. Each gets the
/// batch's sequence lengths (see `AttentionBlock`); x has their sum as rows.
public struct LayerHooks {
    /// Called with (layer, x [N × d] = the attention input after the layer's input norm, sequences).
    public var attentionInput: ((Int, [Float], [Int]) throws -> Void)?
    /// Called with (layer, x, attention output [N × d], sequences); a non-nil result replaces the output.
    public var attentionOutput: ((Int, [Float], [Float], [Int]) throws -> [Float]?)?
    /// Stop after this many layers (skips the final norm and LM head); nil runs the whole model.
    public var stopAfterLayers: Int?

    public init(attentionInput: ((Int, [Float], [Int]) throws -> Void)? = nil,
                attentionOutput: ((Int, [Float], [Float], [Int]) throws -> [Float]?)? = nil,
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

extension DecoderLayerWeights {
    /// One pre-norm decoder layer on the residual stream x [rows × d], in place: x += attend(norm(x)),
    /// then x += MLP(norm(x)). `attend` gets the normed attention input [rows × d] and returns the
    /// attention output [rows × d].
    public func forward(_ x: inout [Float], rows: Int, eps: Double, attend: ([Float]) throws -> [Float]) rethrows {
        let d = inputNorm.count, f = gate.count / max(d, 1)
        let a = try attend(Kernels.rmsNorm(x, tokens: rows, weight: inputNorm, eps: eps))
        for i in 0..<x.count { x[i] += a[i] }
        let h = Kernels.rmsNorm(x, tokens: rows, weight: postAttentionNorm, eps: eps)
        let g = Kernels.linear(h, tokens: rows, weight: gate, outFeatures: f, inFeatures: d, bias: gateBias)
        var u = Kernels.linear(h, tokens: rows, weight: up, outFeatures: f, inFeatures: d, bias: upBias)
        Kernels.swiGLU(gate: g, up: &u)
        let m = Kernels.linear(u, tokens: rows, weight: down, outFeatures: d, inFeatures: f, bias: downBias)
        for i in 0..<x.count { x[i] += m[i] }
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
        let attention: [any AttentionBlock] = try Self.loadLayers(config.numLayers) {
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
        layers = try Self.loadLayers(config.numLayers) { try DecoderLayerWeights(config: config, store: store, layer: $0) }
        self.attention = attention
    }

    /// `load(layer)` for every layer, on all cores (reading and widening weights, no BLAS).
    private static func loadLayers<T>(_ count: Int, _ load: @Sendable (Int) throws -> T) throws -> [T] {
        try parallelMap(count, workers: ProcessInfo.processInfo.activeProcessorCount, splitBLASThreads: false, load)
    }

    /// The hidden states after the layers (before the final norm), [T × d].
    public func hiddenStates(_ tokens: [Int], hooks: LayerHooks = LayerHooks()) throws -> [Float] {
        try hiddenStates(batch: [tokens], hooks: hooks)
    }

    /// The hidden states of independent sequences run as one batch, stacked by rows [Σ T × d]: the
    /// projections and the MLP see all rows at once (larger, faster GEMMs), attention each sequence.
    public func hiddenStates(batch: [[Int]], hooks: LayerHooks = LayerHooks()) throws -> [Float] {
        try runLayers(batch, hooks: hooks) { layer, h, sequences in try attention[layer].forward(h, sequences: sequences) }
    }

    /// Embeds the sequences of `batch` (stacked by rows) and runs the layers, calling
    /// `attend(layer, x, sequence lengths)` for each layer's attention.
    func runLayers(_ batch: [[Int]], hooks: LayerHooks,
                   attend: (Int, [Float], [Int]) throws -> [Float]) throws -> [Float] {
        let sequences = batch.map(\.count), tokens = batch.flatMap { $0 }
        var x = try embed(tokens)
        let layerCount = min(hooks.stopAfterLayers ?? config.numLayers, config.numLayers)
        for l in 0..<layerCount {
            try layers[l].forward(&x, rows: tokens.count, eps: config.rmsNormEps) { h in
                try hooks.attentionInput?(l, h, sequences)
                let a = try attend(l, h, sequences)
                return try hooks.attentionOutput?(l, h, a, sequences) ?? a
            }
        }
        return x
    }

    /// Next-token logits [T × vocab] for a window of token ids at positions 0..<T.
    public func logits(_ tokens: [Int], hooks: LayerHooks = LayerHooks()) throws -> [Float] {
        head(try hiddenStates(tokens, hooks: hooks), tokens: tokens)
    }

    /// Final norm and LM head on hidden states [T × d].
    func head(_ x: [Float], tokens: [Int]) -> [Float] {
        let normed = Kernels.rmsNorm(x, tokens: tokens.count, weight: finalNorm, eps: config.rmsNormEps)
        return Kernels.linear(normed, tokens: tokens.count, weight: lmHead, outFeatures: config.vocabSize,
                              inFeatures: config.hiddenSize)
    }

    /// Next-token logits [vocab] after the last of `tokens` (positions 0..<T): the final norm and LM
    /// head on the last row only.
    func lastLogits(_ tokens: [Int]) throws -> [Float] {
        let x = try hiddenStates(tokens), d = config.hiddenSize
        return head(Array(x[(x.count - d)...]), tokens: [tokens[tokens.count - 1]])
    }

    /// Greedy generation: returns the `maxNewTokens` new ids. MLA models decode incrementally with
    /// their latent caches (`decode`); source models recompute the growing window's layers at every
    /// step (they have no KV cache here), with the LM head on its last position only.
    public func generate(prompt: [Int], maxNewTokens: Int) throws -> [Int] {
        var tokens = prompt
        var generated: [Int] = []
        let v = config.vocabSize
        var caches = mlaCaches()
        var logits = caches != nil ? try decode(prompt, caches: &caches!) : try lastLogits(tokens)
        for step in 0..<maxNewTokens {
            let last = logits.count - v
            var best = 0
            for i in 1..<v where logits[last + i] > logits[last + best] { best = i }
            generated.append(best)
            tokens.append(best)
            guard step + 1 < maxNewTokens else { break }
            logits = caches != nil ? try decode([best], caches: &caches!) : try lastLogits(tokens)
        }
        return generated
    }

    /// Empty latent caches, one per layer, when every layer is MLA attention; nil otherwise.
    public func mlaCaches() -> [MLAAttention.LatentCache]? {
        let blocks = attention.compactMap { $0 as? MLAAttentionBlock }
        guard blocks.count == attention.count else { return nil }
        return blocks.map { MLAAttention.LatentCache(for: $0.weights) }
    }

    /// Incremental decoding of an MLA model: runs `tokens` at the positions following the cached ones,
    /// appending their latents and rope keys to `caches` (one per layer), and returns their logits
    /// [tokens × vocab]. Each layer reads only its cache (r + rope dims per token) in the absorbed form.
    public func decode(_ tokens: [Int], caches: inout [MLAAttention.LatentCache]) throws -> [Float] {
        precondition(caches.count == config.numLayers, "decode: one latent cache per layer")
        let start = caches[0].count
        let positions = Array(start..<(start + tokens.count))
        let x = try runLayers([tokens], hooks: LayerHooks()) { layer, h, _ in
            guard let block = attention[layer] as? MLAAttentionBlock else {
                throw RuntimeError.notMLA(layer: layer)
            }
            return try MLAAttention.prefill(block.weights, x: h, tokens: tokens.count, positions: positions, cache: &caches[layer], form: block.form)
        }
        return head(x, tokens: tokens)
    }
}

/// Runtime errors from inputs (not from checkpoints, which raise `CheckpointError`).
public enum RuntimeError: Error, CustomStringConvertible, Sendable {
    case invalidToken(id: Int, vocabSize: Int)
    case emptyInput(String)
    /// Latent-cache decoding was asked of a layer whose attention is not MLA.
    case notMLA(layer: Int)

    public var description: String {
        switch self {
        case let .invalidToken(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case let .emptyInput(what): return "\(what) is empty"
        case let .notMLA(layer): return "layer \(layer) does not use MLA attention; latent-cache decoding needs an MLA model"
        }
    }
}
