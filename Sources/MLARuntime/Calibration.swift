import CKernels
import Foundation
import MLACheckpoint
import MLALinalg
import MLATensor

/// Per-layer activation statistics for activation-aware conversion: the sum of x·xᵀ over calibration
/// tokens of each layer's attention input x (the output of the input RMSNorm, weight applied),
/// summed in F64 from F32 blocks of 256 tokens (`accumulate`), never storing activations. Memory while collecting:
/// L·d² doubles (30 × 576² × 8 B = 80 MB for the sample model) plus one window's activations, per
/// calibration worker (`collectCalibration`); loaded
/// statistics stay in their memory-mapped file and each layer is read when asked for (an 8B model's
/// are 4.3 GB).
public struct CalibrationStatistics: Sendable {
    public let numLayers: Int
    public let hiddenSize: Int
    /// Tokens accumulated (rows of x per layer).
    public private(set) var tokenCount: Int
    /// Per layer the upper triangle of Σ x xᵀ, [d × d] row-major, of statistics being collected
    /// (empty when loaded: `layerSum` reads the file).
    private var upperSums: [[Double]]
    private let file: SafetensorsFile?
    /// Provenance: model, text source, sha256 of the token ids, windows, ... (free-form strings).
    public var tags: [String: String]

    public init(numLayers: Int, hiddenSize: Int, tags: [String: String] = [:]) {
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        tokenCount = 0
        upperSums = Array(repeating: [Double](repeating: 0, count: hiddenSize * hiddenSize), count: numLayers)
        self.tags = tags
        file = nil
    }

    /// Adds Xᵀ·X for x [tokens × d] of `layer` (counted once per call, by layer 0).
    ///
    /// Summed in F64 from F32 blocks (`ProductSums.addGram`; about 3× faster than F64 `dsyrk` on the
    /// widened rows, and its rounding stays far below the sampling noise of the statistics, ≈ 1/√tokens).
    /// The lower triangle is filled in when the sum is read.
    public mutating func accumulate(layer: Int, x: [Float], tokens: Int) {
        ProductSums.addGram(&upperSums[layer], x: x, rows: tokens, n: hiddenSize)
        if layer == 0 { tokenCount += tokens }
    }

    /// Adds another collection's sums and token count (same model shape).
    mutating func add(_ other: CalibrationStatistics) {
        precondition(other.numLayers == numLayers && other.hiddenSize == hiddenSize && file == nil && other.file == nil)
        for layer in 0..<numLayers {
            upperSums[layer].withUnsafeMutableBufferPointer { sp in
                other.upperSums[layer].withUnsafeBufferPointer { op in
                    for k in 0..<sp.count { sp[k] += op[k] }
                }
            }
        }
        tokenCount += other.tokenCount
    }

    /// Σ x xᵀ of `layer`, [d × d] row-major (symmetric).
    public func layerSum(_ layer: Int) -> [Double] {
        guard let file else {
            var sum = upperSums[layer]
            mirrorUpperTriangle(&sum, n: hiddenSize)
            return sum
        }
        // Checked when the file was opened.
        let t = try! file.tensor(Self.momentName(layer))
        defer { t.releaseMappedPages() }
        return t.doubles()
    }

    /// C = E[x xᵀ] of `layer`, [d × d].
    public func secondMoment(layer: Int) -> Matrix<Double> {
        let scale = tokenCount > 0 ? 1 / Double(tokenCount) : 0
        var sum = layerSum(layer)
        for i in 0..<sum.count { sum[i] *= scale }
        return Matrix(rows: hiddenSize, cols: hiddenSize, values: sum)
    }

    static func momentName(_ layer: Int) -> String { "calibration.layers.\(layer).attention_input_second_moment_sum" }
    static let countName = "calibration.token_count"

