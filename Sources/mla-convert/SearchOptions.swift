import ArgumentParser
import MLAConvert

/// How the automatic choice of the rope plan and rank allocation is measured (`ConversionPlan.searchTokens`).
struct SearchOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Held-out calibration tokens each automatic candidate is scored on: this many tokens' worth of the calibration windows after the ones the statistics used (default: one whole window, --calib-window).",
        discussion: "Settings left at auto are chosen by converting each candidate at the budget's ranks and measuring its mean KL to the source on these tokens (docs/defaults.md). A whole window measures the rope error at every distance the calibration covers. When the conversion refines (the default), the best candidates of the rope/latent splits are scored again after \(ConversionSearch.finalistSteps) refinement steps (fewer if --refine-steps says so) on the first \(ConversionSearch.finalistWindows) calibration windows, and the refined best is kept: the refinement gains more on some splits than on others."))
    var searchTokens: Int?
}
