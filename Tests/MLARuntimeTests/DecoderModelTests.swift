import Foundation
import Testing
import MLACheckpoint
import MLATestSupport
@testable import MLARuntime

@Suite struct DecoderModelTests {
    static let variants: [(String, ModelConfig, InMemoryTensorStore)] = {
        func v(_ name: String, _ m: (ModelConfig, InMemoryTensorStore)) -> (String, ModelConfig, InMemoryTensorStore) { (name, m.0, m.1) }
        return [
            v("GQA", SyntheticModel.make()),
            v("MHA", SyntheticModel.make(heads: 4, kvHeads: 4)),
            v("MQA", SyntheticModel.make(heads: 4, kvHeads: 1)),
            v("qwen2 biases, untied", SyntheticModel.make(qkvBias: true, tied: false, family: .qwen2)),
            v("llama attention_bias (q,k,v,o)", SyntheticModel.make(qkvBias: true, outputBias: true)),
            v("linear", SyntheticModel.make(scaling: .linear(factor: 4))),
            v("llama3", SyntheticModel.make(scaling: .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64))),
            v("yarn", SyntheticModel.make(scaling: .yarn(factor: 4, originalMaxPositions: 64, betaFast: 32, betaSlow: 1,
                                                         attentionFactor: nil, mscale: nil, mscaleAllDim: nil, truncate: true))),
        ]
    }()

    /// The F32 BLAS path against the independent float64 reference, relative to the largest logit.
    @Test(arguments: 0..<8)
    func f32MatchesFloat64Reference(variant: Int) throws {
        let (name, config, store) = Self.variants[variant]
        let model = try DecoderModel(config: config, store: store)
        let ours = try model.logits(SyntheticModel.tokens)
        let reference = try ReferenceForward(config: config, store: store).logits(SyntheticModel.tokens)
        #expect(relativeError(ours, reference) < 1e-5, "\(name)")
        // The scaling must actually matter: the unscaled model gives different logits.
        if config.ropeScaling != .none {
            var plain = config
            plain.ropeScaling = .none
            let other = try ReferenceForward(config: plain, store: store).logits(SyntheticModel.tokens)
            #expect(relativeError(ours, other) > 1e-3, "\(name) scaling has no effect")
        }
    }

    /// Perplexity semantics: independent windows, every position but the last of each scored.
    @Test func perplexityWindowsMatchHandComputation() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let tokens = SyntheticModel.tokens + [1, 2, 3]  // 15 tokens, window 6: windows of 6, 6, 3
        let result = try evaluatePerplexity(model: model, tokens: tokens, window: 6)
        var nll = 0.0, hits = 0, count = 0
        for start in stride(from: 0, to: tokens.count, by: 6) {
            let chunk = Array(tokens[start..<min(start + 6, tokens.count)])
            let logits = try ReferenceForward(config: config, store: store).logits(chunk)
            for p in 0..<(chunk.count - 1) {
                let row = logits[p]
                let mx = row.max()!
                let logZ = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
                nll += logZ - row[chunk[p + 1]]
                if row.firstIndex(of: mx) == chunk[p + 1] { hits += 1 }
                count += 1
            }
        }
        #expect(result.tokens == 12 && count == 12 && result.windows == 3)
        #expect(abs(result.nll - nll / 12) < 1e-5)
        #expect(abs(result.perplexity - exp(nll / 12)) < 1e-4 * exp(nll / 12))
        #expect(result.top1 == Double(hits) / 12)
    }

    @Test func hooksObserveAndReplaceAttention() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let base = try model.logits(SyntheticModel.tokens)
        var seen: [Int] = []
        let identity = LayerHooks(attentionInput: { layer, x, sequences in
            seen.append(layer)
            #expect(sequences == [SyntheticModel.tokens.count] && x.count == SyntheticModel.tokens.count * config.hiddenSize)
        }, attentionOutput: { _, _, output, _ in output })
        #expect(try model.logits(SyntheticModel.tokens, hooks: identity) == base)
        #expect(seen == [0, 1])
        let zeroed = LayerHooks(attentionOutput: { layer, _, output, _ in layer == 1 ? [Float](repeating: 0, count: output.count) : nil })
        #expect(relativeError(try model.logits(SyntheticModel.tokens, hooks: zeroed), [base.map(Double.init)]) > 1e-3)
    }

    @Test func invalidTokenIsReported() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let error = try #require(throws: RuntimeError.self) { try model.logits([1, 500]) }
        #expect(error.description.contains("500"))
    }
}

extension SampleModelTests {
    /// The F32 path against the float64 reference on the real weights (first 24 Hamlet tokens).
    @Test(.needsSampleData) func f32MatchesFloat64OnRealWeights() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(24))
        let reference = try ReferenceForward(config: checkpoint.config, store: checkpoint.store).logits(ids)
        let ours = try box.model.logits(ids)
        #expect(relativeError(ours, reference) < 1e-5)
    }
}
