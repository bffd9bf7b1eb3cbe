import Foundation
import MLACheckpoint

/// RoPE frequencies of a source model after its scaling (docs/formats.md "Hugging Face `config.json`"): θ_l radians per position
/// for pair l < headDim/2, pair l rotating coordinates (l, l + headDim/2) in the rotate-half layout.
public struct RopeFrequencies: Sendable, Equatable {
    /// θ_l, radians per position, l = 0 (fastest) ..< headDim/2.
    public let inverseFrequencies: [Double]
    /// Multiplier applied to cos and sin (YaRN's attention factor; 1 otherwise).
    public let attentionFactor: Double
    /// The tables last computed: every layer of a forward pass asks for the same positions.
    private let recent = RecentTables()

    public init(inverseFrequencies: [Double], attentionFactor: Double = 1) {
        self.inverseFrequencies = inverseFrequencies
        self.attentionFactor = attentionFactor
    }

    /// The table for `headDim` rotary dims with base `theta` under `scaling`; `maxPositions` is the
    /// model's context (YaRN's default original context).
    public init(headDim: Int, theta: Double, scaling: RopeScaling, maxPositions: Int) {
        let pairs = headDim / 2
        let base = (0..<pairs).map { pow(theta, -2.0 * Double($0) / Double(headDim)) }
        switch scaling {
        case .none:
            self.init(inverseFrequencies: base)
        case let .linear(factor):
            self.init(inverseFrequencies: base.map { $0 / factor })
        case let .llama3(factor, low, high, original):
            let o = Double(original)
            self.init(inverseFrequencies: base.map { f in
                let wavelength = 2 * Double.pi / f
                if wavelength < o / high { return f }
                if wavelength > o / low { return f / factor }
                let s = (o / wavelength - low) / (high - low)
                return (1 - s) * f / factor + s * f
            })
        case let .yarn(factor, original, betaFast, betaSlow, attentionFactor, mscale, mscaleAllDim, truncate):
            let orig = Double(original > 0 ? original : maxPositions)
            func correctionDim(_ beta: Double) -> Double {
                Double(headDim) * log(orig / (beta * 2 * Double.pi)) / (2 * log(theta))
            }
            var low = correctionDim(betaFast), high = correctionDim(betaSlow)
            if truncate { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0)
            high = min(high, Double(headDim - 1))
            if low == high { high += 0.001 }
            let freqs = base.enumerated().map { i, f -> Double in
                let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
                return ramp * f / factor + (1 - ramp) * f
            }
            func m(_ k: Double) -> Double { factor <= 1 ? 1 : 0.1 * k * log(factor) + 1 }
            let af: Double
            if let attentionFactor { af = attentionFactor }
            else if let mscale, let mscaleAllDim { af = m(mscale) / m(mscaleAllDim) }
            else { af = m(1) }
            self.init(inverseFrequencies: freqs, attentionFactor: af)
        }
    }

    /// The table of a source model.
    public init(config: ModelConfig) {
        self.init(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling,
                  maxPositions: config.maxPositions)
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.inverseFrequencies == b.inverseFrequencies && a.attentionFactor == b.attentionFactor
    }

    /// cos and sin tables `[positions × pairs]` (row-major), each times `attentionFactor`.
    public func tables(positions: some Collection<Int>) -> (cos: [Float], sin: [Float]) {
        let positions = Array(positions)
        if let hit = recent.tables(for: positions) { return hit }
        let pairs = inverseFrequencies.count
        var c = [Float](repeating: 0, count: positions.count * pairs)
        var s = c
        for (row, p) in positions.enumerated() {
            for l in 0..<pairs {
                let angle = Double(p) * inverseFrequencies[l]
                c[row * pairs + l] = Float(cos(angle) * attentionFactor)
                s[row * pairs + l] = Float(sin(angle) * attentionFactor)
            }
        }
        recent.store(positions: positions, cos: c, sin: s)
        return (c, s)
    }
}

/// The most recent tables of a `RopeFrequencies` and their positions, shared by its copies (which
/// have the same frequencies) and by threads.
private final class RecentTables: @unchecked Sendable {
    // @unchecked: `entry` is guarded by `lock`.
    private let lock = NSLock()
    private var entry: (positions: [Int], cos: [Float], sin: [Float])?

    func tables(for positions: [Int]) -> (cos: [Float], sin: [Float])? {
        lock.lock()
        defer { lock.unlock() }
        guard let entry, entry.positions == positions else { return nil }
        return (entry.cos, entry.sin)
    }

    func store(positions: [Int], cos: [Float], sin: [Float]) {
        lock.lock()
        entry = (positions, cos, sin)
        lock.unlock()
    }
}
