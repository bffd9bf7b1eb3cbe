import Foundation
import MLARuntime

/// Local refinement of a converted layer through its real softmax (docs/method.md §6.c): Adam steps on
/// the attention-output error Σ_t ‖y_t − target_t‖² over calibration windows, starting from the
/// closed-form layer (factorization, then the o_proj refit). The weights that make and read the cache
/// move: the latent (`kvA`), the up-projections (`kvB`) and the rope key (`kRope`). The query, o_proj
/// (already refit in closed form; stepping it too gained nothing measurable) and the biases stay, and so
/// does the DeepSeek-V3 layout.
///
/// Every fourth window (3, 7, …) is held out: the error on those windows is measured before the first
/// step, every `evaluationInterval` steps and after the last, and the weights that scored best are
/// kept, so the refinement never leaves a layer worse on text it did not step on than it found it. (Ending
/// a layer's steps at the first measurement that does not improve lost a third of the gain: many layers
/// get worse for a while before they get better, docs/method.md §6.c.)
/// The steps cycle through the other windows, `windowsPerStep` at a time, their gradients summed
/// (`MLAAttention.outputErrorGradient`).
public struct AttentionRefinement: Sendable {
    /// Adam steps per layer.
    public let steps: Int
    /// Adam's step size for each weight matrix, relative to that matrix's root-mean-square value.
    public let learningRate: Double
    /// Calibration windows whose gradients make one step.
    public let windowsPerStep: Int
    /// Steps between two held-out measurements.
    public static let evaluationInterval = 8
    /// Calibration windows a layer needs to be refined: every fourth is held out, so four give three to
    /// step on and one to check.
    public static let minimumWindows = 4

    /// The steps a conversion with calibration text takes unless `--refine-steps` says otherwise
    /// (docs/defaults.md: measured against 0, 16 and 64).
    public static let defaultSteps = 32
    /// The relative step size `--refine-rate` defaults to.
    public static let defaultLearningRate = 1e-2
    /// Windows per step: at equal work, twice the steps on half the windows did better than 4 per step,
    /// and two windows keep two cores busy (docs/method.md §6.c).
    public static let defaultWindowsPerStep = 2

    public init(steps: Int, learningRate: Double = defaultLearningRate, windowsPerStep: Int = defaultWindowsPerStep) {
        self.steps = steps
        self.learningRate = learningRate
        self.windowsPerStep = max(1, windowsPerStep)
    }

    /// Σ‖y − target‖² / Σ‖target − b‖² on the held-out windows, before the first step and for the
    /// weights kept, and the step the kept weights come from (0: the closed form was kept).
    public struct Result: Sendable {
        /// The closed form's held-out relative error.
        public let before: Double
        /// The kept weights' held-out relative error (≤ `before`).
        public let after: Double
        /// The step the kept weights come from; 0 when the closed form was kept.
        public let keptStep: Int
    }

    /// The step size of step `step` (1...steps) relative to `learningRate`: a linear warm-up over the first
    /// eighth of the steps (Adam's first steps move every weight by about the full step size, whatever its
    /// gradient), then constant.
    func schedule(_ step: Int) -> Double {
        min(1, Double(step) / Double(max(1, steps / 8)))
    }