    /// Writes the statistics as one safetensors file (F64 sums, an I64 token count, tags as metadata;
    /// `mla_convert.kind` marks it as this toolkit's output) to `output`, an `OutputPlan` of kind `.file`.
    public func save(to output: OutputPlan) throws {
        var entries = (0..<numLayers).map { TensorWriteEntry(name: Self.momentName($0), dtype: .f64, shape: [hiddenSize, hiddenSize]) }
        entries.append(TensorWriteEntry(name: Self.countName, dtype: .i64, shape: []))
        var metadata = tags
        metadata["mla_convert.kind"] = "calibration-statistics"
        metadata["num_layers"] = String(numLayers)
        metadata["hidden_size"] = String(hiddenSize)
        try output.write { tmp in
            try SafetensorsWriter.writeFile(tmp, entries: entries, metadata: metadata) { name in
                if name == Self.countName {
                    return Tensor(dtype: .i64, shape: [], storage: .owned(withUnsafeBytes(of: Int64(tokenCount).littleEndian) { Array($0) }))
                }
                let layer = Int(name.split(separator: ".")[2]) ?? 0
                return Tensor(doubles: layerSum(layer), shape: [hiddenSize, hiddenSize])
            }
        }
    }

    /// Reads statistics written by `save`; checks they fit a model of `numLayers` × `hiddenSize`.
    public init(path: String, numLayers: Int, hiddenSize: Int) throws {
        let file = try SafetensorsFile(path: path)
        guard file.metadata["mla_convert.kind"] == "calibration-statistics" else {
            throw CheckpointError.malformed(file: path, reason: "not a calibration statistics file (written by mla-convert calibrate)")
        }
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        tags = file.metadata
        upperSums = []
        self.file = file
        for layer in 0..<numLayers {
            let info = file.info(Self.momentName(layer))
            guard let info, info.dtype == .f64, info.shape == [hiddenSize, hiddenSize] else {
                throw CheckpointError.shapeMismatch(file: path, tensor: Self.momentName(layer), expected: [hiddenSize, hiddenSize], found: info?.shape ?? [])
            }
        }
        if file.names.count != numLayers + 1 {
            throw CheckpointError.malformed(file: path, reason: "holds statistics for \(file.names.count - 1) layers, the model has \(numLayers)")
        }
        let count = try file.tensor(Self.countName)
        guard count.dtype == .i64, count.shape == [] else {
            throw CheckpointError.malformedTensor(file: path, tensor: Self.countName, reason: "expected an I64 scalar")
        }
        tokenCount = Int(count.withRawBytes { $0.loadUnaligned(as: Int64.self) })
    }
}

/// Runs `windows` of token ids through `model` and accumulates the attention-input statistics of
/// every layer. The LM head is skipped (calibration does not need logits), and so is all of the last
/// layer but its input norm. Consecutive windows run as batches of up to `batchTokens` rows
/// (`DecoderModel.hiddenStates(batch:)`; one window per batch by default, which measured as fast as
/// larger batches on 2 cores). `workers` > 1 runs batches on that many threads at once, each with one
/// BLAS thread and its own sums (added at the end), instead of one batch at a time on multithreaded
/// BLAS: the element-wise work between GEMMs then runs in parallel too. `progress(windows done,
/// windows)` is called after each batch, from the worker that finished it.
public func collectCalibration(model: DecoderModel, windows: [[Int]], batchTokens: Int = 0, workers: Int = 1,
                               tags: [String: String] = [:],
                               progress: (@Sendable (Int, Int) -> Void)? = nil) throws -> CalibrationStatistics {
    let c = model.config
    var batches: [[[Int]]] = []
    for window in windows {
        if let last = batches.last, last.reduce(0, { $0 + $1.count }) + window.count <= batchTokens {
            batches[batches.count - 1].append(window)
        } else {
            batches.append([window])
        }
    }
    let threads = max(1, min(workers, batches.count))
    let run = CalibrationRun(model: model, batches: batches, windows: windows.count, progress: progress)
    // Worker w takes every threads-th batch into its own sums; they are added in worker order into
    // the first worker's (moved out of the array, so not copied): one set of sums per worker in all.
    var parts = try parallelMap(threads, workers: threads) { w in
        var part = CalibrationStatistics(numLayers: c.numLayers, hiddenSize: c.hiddenSize)
        for b in stride(from: w, to: run.batches.count, by: threads) { try run.accumulate(run.batches[b], into: &part) }
        return part
    }
    var stats = parts.removeFirst()
    while !parts.isEmpty { stats.add(parts.removeFirst()) }
    stats.tags = tags
    return stats
}

