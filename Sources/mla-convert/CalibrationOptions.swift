import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLARuntime
import MLATensor

/// Where the activation statistics of a conversion come from: saved statistics, calibration text
/// (default: the sample corpus without Hamlet), or none (weights only).
struct CalibrationOptions: ParsableArguments {
    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Calibration text files (default: the sample corpus's plays without Hamlet).",
                               discussion: """
                               The sample corpus is found in $MLA_CACHE/corpus, $XDG_CACHE_HOME/mla-convert/corpus \
                               (default ~/.cache/mla-convert/corpus) or ./.cache/corpus, first found (docs/sample-data.md).
                               """))
    var calib: [String] = []

    @Option(help: "Calibration tokens in all.")
    var calibTokens: Int = 8192

    @Option(help: "Calibration window length in tokens.")
    var calibWindow: Int = 512

    @Option(help: ArgumentHelp("Calibration windows run at once, each on one BLAS thread (default: one per core).",
                               discussion: "Measured faster than one window at a time on multithreaded BLAS (docs/performance.md); each worker holds its own statistics (layers × hidden² doubles)."))
    var calibWorkers: Int?

    @Option(help: "Saved statistics from 'mla-convert calibrate' (skips the calibration pass).")
    var calibStats: String?

    @Flag(help: "Weights only: factor the weights without activation statistics (C = I).")
    var noCalib = false

    /// The files and folders this calibration reads (an output must not overwrite or hold them).
    var inputs: [String] {
        if noCalib { return [] }
        if let calibStats { return [calibStats] }
        return calib.isEmpty ? ((try? Self.defaultCorpusDirectory()).map { [$0] } ?? []) : calib
    }

    func validate() throws {
        guard calibTokens > 0 else { throw ValidationError("--calib-tokens must be positive") }
        guard calibWindow >= 1 else { throw ValidationError("--calib-window must be positive") }
        if let calibWorkers, calibWorkers < 1 { throw ValidationError("--calib-workers must be at least 1") }
        if noCalib, calibStats != nil || !calib.isEmpty {
            throw ValidationError("--no-calib cannot be combined with --calib or --calib-stats")
        }
    }

    /// Whether calibration text is run through the model (neither --no-calib nor --calib-stats).
    var runsText: Bool { !noCalib && calibStats == nil }

    /// The calibration windows of `checkpoint`'s tokenized calibration text (`--calib-tokens` in all).
    func windows(for checkpoint: Checkpoint) throws -> [[Int]] { try textWindows(for: checkpoint, tokens: calibTokens).1 }

    /// A short description for summaries and provenance.
    var description: String {
        if noCalib { return "none (weights only)" }
        if let calibStats { return "statistics \(calibStats)" }
        return "\(calibTokens) tokens of " + (calib.isEmpty ? "the sample corpus (without Hamlet)" : calib.joined(separator: ", "))
    }

    /// The statistics for `checkpoint`: loaded, collected (with progress), or nil for weights only.
    func statistics(for checkpoint: Checkpoint, label: String = "calibrate") throws -> CalibrationStatistics? {
        if noCalib { return nil }
        let c = checkpoint.config
        if let calibStats { return try CalibrationStatistics(path: calibStats, numLayers: c.numLayers, hiddenSize: c.hiddenSize) }
        let (files, windows) = try textWindows(for: checkpoint, tokens: calibTokens)
        let decoder = try DecoderModel(config: c, store: checkpoint.store)
        let progress = Progress(total: windows.count, label: label)
        let stats = try collectCalibration(
            model: decoder, windows: windows, workers: calibWorkers ?? ProcessInfo.processInfo.activeProcessorCount,
            tags: ["model": checkpoint.path, "text": files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ","),
                   "windows": String(windows.count), "window": String(calibWindow)]) { done, _ in progress.advance(to: done) }
        progress.finish()
        return stats
    }

    /// Windows of the calibration text that the statistics did not use (the next `count` in the
    /// round-robin order), for choices measured on held-out text.
    func heldOutWindows(for checkpoint: Checkpoint, count: Int) throws -> [[Int]] {
        let (_, windows) = try textWindows(for: checkpoint, tokens: calibTokens + count * calibWindow)
        let calibrated = (calibTokens + calibWindow - 1) / calibWindow
        guard windows.count > calibrated else { throw ValidationError("the calibration text holds no complete window of \(calibWindow) tokens beyond the calibration's") }
        return Array(windows[calibrated...].prefix(count))
    }

    /// The calibration files and their round-robin windows covering `tokens` tokens.
    private func textWindows(for checkpoint: Checkpoint, tokens: Int) throws -> ([String], [[Int]]) {
        let files = try calib.isEmpty ? CalibrationCorpus.defaultFiles(in: try Self.defaultCorpusDirectory()) : calib
        let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
        // One file per worker at a time (the tokenizer is thread-safe); streams stay in file order.
        let streams = try parallelMap(files.count, workers: ProcessInfo.processInfo.activeProcessorCount, oneBLASThreadEach: false) { i in
            tokenizer.encode(try InputFile.readText(files[i]))
        }
        let windows = CalibrationCorpus.windows(streams: streams, window: calibWindow, totalTokens: tokens, skip: calib.isEmpty ? 256 : 0)
        guard !windows.isEmpty else { throw ValidationError("the calibration text holds no complete window of \(calibWindow) tokens") }
        return (files, windows)
    }

    /// The sample corpus: `corpus` in the first sample-data cache that has it (`SampleDataCache`:
    /// `$MLA_CACHE`, then `$XDG_CACHE_HOME/mla-convert` or `~/.cache/mla-convert`, then `./.cache`).
    static func defaultCorpusDirectory() throws -> String {
        guard let dir = SampleDataCache.locate(SampleDataCache.corpus) else {
            throw ValidationError("no calibration text in \(SampleDataCache.searched(SampleDataCache.corpus)): pass --calib FILES, "
                                  + "--calib-stats FILE or --no-calib, or fetch the sample corpus (docs/sample-data.md)")
        }
        return dir
    }
}

