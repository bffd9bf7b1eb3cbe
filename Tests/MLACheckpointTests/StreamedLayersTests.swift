import Testing
import MLATensor
@testable import MLACheckpoint

@Suite struct StreamedLayersTests {
    /// A tensor the writer asks of a converted layer that the layer lacks names the source checkpoint
    /// (issue 19: the error said only "<converted layer 0>").
    @Test func missingConvertedTensorNamesTheSource() throws {
        let layers = StreamedLayerTensors<Int>(order: [0], source: "/models/llama-2-7b",
                                               produce: { l in (["a": Tensor(floats: [1], shape: [1])], l) },
                                               received: { _, _ in })
        defer { layers.cancel() }
        #expect(try layers.tensor("a", layer: 0).floats() == [1])
        #expect {
            try layers.tensor("b", layer: 0)
        } throws: { error in
            "\(error)" == "/models/llama-2-7b (converted layer 0): tensor 'b' not found"
        }
    }
}
