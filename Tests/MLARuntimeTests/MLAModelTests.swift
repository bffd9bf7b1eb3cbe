import Foundation
import Testing
import MLACheckpoint
import MLATensor
@testable import MLARuntime
import MLAConvert
import MLAVerify
import MLATestSupport

@Suite(.serialized) struct MLAModelTests {
    /// The exact head merge of every layer of `checkpoint`.
    static func headMerge(_ checkpoint: Checkpoint) throws -> [MLALayerWeights] {
        try (0..<checkpoint.config.numLayers).map { try MLALayerWeights.headMerge(checkpoint.config, checkpoint.store, layer: $0) }
    }

    /// `layers` written as a native MLA checkpoint in a new temporary directory (removed by the caller),
    /// in shards of at most `maxShardBytes` if given.
    static func writeNative(_ layers: [MLALayerWeights], source: Checkpoint, maxShardBytes: Int? = nil) throws -> (Checkpoint, String) {
        let dir = NSTemporaryDirectory() + "mla-native-\(UUID().uuidString.prefix(8))"
        let writer = CheckpointWriter(format: .hf, maxShardBytes: maxShardBytes)
        try MLAModelWriter.write(NativeMLAEncoder(source: source, provenance: [("method", .object([("name", .string("head-merge (test)"))]))],
                                                  writer: writer),
                                 to: try writer.output(dir, force: false, inputs: [source.path]), layers: layers)
        return (try Checkpoint.open(dir), dir)
    }

    /// On the real sample model: the exact merge, written in the native format (in 40 MB shards) and
    /// read back, gives the source's logits to float rounding, in the naive and the absorbed form, with
    /// a latent cache of r + n_rope·d_rope = 192 + 3·64 values per layer. The shards hold the layers in
    /// order, each layer's copied MLP beside its converted attention (so the streaming writer copies it
    /// while the next layer converts, `LayerTensorNames.layerMajor`).
    @Test(.needsSampleData) func exactMergeOfRealModelMatchesSource() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let layers = try Self.headMerge(checkpoint)
        let (native, dir) = try Self.writeNative(layers, source: checkpoint, maxShardBytes: 40_000_000)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let index = try JSONValue.parse(Array(FileManager.default.contents(atPath: dir + "/" + SafetensorsDirectoryStore.indexName) ?? Data()))
        guard case let .object(map)? = index["weight_map"] else { Issue.record("no weight_map"); return }
        let shardOf = Dictionary(uniqueKeysWithValues: map.map { ($0.0, $0.1.string ?? "") })
        let shards = Set(shardOf.values).sorted()
        #expect(shards.count > 4)
        var previous = 0
        for l in 0..<checkpoint.config.numLayers {
            let n = LayerTensorNames(layer: l)
            let mlp = try #require(shards.firstIndex(of: shardOf[n.downProj] ?? ""))
            let attention = try #require(shards.firstIndex(of: shardOf[NativeMLAEncoder.prefix(l) + MLALayerWeights.NativeName.kvA] ?? ""))
            #expect(abs(mlp - attention) <= 1 && min(mlp, attention) >= previous, "layer \(l): MLP in shard \(mlp), attention in \(attention)")
            previous = max(mlp, attention)
        }
        #expect(native.config.family == .mlaNative)
        #expect(native.config.cacheValuesPerLayer == Array(repeating: 192 + 3 * 64, count: 30))
        let tokenizer = try BPETokenizer.forCheckpoint(native)
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(128))
        let source = try box.model.logits(ids)
        let scale = Double(source.map(abs).max()!)
        func maxDiff(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).map { Double(abs($0 - $1)) }.max()! / scale }
        let absorbed = try DecoderModel.load(native, mlaForm: .absorbed).logits(ids)
        let naive = try DecoderModel.load(native, mlaForm: .naive).logits(ids)
        #expect(maxDiff(absorbed, source) < 1e-4, "absorbed vs source")
        #expect(maxDiff(naive, source) < 1e-4, "naive vs source")
        #expect(maxDiff(absorbed, naive) < 1e-4, "absorbed vs naive")
        let ppl = try evaluatePerplexity(model: DecoderModel.load(native), tokens: ids, window: 128).perplexity
        let sourcePpl = try evaluatePerplexity(model: box.model, tokens: ids, window: 128).perplexity
        #expect(abs(ppl / sourcePpl - 1) < 1e-4)
    }
}

