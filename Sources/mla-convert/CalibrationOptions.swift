import ArgumentParser
import MLAConvert

/// Where the activation statistics of a conversion come from: saved statistics, calibration text
/// (default: the sample corpus without Hamlet), or none (weights only).
struct CalibrationOptions: ParsableArguments {
    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Calibration text files (default: the sample corpus's plays without Hamlet).",
                               discussion: """
                               The sample corpus is found in $MLA_CACHE/corpus, $XDG_CACHE_HOME/mla-convert/corpus \
                               (default ~/.cache/mla-convert/corpus) or ./.cache/corpus, first found (docs/samples.md).
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

    /// Refuses --no-calib with a calibration source, and counts out of range (`CalibrationText.validate`).
    func validate() throws {
        if noCalib, calibStats != nil || !calib.isEmpty {
            throw ValidationError("--no-calib cannot be combined with --calib or --calib-stats")
        }
        try asUsageError { try text.validate() }
    }

    /// The calibration text the options name (the sample corpus when no file is given).
    var text: CalibrationText { CalibrationText(files: calib, tokens: calibTokens, window: calibWindow, workers: calibWorkers) }

    /// Where the conversion's statistics come from; saved statistics keep the text for held-out windows.
    var source: CalibrationSource {
        if noCalib { return .none }
        return calibStats.map { .statistics(path: $0, heldOut: text) } ?? .text(text)
    }
}
