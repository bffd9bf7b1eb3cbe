import Foundation
import MLALinalg

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

    /// The final-normed states of all windows stacked by rows, [Σ T_w × d].
    public func normed(finalNorm: [Float], eps: Double) -> [Float] {
        let stacked = states.flatMap { $0 }
        return Kernels.rmsNorm(stacked, tokens: stacked.count / max(hiddenSize, 1), weight: finalNorm, eps: eps)
    }
}

/// Calls `body(0..<count)` on up to `workers` threads. With more than one worker each runs one BLAS
/// thread (restored afterwards): on 2 cores two windows at once on one BLAS thread each beat one
/// window on two, since the element-wise work between GEMMs runs in parallel too (measured for
/// calibration, `docs/performance.md`). The first error thrown is rethrown after all finish.
public func inParallel(_ count: Int, workers: Int, _ body: @Sendable (Int) throws -> Void) throws {
    let threads = max(1, min(workers, count))
    if threads == 1 {
        for i in 0..<count { try body(i) }
        return
    }
    let previous = BLASThreads.current
    BLASThreads.set(1)
    defer { BLASThreads.set(previous) }
    let errors = ErrorSlot()
    let next = Counter()
    DispatchQueue.concurrentPerform(iterations: threads) { _ in
        while let i = next.take(below: count), !errors.isSet {
            do { try body(i) } catch { errors.set(error) }
        }
    }
    if let error = errors.error { throw error }
}

/// A shared index handed out once each (`inParallel`).
private final class Counter: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = 0

    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// The first error of parallel work (`inParallel`).
private final class ErrorSlot: @unchecked Sendable {
    // @unchecked: `stored` is guarded by `lock`.
    private let lock = NSLock()
    private var stored: (any Error)?

    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
    var isSet: Bool { error != nil }

    func set(_ error: any Error) {
        lock.lock()
        if stored == nil { stored = error }
        lock.unlock()
    }
}

/// One result slot per index for parallel work (`inParallel`), lock-protected.
public final class ParallelSlots<Element>: @unchecked Sendable {
    // @unchecked: `values` is guarded by `lock`.
    private let lock = NSLock()
    private var values: [Element?]

    public init(count: Int) { values = Array(repeating: nil, count: count) }

    public subscript(index: Int) -> Element? {
        get { lock.lock(); defer { lock.unlock() }; return values[index] }
        set { lock.lock(); values[index] = newValue; lock.unlock() }
    }

    /// The slots in index order (nil where nothing was stored).
    public var all: [Element?] { lock.lock(); defer { lock.unlock() }; return values }
}
