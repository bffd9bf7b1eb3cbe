import Foundation
import MLACheckpoint
import MLALinalg
import MLATensor

/// Per-layer activation statistics for activation-aware conversion: the sum of x·xᵀ over calibration
/// tokens of each layer's attention input x (the output of the input RMSNorm, weight applied),
/// accumulated in F64 with one GEMM per window, never storing activations. Memory while collecting:
/// L·d² doubles (30 × 576² × 8 B = 80 MB for the sample model) plus one window's activations; loaded
/// statistics stay in their memory-mapped file and each layer is read when asked for (an 8B model's
/// are 4.3 GB).
public struct CalibrationStatistics: Sendable {
    public let numLayers: Int
    public let hiddenSize: Int
    /// Tokens accumulated (rows of x per layer).
    public private(set) var tokenCount: Int
    /// Per layer Σ x xᵀ, [d × d] row-major (symmetric), of statistics being collected (empty when
    /// loaded: `layerSum` reads the file).
    public private(set) var sums: [[Double]]
    private let file: SafetensorsFile?
    /// Provenance: model, text source, sha256 of the token ids, windows, ... (free-form strings).
    public var tags: [String: String]

    public init(numLayers: Int, hiddenSize: Int, tags: [String: String] = [:]) {
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        tokenCount = 0
        sums = Array(repeating: [Double](repeating: 0, count: hiddenSize * hiddenSize), count: numLayers)
        self.tags = tags
        file = nil
    }

    /// Adds Xᵀ·X for x [tokens × d] of `layer` (counted once per window, by layer 0).
    ///
    /// Products of F32 values are exact in F64 and only the sums round, as in a plain F64 sum of
    /// outer products. One `dsyrk` on the upper triangle (half the flops of the `dgemm` it
    /// replaced), then the triangle is mirrored so `sums` stays symmetric.
    public mutating func accumulate(layer: Int, x: [Float], tokens: Int) {
        let d = hiddenSize
        let xd = x.map(Double.init)
        xd.withUnsafeBufferPointer { xp in
            sums[layer].withUnsafeMutableBufferPointer { sp in
                Double.syrkTransposed(n: d, k: tokens, alpha: 1, a: xp.baseAddress!, lda: d, beta: 1, c: sp.baseAddress!, ldc: d)
                for i in 0..<d {
                    for j in (i + 1)..<d { sp[j * d + i] = sp[i * d + j] }
                }
            }
        }
        if layer == 0 { tokenCount += tokens }
    }

    /// Σ x xᵀ of `layer`, [d × d] row-major.
    public func layerSum(_ layer: Int) -> [Double] {
        guard let file else { return sums[layer] }
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

    /// Writes the statistics as one safetensors file (F64 sums, an I64 token count, tags as metadata).
    public func save(to path: String, force: Bool = false) throws {
        var entries = (0..<numLayers).map { TensorWriteEntry(name: Self.momentName($0), dtype: .f64, shape: [hiddenSize, hiddenSize]) }
        entries.append(TensorWriteEntry(name: Self.countName, dtype: .i64, shape: []))
        var metadata = tags
        metadata["mla_convert.kind"] = "calibration-statistics"
        metadata["num_layers"] = String(numLayers)
        metadata["hidden_size"] = String(hiddenSize)
        try AtomicOutput.write(to: path, directory: false, force: force) { tmp in
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
        sums = []
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
/// every layer. The LM head is skipped (calibration does not need logits).
public func collectCalibration(model: DecoderModel, windows: [[Int]], tags: [String: String] = [:],
                               progress: ((Int, Int) -> Void)? = nil) throws -> CalibrationStatistics {
    var stats = CalibrationStatistics(numLayers: model.config.numLayers, hiddenSize: model.config.hiddenSize, tags: tags)
    for (i, window) in windows.enumerated() {
        let hooks = LayerHooks(attentionInput: { layer, x, t in stats.accumulate(layer: layer, x: x, tokens: t) })
        _ = try model.hiddenStates(window, hooks: hooks)
        progress?(i + 1, windows.count)
    }
    return stats
}

/// The default calibration text: the sample corpus's plays other than Hamlet (evaluation text, in
/// either spelling) and the five poem files, in file-name order.
public enum CalibrationCorpus {
    public static let excluded: Set<String> = [
        "hamlet_gut.txt", "hamlet_gut_f.txt", "lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt",
        "phoenix_and_the_turtle_gut.txt", "rape_of_lucrece_gut.txt", "sonnets_gut.txt",
    ]

    /// The modern-spelling plays of `directory` (`*_gut.txt`) other than Hamlet, sorted by name.
    public static func defaultFiles(in directory: String) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return names.filter { $0.hasSuffix("_gut.txt") && !excluded.contains($0) }.sorted().map { directory + "/" + $0 }
    }

    /// Windows of `window` tokens from the token streams of several texts, sampled round-robin: the
    /// i-th window of each text (skipping its first `skip` tokens of front matter) in text order,
    /// then the (i+1)-th, until `totalTokens` are collected or the texts run out.
    public static func windows(streams: [[Int]], window: Int, totalTokens: Int, skip: Int = 256) -> [[Int]] {
        var out: [[Int]] = []
        var collected = 0
        var round = 0
        while collected < totalTokens {
            var any = false
            for s in streams {
                let start = skip + round * window
                guard start + window <= s.count else { continue }
                any = true
                let take = min(window, totalTokens - collected)
                out.append(Array(s[start..<(start + take)]))
                collected += take
                if collected >= totalTokens { break }
            }
            if !any { break }
            round += 1
        }
        return out
    }
}
