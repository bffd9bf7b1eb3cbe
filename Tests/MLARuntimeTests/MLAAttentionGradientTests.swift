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
        let windows = try MLAAttention.OutputErrorWindows(w, inputs: [x], targets: [target])
        let gradient = MLAAttention.outputErrorGradient(w, windows: windows, index: 0, causalBlock: causalBlock)
        let matrices: [(String, WritableKeyPath<MLALayerWeights, [Float]>, [Float])] = [
            ("kvA", \.kvA, gradient.kvA), ("kvB", \.kvB, gradient.kvB), ("kRope", \.kRope, gradient.kRope),
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

    /// The refinement's held-out score: E on a prepared window, in causal blocks, against the float64
    /// reference forward on the same window.
    @Test("the prepared window's output error matches the float64 forward", arguments: specs, [6, 4])
    func outputErrorMatchesFloat64(spec: MLASpec, causalBlock: Int) throws {
        let tokens = 6, w = spec.weights(seed: 5)
        try w.validate()
        var g = SplitMix64(seed: 23)
        let x = g.floats(tokens * spec.d, scale: 1), target = g.floats(tokens * spec.d, scale: 0.5)
        let expected = zip(referenceMLA(w, x: x, tokens: tokens, positions: Array(0..<tokens)), target)
            .reduce(0.0) { $0 + ($1.0 - Double($1.1)) * ($1.0 - Double($1.1)) }
        let windows = try MLAAttention.OutputErrorWindows(w, inputs: [x, []], targets: [target, []])
        let heads = windows.queryWindows.heads(w, index: 0, causalBlock: causalBlock)
        let error = MLAAttention.outputError(w, heads: heads, windows: windows, index: 0)
        #expect(abs(error - expected) <= 1e-5 * expected, "\(error) against \(expected)")
        #expect(MLAAttention.outputError(w, heads: windows.queryWindows.heads(w, index: 1), windows: windows, index: 1) == 0)
    }

    /// The windows the o_proj refit and the refinement share (`QueryWindows`): their head outputs are
    /// `headOutputs`', the error read from them is `outputError`'s, and preparing them on two workers
    /// gives the gradient of one, all to float rounding; windows span several causal blocks (and one is
    /// empty). Not bit for bit: with 2 workers each GEMM runs on one BLAS thread instead of two, and some
    /// OpenBLAS kernels (Prescott's, for one) then sum some entries in another order.
    @Test("prepared windows give headOutputs' heads, outputError's error and the gradient to float rounding", arguments: specs)
    func preparedWindowsMatchTheDirectPaths(spec: MLASpec) throws {
        let w = spec.weights(seed: 9)
        try w.validate()
        var g = SplitMix64(seed: 29)
        let lengths = [300, 130, 7, 0]
        let inputs = lengths.map { g.floats($0 * spec.d, scale: 1) }, targets = lengths.map { g.floats($0 * spec.d, scale: 0.5) }
        let windows = try MLAAttention.QueryWindows(w, inputs: inputs, workers: 2)
        let prepared = try MLAAttention.OutputErrorWindows(w, windows: windows, targets: targets, workers: 2)
        let serial = try MLAAttention.OutputErrorWindows(w, inputs: inputs, targets: targets)
        // ‖a − b‖ ≤ tolerance·‖b‖ (an empty window's zero gradient must come back zero).
        func close(_ a: [Float], _ b: [Float], _ tolerance: Double) -> Bool {
            a.count == b.count && (b.allSatisfy { $0 == 0 } ? a.allSatisfy { $0 == 0 } : relativeError(a, b.map(Double.init)) <= tolerance)
        }
        for (i, t) in lengths.enumerated() {
            let heads = windows.heads(w, index: i), direct = try MLAAttention.headOutputs(w, x: inputs[i], tokens: t)
            #expect(close(heads, direct, 1e-6), "window \(i): heads differ from headOutputs")
            let error = MLAAttention.outputError(w, heads: direct, windows: prepared, index: i)
            let preparedError = MLAAttention.outputError(w, heads: heads, windows: prepared, index: i)
            #expect((error > 0) == (t > 0) && abs(preparedError - error) <= 1e-6 * error, "window \(i): \(preparedError) against \(error)")
            let (a, b) = (MLAAttention.outputErrorGradient(w, windows: prepared, index: i), MLAAttention.outputErrorGradient(w, windows: serial, index: i))
            #expect(close(a.kvA, b.kvA, 1e-5) && close(a.kvB, b.kvB, 1e-5) && close(a.kRope, b.kRope, 1e-5),
                    "window \(i): gradient differs with the windows prepared on two workers")
        }
    }

    @Test("the gradient vanishes when the target is the layer's own output")
    func vanishesAtItsOwnOutput() throws {
        let spec = Self.specs[1], tokens = 6, w = spec.weights(seed: 8)
        var g = SplitMix64(seed: 3)
        let x = g.floats(tokens * spec.d, scale: 1)
        let own = try MLAAttention.naive(w, x: x, tokens: tokens, positions: Array(0..<tokens))
        func largest(target: [Float]) throws -> Float {
            let gradient = MLAAttention.outputErrorGradient(w, windows: try MLAAttention.OutputErrorWindows(w, inputs: [x], targets: [target]), index: 0)
            return (gradient.kvA + gradient.kvB + gradient.kRope).map(abs).max() ?? 0
        }
        // Against the gradient's size for a target half the output: float rounding only.
        let atOwn = try largest(target: own), atHalf = try largest(target: own.map { $0 / 2 })
        #expect(atHalf > 0 && atOwn < 1e-5 * atHalf, "largest gradient entry \(atOwn) at the layer's own output, \(atHalf) at half of it")
    }
}
