import Foundation

/// Independent windows of token ids run through a model one layer at a time (layer-major): the
/// residual stream of every window is kept, [T_w × d] each (32 MB per 2,048 tokens at d = 4096), so a
/// `StreamedModel` needs only the current layer's weights while every window passes through it.
public struct WindowStates: Sendable {
    public let windows: [[Int]]
    public let hiddenSize: Int
    /// Per window its residual stream [T_w × d].
    public private(set) var states: [[Float]]

    /// The embeddings of each window.
    public init(model: some LayerwiseModel, windows: [[Int]]) throws {
        self.windows = windows
        hiddenSize = model.config.hiddenSize
        states = try windows.map { try model.embed($0) }
    }

    /// Runs every window through `layer`, up to `workers` windows at once (see `inParallel`).
    /// `attentionOutput(window, x, output)` sees each window's attention input (after the input norm)
    /// and output, [T_w × d] each, on the worker running that window; a non-nil result replaces the
    /// output.
    public mutating func advance(through layer: DecoderLayer, eps: Double, workers: Int,
                                 attentionOutput: (@Sendable (Int, [Float], [Float]) throws -> [Float]?)? = nil) throws {
        let windows = windows
        try states.withUnsafeMutableBufferPointer { buffer in
            // Each iteration touches only its own window's slot.
            nonisolated(unsafe) let slots = buffer.baseAddress!
            try inParallel(windows.count, workers: workers) { w in
                try layer.weights.forward(&slots[w], rows: windows[w].count, eps: eps) { x in
                    let output = try layer.attention.forward(x, tokens: windows[w].count)
                    return try attentionOutput?(w, x, output) ?? output
                }
            }
        }
    }

    /// Runs every window through `layer` as `advance` does and returns, in window order, the non-nil
    /// values of `capture(window, attention input, attention output)` (e.g. the inputs of some windows).
    public mutating func advance<Value>(through layer: DecoderLayer, eps: Double, workers: Int,
                                        capturing capture: @escaping @Sendable (Int, [Float], [Float]) -> Value?) throws -> [Value] {
        let captured = PerWindow<Value>(windows: windows.count)
        try advance(through: layer, eps: eps, workers: workers) { w, x, output in
            if let value = capture(w, x, output) { captured.set(w, value) }
            return nil
        }
        return captured.take()
    }

    /// The final-normed states of all windows stacked by rows, [Σ T_w × d].
    public func normed(finalNorm: [Float], eps: Double) -> [Float] {
        let stacked = states.flatMap { $0 }
        return Kernels.rmsNorm(stacked, tokens: stacked.count / max(hiddenSize, 1), weight: finalNorm, eps: eps)
    }
}

/// One value per window, set from the workers of `WindowStates.advance` and taken once the layer is done.
private final class PerWindow<Value>: @unchecked Sendable {
    // @unchecked: `values` is read and written under `lock` only.
    private let lock = NSLock()
    private var values: [Value?]

    init(windows: Int) { values = Array(repeating: nil, count: windows) }

    func set(_ window: Int, _ value: Value) {
        lock.lock()
        defer { lock.unlock() }
        values[window] = value
    }

    /// The values set, in window order (a window not set is left out).
    func take() -> [Value] {
        lock.lock()
        defer { lock.unlock() }
        return values.compactMap { $0 }
    }
}