extension MLAModelTests {
    /// Greedy decoding with the latent caches (absorbed form, one token at a time) of the exact merge
    /// reproduces the continuations of docs/samples.md, and each cache holds (r + n_rope·d_rope) values per token.
    @Test(.needsSampleData) func latentCacheGenerationMatchesReference() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let c = checkpoint.config
        let layers = try Self.headMerge(checkpoint)
        let model = try DecoderModel(config: c, store: checkpoint.store,
                                     attention: layers.map { MLAAttentionBlock(weights: $0, form: .absorbed) })
        #expect(try model.generate(prompt: [6403, 1980, 253, 655], maxNewTokens: 10)
                == [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228])
        var caches = try #require(model.mlaCaches())
        let prompt = [504, 3575, 282, 4649, 314]
        let full = try model.logits(prompt + [7042])
        _ = try model.decode(prompt, caches: &caches)
        let step = try model.decode([7042], caches: &caches)
        let v = c.vocabSize
        let last = Array(full[(5 * v)..<(6 * v)])
        let scale = Double(last.map(abs).max()!)
        #expect(zip(step, last).map { Double(abs($0 - $1)) }.max()! / scale < 1e-4, "incremental == full window")
        #expect(caches.allSatisfy { $0.count == 6 && $0.valuesPerToken == 192 + 3 * 64 && $0.bytes == 6 * 384 * 4 })
    }
}

extension MLAModelTests {
    /// mla-verify's measurements on the real model: the lossless head merge shows float-rounding drift
    /// and KL ~ 0, values equal to the source's and absorbed = naive; the same conversion with layer 7's
    /// kv_b_proj scaled by 1.5 is caught in layer 7 only (teacher forcing keeps the other layers' inputs
    /// exact), with values exactly 1.5× the source's there (relative error 0.5, cosine 1), and end to end.
    @Test(.needsSampleData) func verificationSeparatesLosslessAndBroken() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let c = checkpoint.config
        var layers = try Self.headMerge(checkpoint)
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(256))
        func model(_ l: [MLALayerWeights]) throws -> DecoderModel {
            try DecoderModel(config: c, store: checkpoint.store, attention: l.map { MLAAttentionBlock(weights: $0, form: .absorbed) })
        }
        let lossless = try verify(original: box.model, converted: try model(layers), tokens: ids, window: 128)
        #expect(lossless.tokens == 254)
        #expect(lossless.layers.count == 30 && lossless.layers.allSatisfy { $0.relativeError < 1e-5 && $0.cosine > 0.99999 })
        #expect(lossless.klMax < 1e-6 && lossless.top1Agreement == 1)
        #expect(lossless.layers.allSatisfy { ($0.valuesRelativeError ?? 1) < 1e-5 && ($0.valuesCosine ?? 0) > 0.99999 })
        let core = try #require(lossless.mlaCore)
        #expect(core.tokens == 128 && core.layerMaxRelative.count == 30)
        #expect(core.logitsMaxRelative < 1e-4 && core.layerMaxRelative.allSatisfy { $0 < 1e-4 }, "absorbed vs naive")
        #expect(abs(lossless.converted.perplexity / lossless.original.perplexity - 1) < 1e-4)
        let independent = try evaluatePerplexity(model: box.model, tokens: ids, window: 128)
        #expect(abs(lossless.original.perplexity / independent.perplexity - 1) < 1e-9, "consistent with mla-verify perplexity")

        layers[7].kvB = layers[7].kvB.map { $0 * 1.5 }
        let broken = try verify(original: box.model, converted: try model(layers), tokens: ids, window: 128)
        let worst = try #require(broken.layers.max { $0.relativeError < $1.relativeError })
        #expect(worst.layer == 7 && worst.relativeError > 0.1)
        #expect(broken.layers.filter { $0.layer != 7 }.allSatisfy { $0.relativeError < 1e-5 })
        #expect(broken.klMean > 1e-3)
        #expect(abs((broken.layers[7].valuesRelativeError ?? 0) - 0.5) < 1e-5 && (broken.layers[7].valuesCosine ?? 0) > 0.99999)
        #expect(broken.layers.filter { $0.layer != 7 }.allSatisfy { ($0.valuesRelativeError ?? 1) < 1e-5 })
        let json = broken.json
        #expect(json["kl"]?["mean"]?.double == broken.klMean && json["layers"]?.array?.count == 30)
        #expect(json["kv_cache"]?["original_values_per_token"]?.int == 11_520)
        #expect(json["mla_core"]?["absorbed_vs_naive_max_rel"]?.double == broken.mlaCore?.logitsMaxRelative)
        #expect(json["layers"]?.array?[7]["values_rel_error"]?.double == broken.layers[7].valuesRelativeError)
    }
}

