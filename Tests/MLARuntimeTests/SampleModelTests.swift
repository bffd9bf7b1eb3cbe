import Testing
import MLACheckpoint
import MLATestSupport
@testable import MLARuntime

/// The real sample model (SmolLM2-135M-Instruct, Q4_1 GGUF) against the independent reference
/// numbers of docs/samples.md ("Reference numbers") (a from-scratch numpy forward pass in float64).
@Suite(.serialized) struct SampleModelTests {
    @Test(.needsSampleData) func greedyGenerationMatchesReference() throws {
        let (_, box) = try TestData.sampleModel.get()
        #expect(try box.model.generate(prompt: [6403, 1980, 253, 655], maxNewTokens: 10)
                == [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228])
        #expect(try box.model.generate(prompt: [504, 3575, 282, 4649, 314], maxNewTokens: 10)
                == [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34])
    }
}

extension SampleModelTests {
    /// docs/samples.md: perplexity 50.020 and top-1 186/511 on the Hamlet excerpt, 15.945 and 242/511 on
    /// the Apache excerpt (first 512 tokens, one window, no BOS). Tolerance 0.5 %, top-1 ±2 hits.
    @Test(.needsSampleData, arguments: [("hamlet", 50.020, 3.91243, 186), ("apache", 15.945, 2.76918, 242)])
    func perplexityMatchesReference(text: String, perplexity: Double, nll: Double, hits: Int) throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let excerpt = text == "hamlet" ? try TestData.hamletExcerpt() : try TestData.apacheExcerpt()
        let ids = Array(tokenizer.encode(excerpt).prefix(512))
        let result = try evaluatePerplexity(model: box.model, tokens: ids, window: 512)
        #expect(result.tokens == 511)
        #expect(abs(result.perplexity / perplexity - 1) < 0.005, "perplexity \(result.perplexity)")
        #expect(abs(result.nll - nll) < 0.005)
        #expect(abs(Int((result.top1 * 511).rounded()) - hits) <= 2, "top-1 \(result.top1)")
    }

    /// docs/samples.md: the top-5 logits at the last position of the Hamlet excerpt.
    @Test(.needsSampleData) func topLogitsAtLastPosition() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(512))
        let logits = try box.model.logits(ids)
        let v = checkpoint.config.vocabSize
        let last = Array(logits[(511 * v)..<(512 * v)])
        let top = last.indices.sorted { last[$0] > last[$1] }.prefix(5)
        #expect(Array(top) == [39855, 67, 52, 71, 3825])
        for (id, expected) in zip(top, [27.3203, 26.9190, 26.6107, 26.5126, 26.4043] as [Float]) {
            #expect(abs(last[id] - expected) < 1e-3)
        }
    }
}
