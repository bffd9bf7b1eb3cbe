import Foundation
import MLACheckpoint
import MLALinalg
import MLARuntime

/// Which hidden states each layer is calibrated on (docs/method.md §6.a).
public enum CalibrationOrder: String, Sendable, CaseIterable {
    /// The source model's: every layer sees the inputs the source gives it.
    case parallel
    /// The model's whose earlier layers are already converted: each layer sees the inputs it will get.
    case sequential
}

/// Converts the layers in order while running the calibration tokens through them (docs/method.md
/// §6.a): each layer is factorized under the second moment of its attention input on the current
/// states, its o_proj optionally refit (`OutputRefit`) so that its attention output matches the source
/// layer's on those same inputs, optionally refined through the softmax (`AttentionRefinement`), and the
/// states then advance through the source layer (`.parallel`)
/// or the converted one (`.sequential`, error-aware calibration: the errors of earlier layers are in
/// the inputs a layer is fitted on).
///
public final class CalibratedConversion: @unchecked Sendable {
    // @unchecked: every mutable member is used under `lock` only.
    public let conversion: ModelConversion
    /// Ranks per layer.
    public let ranks: [Int]
    /// Whether o_proj is refit after the factorization.
    public let refitOutput: Bool
    /// Which states the layers are calibrated on.
    public let order: CalibrationOrder
    /// Adam steps after the closed form (and the refit), or nil.
    public let refinement: AttentionRefinement?
    private let source: any LayerwiseModel
    /// Calibration windows, as sequence lengths, grouped into chunks run through a layer at once.
    private let chunks: [Chunk]
    private let tokens: Int
    private let workers: Int
    private let lock = NSLock()
    /// The residual stream on the calibration tokens before layer `next` (source or converted model's, `order`), [tokens × d].
    private var residual: [Float]
    private var next = 0
    /// Layers converted ahead of the one asked for (when asked out of order).
    private var ahead: [Int: (MLALayerWeights, LayerConversionReport)] = [:]
    /// Called with the number of layers converted after each one, on the converting thread.
    private let converted: @Sendable (Int) -> Void

    /// Rows of one chunk of whole windows: at most `chunkTokens` rows (or one window).
    private struct Chunk {
        let rows: Range<Int>
        let sequences: [Int]
        /// Index of its first window among all windows.
        let firstWindow: Int
    }

    /// Tokens run through a layer at once: at most 4096, and few enough that each of the chunk's
    /// activations (tokens × the wider of the hidden and intermediate sizes, in floats) stays under
    /// the largest buffer the heap reuses (`AllocatorTuning`). 4096 tokens for the sample model (an
    /// MLP activation of 24 MiB); 1024 for a Llama-3-8B shape, whose 4096 tokens' activations (224 MiB
    /// each) were mapped afresh and page-faulted in for every chunk of every layer.
    public static func chunkTokens(_ config: ModelConfig) -> Int {
        let widest = max(config.hiddenSize, config.intermediateSize, 1) * MemoryLayout<Float>.size
        return max(1, min(4096, (AllocatorTuning.largestReusedBuffer - 1) / widest))
    }

    /// - `conversion`: the plan (its `statistics` are not used).
    /// - `source`: the source model, read a layer at a time (e.g. `StreamedModel`).
    /// - `windows`: the calibration token windows, each run from position 0.
    /// - `workers`: windows attended at once, each on one BLAS thread.
    /// - `chunkTokens`: tokens run through a layer at once (default `chunkTokens(config)`); whole windows
    ///   are grouped up to it. It changes nothing but the rounding of the moment's sums when a chunk is
    ///   not a whole number of `ProductSums.blockRows`.
    /// - `converted`: gets the number of layers converted after each one (progress: a writer may ask for
    ///   the layers in another order, e.g. 0, 1, 10, 11, …, and then takes several at once).
    public init(conversion: ModelConversion, source: any LayerwiseModel, windows: [[Int]], ranks: [Int], order: CalibrationOrder,
                refitOutput: Bool, refinement: AttentionRefinement? = nil, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                chunkTokens: Int? = nil, converted: @escaping @Sendable (Int) -> Void = { _ in }) throws {
        precondition(ranks.count == conversion.config.numLayers, "CalibratedConversion: one rank per layer")
        self.conversion = conversion
        self.source = source
        self.ranks = ranks
        self.refitOutput = refitOutput
        self.refinement = refinement
        self.order = order
        self.workers = max(1, workers)
        self.converted = converted
        var chunks: [Chunk] = [], sequences: [Int] = []
        func close() {
            let first = chunks.last?.rows.upperBound ?? 0, firstWindow = chunks.last.map { $0.firstWindow + $0.sequences.count } ?? 0
            chunks.append(Chunk(rows: first..<(first + sequences.reduce(0, +)), sequences: sequences, firstWindow: firstWindow))
            sequences = []
        }
        let chunkTokens = chunkTokens ?? Self.chunkTokens(conversion.config)
        for window in windows where !window.isEmpty {
            if !sequences.isEmpty, sequences.reduce(0, +) + window.count > chunkTokens { close() }
            sequences.append(window.count)
        }
        if !sequences.isEmpty { close() }
        self.chunks = chunks
        tokens = chunks.last?.rows.upperBound ?? 0
        guard tokens > 0 else { throw RuntimeError.emptyInput("the calibration text") }
        residual = try source.embed(windows.flatMap { $0 })
    }

