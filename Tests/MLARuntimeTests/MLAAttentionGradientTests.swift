@testable import MLARuntime
import MLATestSupport
import Testing

/// `MLAAttention.outputErrorGradient` against central differences of the float64 reference forward
/// (`referenceMLA`, written per token without BLAS): the refinement's steps are only as good as this
/// gradient.
@Suite("MLA attention gradient")
struct MLAAttentionGradientTests {
    /// The synthetic shapes without a latent norm (the gradient refines conversions, which have none).
    static let specs: [MLASpec] = MLASpec.all.map { spec in
        var plain = spec
        plain.latentNorm = false
        plain.name += " (latent norm removed)"
        return plain
    }

    @Test("the gradient of the squared output error matches central differences of the float64 forward",
          arguments: specs, [6, 4])
    func matchesCentralDifferences(spec: MLASpec, causalBlock: Int) throws {
        let tokens = 6, w = spec.weights(seed: 5)
        try w.validate()
        var g = SplitMix64(seed: 17)
        let x = g.floats(tokens * spec.d, scale: 1), target = g.floats(tokens * spec.d, scale: 0.5)
        let positions = Array(0..<tokens)
        func error(_ weights: MLALayerWeights) -> Double {
            zip(referenceMLA(weights, x: x, tokens: tokens, positions: positions), target).reduce(0.0) { $0 + ($1.0 - Double($1.1)) * ($1.0 - Double($1.1)) }
        }
        // A block of 4 splits the 6 queries into a 4 × 4 and a 2 × 6 product.
        let gradient = MLAAttention.outputErrorGradient(w, x: x, target: target, tokens: tokens, causalBlock: causalBlock)
        let reference = error(w)
        #expect(abs(gradient.error - reference) <= 1e-5 * reference, "error \(gradient.error) vs float64 \(reference)")
        let matrices: [(String, WritableKeyPath<MLALayerWeights, [Float]>, [Float])] = [
            ("kvA", \.kvA, gradient.kvA), ("kvB", \.kvB, gradient.kvB), ("kRope", \.kRope, gradient.kRope), ("oProj", \.oProj, gradient.oProj),
        ]
        for (name, path, analytic) in matrices {
            // Along a random direction of this matrix, scaled to 1e-3 of its entries: (E(w + δ) − E(w − δ)) / 2
            // against Σ g·δ, with δ the perturbation the F32 weights actually hold.
            let direction = g.floats(w[keyPath: path].count, scale: 1e-3 / Float(spec.d).squareRoot())
            var plus = w, minus = w
            plus[keyPath: path] = zip(w[keyPath: path], direction).map { $0 + $1 }
            minus[keyPath: path] = zip(w[keyPath: path], direction).map { $0 - $1 }
            let difference = (error(plus) - error(minus)) / 2
            let predicted = analytic.indices.reduce(0.0) { sum, i in
                sum + Double(analytic[i]) * (Double(plus[keyPath: path][i]) - Double(minus[keyPath: path][i])) / 2
            }
            #expect(abs(difference - predicted) <= 2e-3 * abs(difference) + 1e-12, "\(name): central difference \(difference), gradient \(predicted)")
            #expect(abs(difference) > 1e-9, "\(name): the direction must change the error for the check to mean anything")
        }
    }

    @Test("the error is zero and so is the gradient when the target is the layer's own output")
    func vanishesAtItsOwnOutput() throws {
        let spec = Self.specs[1], tokens = 6, w = spec.weights(seed: 8)
        var g = SplitMix64(seed: 3)
        let x = g.floats(tokens * spec.d, scale: 1)
        let own = try MLAAttention.naive(w, x: x, tokens: tokens, positions: Array(0..<tokens))
        let gradient = MLAAttention.outputErrorGradient(w, x: x, target: own, tokens: tokens)
        let largest = (gradient.kvA + gradient.kvB + gradient.kRope + gradient.oProj).map(abs).max() ?? 0
        #expect(gradient.error < 1e-10 && largest < 1e-5, "error \(gradient.error), largest gradient entry \(largest)")
    }
}
