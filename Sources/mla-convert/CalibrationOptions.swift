import ArgumentParser
import MLAConvert

/// The calibration text: files, or the default mix of the sample data's plays, docs and code.
struct CalibrationTextOptions: ParsableArguments {
    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Calibration text files (default: the sample data's mix of plays, docs and code, --calib-mix).",
                               discussion: """
                               The default text is read from the folders corpus/ (Shakespeare without Hamlet), docs/ (Docutils \
                               documentation) and code/ (Docutils Python sources) of the first of $MLA_CACHE, \
                               $XDG_CACHE_HOME/mla-convert (default ~/.cache/mla-convert) and ./.cache that holds them all; \
                               fixtures/fetch-sample-data fetches them (docs/samples.md).
                               """))
    var calib: [String] = []

    @Option(help: ArgumentHelp("Shares of the default text's domains as name=weight pairs (default: \(CalibrationMix.standard.spec)).",
                               discussion: "Windows are taken from the domains in proportion to the weights, in the same order for any --calib-tokens; a domain not named is left out (plays=1: Shakespeare only)."))
    var calibMix: String?

    @Option(help: "Calibration tokens in all.")
    var calibTokens: Int = 8192

    @Option(help: "Calibration window length in tokens.")
    var calibWindow: Int = 512

    @Option(help: ArgumentHelp("Calibration windows run at once, each on one BLAS thread (default: one per core).",
                               discussion: "Measured faster than one window at a time on multithreaded BLAS (docs/performance.md); each worker holds its own statistics (layers × hidden² doubles)."))
    var calibWorkers: Int?

    /// Refuses --calib-mix with files or a malformed mix, and counts out of range (`CalibrationText.validate`).
    func validate() throws {
        if calibMix != nil, !calib.isEmpty {
            throw ValidationError("--calib-mix mixes the default text: it cannot be combined with --calib")
        }
        try asUsageError { _ = try mix; try text.validate() }
    }

    /// The default text's shares (`--calib-mix`, else the standard mix).
    private var mix: CalibrationMix { get throws { try calibMix.map(CalibrationMix.init(parsing:)) ?? .standard } }

    /// The calibration text the options name (the default mix when no file is given).
    var text: CalibrationText {
        CalibrationText(files: calib, mix: (try? mix) ?? .standard, tokens: calibTokens, window: calibWindow, workers: calibWorkers)
    }
}

/// Where a conversion's activation statistics come from: saved statistics, calibration text
/// (`CalibrationTextOptions`), or none (weights only).
struct CalibrationOptions: ParsableArguments {
    @OptionGroup var textOptions: CalibrationTextOptions

    @Option(help: "Saved statistics from 'mla-convert calibrate' (skips the calibration pass).")
    var calibStats: String?

    @Flag(help: "Weights only: factor the weights without activation statistics (C = I).")
    var noCalib = false

    /// Refuses --no-calib with a calibration source or a mix.
    func validate() throws {
        if noCalib, calibStats != nil || !textOptions.calib.isEmpty {
            throw ValidationError("--no-calib cannot be combined with --calib or --calib-stats")
        }
        if noCalib, textOptions.calibMix != nil {
            throw ValidationError("--calib-mix mixes the default text: it cannot be combined with --no-calib")
        }
    }

    /// Where the conversion's statistics come from; saved statistics keep the text for held-out windows.
    var source: CalibrationSource {
        if noCalib { return .none }
        let text = textOptions.text
        return calibStats.map { .statistics(path: $0, heldOut: text) } ?? .text(text)
    }
}
