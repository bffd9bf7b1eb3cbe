import Foundation
import MLACheckpoint
import MLARuntime
import MLATensor

/// Calibration text and how it is cut: round-robin windows of `window` tokens over the files,
/// `tokens` in all (the default text is the sample corpus without Hamlet, docs/samples.md).
public struct CalibrationText: Sendable {
    /// Text files; empty: the sample corpus's plays without Hamlet, each play's first 256 tokens skipped.
    public var files: [String]
    /// Calibration tokens in all.
    public var tokens: Int
    /// Window length in tokens; each window runs from position 0.
    public var window: Int
    /// Windows run at once through the source model, each on one BLAS thread; nil: one per core.
    public var workers: Int?
    /// The files' token streams, tokenized once per model and files and shared by the copies of this
    /// text (a default conversion cuts its statistics, layer-pass and held-out windows from them).
    private let tokenized = TokenStreams()

    public init(files: [String] = [], tokens: Int = 8192, window: Int = 512, workers: Int? = nil) {
        self.files = files
        self.tokens = tokens
        self.window = window
        self.workers = workers
    }

    /// Refuses non-positive token, window and worker counts.
    public func validate() throws {
        guard tokens > 0 else { throw ConversionPlanError("--calib-tokens must be positive") }
        guard window >= 1 else { throw ConversionPlanError("--calib-window must be positive") }
        if let workers, workers < 1 { throw ConversionPlanError("--calib-workers must be at least 1") }
    }

    /// A short description for summaries and provenance.
    public var description: String {
        "\(tokens) tokens of " + (files.isEmpty ? "the sample corpus (without Hamlet)" : files.joined(separator: ", "))
    }

    /// The files and folders this text reads (the default corpus folder when found).
    public var inputs: [String] { files.isEmpty ? ((try? Self.defaultCorpusDirectory()).map { [$0] } ?? []) : files }

    /// The calibration windows of `checkpoint`'s tokenized text (`tokens` in all), as token ids.
    public func windows(for checkpoint: Checkpoint) throws -> [[Int]] { try textWindows(for: checkpoint, tokens: tokens).1 }

    /// Runs the text through `checkpoint` and returns each layer's attention-input second moment; the
    /// layers are reported as stage `label` of `observer`.
    public func statistics(for checkpoint: Checkpoint, observer: any ConversionObserver = SilentObserver(), label: String = "calibrate")
        throws -> CalibrationStatistics {
        let (files, windows) = try textWindows(for: checkpoint, tokens: tokens)
        observer.begin(label, total: checkpoint.config.numLayers)
        // Layer-major on the streamed source: one layer's F32 weights at a time, never the whole model.
        let stats = try collectCalibration(
            streaming: try StreamedModel(checkpoint), windows: windows, workers: workers ?? ProcessInfo.processInfo.activeProcessorCount,
            tags: ["model": checkpoint.path, "text": files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ","),
                   "windows": String(windows.count), "window": String(window)]) { done, _ in observer.advance(label, to: done) }
        observer.end(label)
        return stats
    }

    /// Windows of the text that the statistics did not use (the next `count` in the round-robin order),
    /// for choices measured on held-out text.
    public func heldOutWindows(for checkpoint: Checkpoint, count: Int) throws -> [[Int]] {
        let (_, windows) = try textWindows(for: checkpoint, tokens: tokens + count * window)
        let calibrated = (tokens + window - 1) / window
        guard windows.count > calibrated else {
            throw ConversionPlanError("the calibration text holds no complete window of \(window) tokens beyond the calibration's")
        }
        return Array(windows[calibrated...].prefix(count))
    }

    /// The held-out windows an automatic choice scores candidates on: whole windows after the
    /// statistics', cut to `searchTokens` tokens (nil: one window).
    func searchWindows(for checkpoint: Checkpoint, searchTokens: Int?) throws -> [[Int]] {
        let wanted = searchTokens ?? window
        let held = try heldOutWindows(for: checkpoint, count: max(1, (wanted + window - 1) / window))
        return Self.truncated(held, to: wanted)
    }

    /// `windows` cut to `tokens` tokens in all (the last one shortened; at least 2 tokens each).
    static func truncated(_ windows: [[Int]], to tokens: Int) -> [[Int]] {
        var left = tokens, out: [[Int]] = []
        for w in windows where left >= 2 {
            out.append(Array(w.prefix(left)))
            left -= min(left, w.count)
        }
        return out
    }

    /// The calibration files and their round-robin windows covering `tokens` tokens.
    private func textWindows(for checkpoint: Checkpoint, tokens: Int) throws -> ([String], [[Int]]) {
        let files = try self.files.isEmpty ? CalibrationCorpus.defaultFiles(in: try Self.defaultCorpusDirectory()) : self.files
        let streams = try tokenized.streams(key: [checkpoint.path] + files) {
            let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
            // One file per worker at a time (the tokenizer is thread-safe); streams stay in file order.
            return try parallelMap(files.count, workers: ProcessInfo.processInfo.activeProcessorCount, oneBLASThreadEach: false) { i in
                tokenizer.encode(try InputFile.readText(files[i]))
            }
        }
        let windows = CalibrationCorpus.windows(streams: streams, window: window, totalTokens: tokens, skip: self.files.isEmpty ? 256 : 0)
        guard !windows.isEmpty else { throw ConversionPlanError("the calibration text holds no complete window of \(window) tokens") }
        return (files, windows)
    }

    /// The sample corpus: `corpus` in the first sample-data cache that has it (`SampleDataCache`:
    /// `$MLA_CACHE`, then `$XDG_CACHE_HOME/mla-convert` or `~/.cache/mla-convert`, then `./.cache`).
    public static func defaultCorpusDirectory() throws -> String {
        guard let dir = SampleDataCache.locate(SampleDataCache.corpus) else {
            throw ConversionPlanError("no calibration text in \(SampleDataCache.searched(SampleDataCache.corpus)): pass --calib FILES, "
                                      + "--calib-stats FILE or --no-calib, or fetch the sample corpus (docs/samples.md)")
        }
        return dir
    }
}

/// Token streams of calibration files, made once per key (the model and the files).
private final class TokenStreams: @unchecked Sendable {
    // @unchecked: `made` is read and written under `lock` only.
    private let lock = NSLock()
    private var made: [[String]: [[Int]]] = [:]

    func streams(key: [String], _ make: () throws -> [[Int]]) rethrows -> [[Int]] {
        lock.lock()
        defer { lock.unlock() }
        if let streams = made[key] { return streams }
        let streams = try make()
        made[key] = streams
        return streams
    }
}

extension CalibrationSource {
    /// The files and folders this calibration reads (an output must not overwrite or hold them).
    public var inputs: [String] {
        switch self {
        case .none: return []
        case let .statistics(path, _): return [path]
        case let .text(text): return text.inputs
        }
    }

    /// The statistics for `checkpoint`: loaded, collected from the text (reported to `observer`), or nil
    /// for weights only.
    public func statistics(for checkpoint: Checkpoint, observer: any ConversionObserver) throws -> CalibrationStatistics? {
        let c = checkpoint.config
        switch self {
        case .none: return nil
        case let .statistics(path, _): return try CalibrationStatistics(path: path, numLayers: c.numLayers, hiddenSize: c.hiddenSize)
        case let .text(text): return try text.statistics(for: checkpoint, observer: observer)
        }
    }
}
