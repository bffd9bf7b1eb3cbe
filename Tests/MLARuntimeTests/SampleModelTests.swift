import Testing
import MLACheckpoint
@testable import MLARuntime

/// The real sample model (SmolLM2-135M-Instruct, Q4_1 GGUF) against the independent reference
/// numbers of data.md §3 (a from-scratch numpy forward pass in float64).
@Suite(.serialized) struct SampleModelTests {
    @Test func greedyGenerationMatchesReference() throws {
        guard TestData.require() else { return }
        let (_, box) = try TestData.sampleModel.get()
        #expect(try box.model.generate(prompt: [6403, 1980, 253, 655], maxNewTokens: 10)
                == [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228])
        #expect(try box.model.generate(prompt: [504, 3575, 282, 4649, 314], maxNewTokens: 10)
                == [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34])
    }
}