extension MLAModelTests {
    /// A batch of sequences of different lengths (stacked rows, one GEMM per projection) gives each
    /// sequence the hidden states it gets on its own, to F32 rounding: for the source attention and
    /// for MLA attention (the exact head merge, which runs sequence by sequence).
    @Test(.needsSampleData) func batchedSequencesMatchSeparateRuns() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = tokenizer.encode(try TestData.hamletExcerpt())
        let batch = [Array(ids[0..<96]), Array(ids[100..<300]), Array(ids[300..<301]), Array(ids[400..<529])]
        let c = checkpoint.config
        let merged = try DecoderModel(config: c, store: checkpoint.store,
                                      attention: (0..<c.numLayers).map {
                                          MLAAttentionBlock(weights: try MLALayerWeights.headMerge(c, checkpoint.store, layer: $0), form: .absorbed)
                                      })
        for model in [box.model, merged] {
            let stacked = try model.hiddenStates(batch: batch)
            let separate = try batch.flatMap { try model.hiddenStates($0) }
            #expect(stacked.count == separate.count)
            let scale = Double(separate.map(abs).max()!)
            let difference = zip(stacked, separate).map { Double(abs($0 - $1)) }.max()!
            #expect(difference / scale < 1e-5, "max difference \(difference / scale) relative")
        }
    }
}

extension MLAModelTests {
    /// Layer-major evaluation of checkpoints read one layer at a time (`StreamedModel`, two vocabulary
    /// chunks for the sample's 49,152 entries) against the whole loaded models' full logits, window by
    /// window, scored with a plain Double log-softmax here: the same NLL, argmax and KL per position
    /// to float rounding. The converted side is a lossy native MLA checkpoint (the exact merge with
    /// layer 7's kv_b_proj scaled), so the KL is far from 0.
    @Test(.needsSampleData) func streamedEvaluationMatchesWholeModelLogits() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let c = checkpoint.config
        var layers = try Self.headMerge(checkpoint)
        layers[7].kvB = layers[7].kvB.map { $0 * 1.5 }
        let (native, dir) = try Self.writeNative(layers, source: checkpoint)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(300))
        #expect(vocabularyChunks(vocabSize: c.vocabSize, hiddenSize: c.hiddenSize).count == 2)

        let report = try verify(original: try StreamedModel(checkpoint), converted: try StreamedModel(native), tokens: ids, window: 128)
        let loaded = try DecoderModel.load(native)
        var kl: [Double] = [], nllO = 0.0, nllC = 0.0, agree = 0
        let v = c.vocabSize
        for window in evaluationWindows(ids, window: 128) {
            let lo = try box.model.logits(window), lc = try loaded.logits(window)
            for p in 0..<(window.count - 1) {
                func logSoftmax(_ z: ArraySlice<Float>) -> (values: [Double], argmax: Int) {
                    let m = Double(z.max()!)
                    let logZ = m + log(z.reduce(0.0) { $0 + exp(Double($1) - m) })
                    return (z.map { Double($0) - logZ }, z.firstIndex(of: z.max()!)! - z.startIndex)
                }
                let (a, ia) = logSoftmax(lo[(p * v)..<((p + 1) * v)]), (b, ib) = logSoftmax(lc[(p * v)..<((p + 1) * v)])
                kl.append(zip(a, b).reduce(0.0) { $0 + exp($1.0) * ($1.0 - $1.1) })
                nllO -= a[window[p + 1]]
                nllC -= b[window[p + 1]]
                if ia == ib { agree += 1 }
            }
        }
        #expect(report.tokens == kl.count && kl.count == 297)
        #expect(zip(report.klValues, kl).allSatisfy { abs($0 - $1) < 1e-5 + 1e-4 * $1 }, "KL per position")
        #expect(report.klMean > 1e-3)
        #expect(abs(report.original.nll - nllO / 297) < 1e-5 && abs(report.converted.nll - nllC / 297) < 1e-5)
        #expect(abs(report.top1Agreement - Double(agree) / 297) <= 1.0 / 297)
        let streamed = try evaluatePerplexity(model: try StreamedModel(native), tokens: ids, window: 128)
        #expect(abs(streamed.nll - nllC / 297) < 1e-5, "evaluatePerplexity on the streamed checkpoint")
        #expect(try #require(report.mlaCore).logitsMaxRelative < 1e-4)
    }
}