    /// Refines `weights` (no latent norm) on `windows` (attention inputs [t_i × d], prepared for its
    /// query), whose source attention outputs are `targets[i]` [t_i × d]; each window is attended from
    /// position 0. `startHeads`, when given, are `weights`' per-head outputs on every window
    /// (`QueryWindows.heads`, e.g. the o_proj refit's inputs): the first held-out check reads them instead
    /// of running the windows again. Records the result and the stage in `report`, and returns the kept
    /// weights' per-head outputs on the held-out windows by window index (the checks computed them). With
    /// fewer than four windows there is nothing to hold out (or nothing to step on), and the layer is left
    /// as it is, with no result and no heads.
    @discardableResult
    public func apply(to weights: inout MLALayerWeights, report: inout LayerConversionReport, windows: MLAAttention.QueryWindows,
                      targets: [[Float]], startHeads: [[Float]]? = nil, workers: Int) throws -> [Int: [Float]] {
        let d = weights.hiddenSize, bias = weights.oBias
        let heldOut = targets.indices.filter { $0 % 4 == 3 }, training = targets.indices.filter { $0 % 4 != 3 }
        guard targets.count >= Self.minimumWindows, steps > 0 else { return [:] }
        precondition(startHeads == nil || startHeads?.count == targets.count, "AttentionRefinement: one start head output per window")
        let energy = { (windows: [Int]) -> Double in
            windows.reduce(0.0) { sum, i in
                let rows = targets[i].count / d
                return sum + (0..<(rows * d)).reduce(0.0) { s, e in
                    let y = Double(targets[i][e] - (bias?[e % d] ?? 0))
                    return s + y * y
                }
            }
        }
        let heldOutEnergy = max(energy(heldOut), .leastNormalMagnitude), trainingEnergy = max(energy(training), .leastNormalMagnitude)
        // Every window's targets are prepared once: the query and o_proj stay fixed.
        let prepared = try MLAAttention.OutputErrorWindows(weights, windows: windows, targets: targets, workers: workers)
        /// `w`'s held-out relative error and its per-head outputs on the held-out windows (taken from
        /// `heads` when given).
        func heldOutCheck(_ w: MLALayerWeights, heads: [[Float]]? = nil) throws -> (error: Double, heads: [Int: [Float]]) {
            let checked = try parallelMap(heldOut.count, workers: workers) { k in
                let i = heldOut[k], u = heads?[i] ?? windows.heads(w, index: i)
                return (MLAAttention.outputError(w, heads: u, windows: prepared, index: i), u)
            }
            return (checked.map(\.0).reduce(0, +) / heldOutEnergy, Dictionary(uniqueKeysWithValues: zip(heldOut, checked.map(\.1))))
        }
        let start = try heldOutCheck(weights, heads: startHeads)
        var best = (weights: weights, error: start.error, step: 0, heads: start.heads)
        var adam = Adam(weights, learningRate: learningRate)
        var current = weights
        for step in 1...steps {
            let batch = (0..<min(windowsPerStep, training.count)).map { training[((step - 1) * windowsPerStep + $0) % training.count] }
            var sum = MLAAttention.OutputErrorGradient(zeroFor: current)
            do {
                // The workers' copy of the weights ends with this scope, so that Adam's step below
                // changes them in place instead of copying them.
                let stepping = current
                let gradients = try parallelMap(batch.count, workers: workers) { k in
                    MLAAttention.outputErrorGradient(stepping, windows: prepared, index: batch[k])
                }
                for g in gradients { sum.add(g) }
            }
            adam.step(&current, gradient: sum, scale: Float(1 / trainingEnergy), rate: schedule(step))
            if step % Self.evaluationInterval == 0 || step == steps {
                let check = try heldOutCheck(current)
                if check.error < best.error { best = (current, check.error, step, check.heads) }
            }
        }
        weights = best.weights
        report.refinement = Result(before: start.error, after: best.error, keptStep: best.step)
        report.stages.append(.refinement)
        return best.heads
    }
}

/// Adam (Kingma & Ba) over the refined weight matrices, β₁ 0.9, β₂ 0.999, each matrix's step size its
/// initial RMS value times the relative learning rate.
private struct Adam {
    private var moments: [(first: [Float], second: [Float])]
    private let rates: [Float]
    private var count = 0
    private static let beta1: Float = 0.9, beta2: Float = 0.999

    /// The refined matrices of a layer, in one order: kvA, kvB, kRope.
    static var paths: [WritableKeyPath<MLALayerWeights, [Float]>] { [\.kvA, \.kvB, \.kRope] }
    static var gradientPaths: [WritableKeyPath<MLAAttention.OutputErrorGradient, [Float]>] { [\.kvA, \.kvB, \.kRope] }

    init(_ weights: MLALayerWeights, learningRate: Double) {
        moments = Self.paths.map { path in
            let n = weights[keyPath: path].count
            return ([Float](repeating: 0, count: n), [Float](repeating: 0, count: n))
        }
        rates = Self.paths.map { path in
            let w = weights[keyPath: path]
            let rms = (w.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(w.count, 1))).squareRoot()
            return Float(learningRate * rms)
        }
    }

    /// One step on `weights` along the gradient times `scale`, the step sizes times `rate`.
    mutating func step(_ weights: inout MLALayerWeights, gradient: MLAAttention.OutputErrorGradient, scale: Float, rate relative: Double) {
        count += 1
        let correction1 = 1 - pow(Self.beta1, Float(count)), correction2 = 1 - pow(Self.beta2, Float(count))
        for (k, path) in Self.paths.enumerated() {
            // The weight and its moments are taken out (left empty) while they change, so that they are
            // not copied (the weight still is when the kept best weights share it).
            var w = weights[keyPath: path]
            weights[keyPath: path] = []
            defer { weights[keyPath: path] = w }
            var (first, second) = moments[k]
            moments[k] = ([], [])
            defer { moments[k] = (first, second) }
            Kernels.adamStep(weights: &w, first: &first, second: &second, gradient: gradient[keyPath: Self.gradientPaths[k]], scale: scale,
                             beta1: Self.beta1, beta2: Self.beta2, correction1: correction1, correction2: correction2,
                             rate: rates[k] * Float(relative))
        }
    }
}
