@testable import MLAVerify
import Testing

/// The residual-stream scale of a DeepSeek-V3 export (embeddings × α) is recovered from the embeddings,
/// so per-layer drift compares like with like; other conversions get exactly 1.
struct ResidualScaleTests {
    @Test func recoversTheEmbeddingScale() {
        let original: [Float] = [0.5, -1.25, 2, 0.75, -3]
        let alpha: Float = 0.31622776
        #expect(abs(residualStreamScale(original: original, converted: original.map { $0 * alpha }) - alpha) < 1e-6)
        #expect(residualStreamScale(original: original, converted: original) == 1)
        #expect(residualStreamScale(original: [0, 0], converted: [1, 2]) == 1)
    }
}