/// The same statistics as `collectCalibration`, collected layer-major (`WindowStates`): every window
/// passes through a layer before the next layer is read, so a `StreamedModel` needs one layer's F32
/// weights at a time instead of the whole model (the default conversion of the sample: 540 MB of source
/// weights fewer at its peak). Memory: the windows' residual streams and one layer's attention inputs,
/// [tokens × d] each, plus the sums. `workers` windows run at once, each on one BLAS thread;
/// `progress(layers done, layers)` is called after each layer. With `samples`, the first
/// `samples.windowTokens.count` windows' attention inputs and outputs at every layer are written to it
/// (those windows must have those lengths).
public func collectCalibration(streaming model: some LayerwiseModel, windows: [[Int]], workers: Int = 1, tags: [String: String] = [:],
                               samples: WindowSamples? = nil, progress: ((Int, Int) -> Void)? = nil) throws -> CalibrationStatistics {
    let c = model.config, last = c.numLayers - 1, sampled = samples?.windowTokens.count ?? 0
    precondition(samples.map { $0.layers == c.numLayers && $0.hiddenSize == c.hiddenSize && $0.windowTokens == windows.prefix(sampled).map(\.count) } ?? true,
                 "collectCalibration: the samples do not fit the model or the windows")
    var stats = CalibrationStatistics(numLayers: c.numLayers, hiddenSize: c.hiddenSize, tags: tags)
    var states = try WindowStates(model: model, windows: windows)
    for l in 0...last {
        let layer = try model.layer(l)
        let inputs: [[Float]]
        if l == last {
            // The last layer's attention input is all the statistics need of it; the sampled windows'
            // attention runs too, each window on one BLAS thread as in `advance`.
            inputs = zip(states.states, windows).map { Kernels.rmsNorm($0, tokens: $1.count, weight: layer.weights.inputNorm, eps: c.rmsNormEps) }
            let outputs = try parallelMap(sampled, workers: workers) { w in try layer.attention.forward(inputs[w], tokens: windows[w].count) }
            for w in 0..<sampled { try samples?.write(layer: l, window: w, input: inputs[w], output: outputs[w]) }
        } else {
            let captured = try states.advance(through: layer, eps: c.rmsNormEps, workers: workers,
                                              capturing: { w, x, output in (x, w < sampled ? output : nil) })
            inputs = captured.map(\.0)
            for w in 0..<sampled { try samples?.write(layer: l, window: w, input: captured[w].0, output: captured[w].1 ?? []) }
        }
        for (x, window) in zip(inputs, windows) { stats.accumulate(layer: l, x: x, tokens: window.count) }
        progress?(l + 1, c.numLayers)
    }
    return stats
}

/// The batches of one `collectCalibration` call, shared by its workers.
private final class CalibrationRun: @unchecked Sendable {
    // @unchecked: `done` is guarded by `lock`; everything else is immutable (the model is read-only).
    let model: DecoderModel
    let batches: [[[Int]]]
    let windows: Int
    let progress: (@Sendable (Int, Int) -> Void)?
    private let lock = NSLock()
    private var done = 0

    init(model: DecoderModel, batches: [[[Int]]], windows: Int, progress: (@Sendable (Int, Int) -> Void)?) {
        self.model = model
        self.batches = batches
        self.windows = windows
        self.progress = progress
    }

    /// Runs `batch` through every layer but the last and adds each layer's attention input to
    /// `stats`; the last layer's input is its input norm of the output.
    func accumulate(_ batch: [[Int]], into stats: inout CalibrationStatistics) throws {
        let c = model.config, last = c.numLayers - 1, rows = batch.reduce(0) { $0 + $1.count }
        // The hook escapes (LayerHooks stores it), so it fills a local moved in and out (no copy).
        var local = CalibrationStatistics(numLayers: 0, hiddenSize: 0)
        swap(&local, &stats)
        defer { swap(&local, &stats) }
        let hooks = LayerHooks(attentionInput: { layer, x, sequences in
            local.accumulate(layer: layer, x: x, tokens: sequences.reduce(0, +))
        }, stopAfterLayers: last)
        let h = try model.hiddenStates(batch: batch, hooks: hooks)
        local.accumulate(layer: last, x: Kernels.rmsNorm(h, tokens: rows, weight: model.layers[last].inputNorm, eps: c.rmsNormEps),
                         tokens: rows)
        lock.lock()
        done += batch.count
        let count = done
        lock.unlock()
        progress?(count, windows)
    }
}