    /// Layer `l` converted, with its report. Layers are converted in order: asking for a later layer
    /// first converts the ones before it, which are kept until asked for. Each layer is handed out once.
    public func layer(_ l: Int) throws -> (MLALayerWeights, LayerConversionReport) {
        lock.lock()
        defer { lock.unlock() }
        while next <= l {
            ahead[next] = try convertNext()
            next += 1
            converted(next)
        }
        guard let result = ahead.removeValue(forKey: l) else { preconditionFailure("CalibratedConversion: layer \(l) asked for twice") }
        return result
    }

    /// Converts layer `next` on the current states, refits it, and advances the states through it.
    private func convertNext() throws -> (MLALayerWeights, LayerConversionReport) {
        let l = next, c = conversion.config, d = c.hiddenSize
        let (moment, inputs, sourceOutputs) = try sourceLayerOnWindows(l)
        var (weights, report) = try conversion.layer(l, moment: moment, upToRank: ranks[l]).weights(rank: ranks[l])
        let stages = CalibratedStages(refit: refitOutput ? .crossValidated : nil, measuringRefitErrors: true, refinement: refinement, workers: workers)
        let heads = try stages.apply(to: &weights, report: &report, inputs: inputs, targets: sourceOutputs, returningHeads: order == .sequential)
        try weights.validate()
        if l + 1 < c.numLayers {
            let layer = try source.layer(l)
            for chunk in chunks {
                var x = Array(residual[(chunk.rows.lowerBound * d)..<(chunk.rows.upperBound * d)])
                let windows = chunk.firstWindow..<(chunk.firstWindow + chunk.sequences.count)
                let a = order == .sequential
                    ? MLAAttention.output(weights, heads: windows.flatMap { heads[$0] }, tokens: chunk.rows.count)
                    : windows.flatMap { sourceOutputs[$0] }
                layer.weights.forward(&x, rows: chunk.rows.count, eps: c.rmsNormEps) { _ in a }
                residual.replaceSubrange((chunk.rows.lowerBound * d)..<(chunk.rows.upperBound * d), with: x)
            }
        } else {
            residual = []
        }
        return (weights, report)
    }

    /// What the stages need of source layer `l` on the current states: the second moment E[x xᵀ]
    /// [d × d] of its attention input x (the input norm of the states), and per window (the refit's
    /// folds are whole windows, so its cross-validation scores unseen text) the attention inputs (the
    /// stages' and, through the converted heads, the sequential states') and the source attention's
    /// outputs (the stages' target, and the parallel states' next step). Each chunk is normed once for
    /// all three. The layer is read again for the advance rather than held while the stages run, so
    /// their buffers do not add to its F32 weights (870 MB at Llama-3-8B's shape).
    private func sourceLayerOnWindows(_ l: Int) throws -> (moment: Matrix<Double>, inputs: [[Float]], outputs: [[Float]]) {
        let layer = try source.layer(l), d = conversion.config.hiddenSize
        let fits = refitOutput || refinement != nil, needsSource = fits || order == .parallel
        var moment = [Double](repeating: 0, count: d * d), outputs: [[Float]] = [], inputs: [[Float]] = []
        for chunk in chunks {
            let h = normed(chunk, layer)
            ProductSums.addGram(&moment, x: h, rows: chunk.rows.count, n: d)
            if needsSource { outputs += try perWindow(h, chunk) { x, t in try layer.attention.forward(x, sequences: [t]) } }
            if fits || order == .sequential { inputs += try perWindow(h, chunk) { x, _ in x } }
        }
        mirrorUpperTriangle(&moment, n: d)
        let scale = 1 / Double(tokens)
        for i in 0..<moment.count { moment[i] *= scale }
        return (Matrix(rows: d, cols: d, values: moment), inputs, outputs)
    }

    /// The layer's attention input on `chunk`'s rows, [rows × d].
    private func normed(_ chunk: Chunk, _ layer: DecoderLayer) -> [Float] {
        let d = conversion.config.hiddenSize
        return Kernels.rmsNorm(Array(residual[(chunk.rows.lowerBound * d)..<(chunk.rows.upperBound * d)]), tokens: chunk.rows.count,
                               weight: layer.weights.inputNorm, eps: conversion.config.rmsNormEps)
    }

    /// `attend(x, t)` of each window of `chunk` (x its rows of `h` [rows × d]), on `workers` threads, in order.
    private func perWindow(_ h: [Float], _ chunk: Chunk, _ attend: @escaping @Sendable ([Float], Int) throws -> [Float]) throws -> [[Float]] {
        let d = conversion.config.hiddenSize, sequences = chunk.sequences
        let starts = sequences.indices.map { sequences[..<$0].reduce(0, +) }
        return try parallelMap(sequences.count, workers: workers) { i in
            try attend(Array(h[(starts[i] * d)..<((starts[i] + sequences[i]) * d)]), sequences[i])
        }
    }
}
