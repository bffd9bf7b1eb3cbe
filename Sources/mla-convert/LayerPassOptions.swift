import ArgumentParser
import MLAConvert

/// How the converters run the calibration text through the layers as they convert them
/// (`CalibratedConversion`, docs/method.md §6.a); `ConversionPlan.validate` refuses what needs calibration text without it.
struct LayerPassOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Calibration order: parallel (every layer calibrated on the source model's hidden states) or sequential (each layer on the states of the model whose earlier layers are already converted). Default: sequential with calibration text, parallel with --calib-stats.",
        discussion: "Sequential runs the source and the converted attention of every layer on the calibration tokens, so it needs calibration text (not --calib-stats or --no-calib) (docs/method.md §6.a)."))
    var calibOrder: CalibrationOrder?

    @Flag(inversion: .prefixedNo, help: "Refit each layer's o_proj by least squares so its attention output matches the source layer's on the calibration tokens (default: on with calibration text of at least \(OutputRefit.minimumWindows) windows, since its ridge is cross-validated across windows; --calib-stats and --no-calib cannot refit).")
    var outputRefit: Bool?

    @Option(help: ArgumentHelp(
        "Adam steps per layer on the attention-output error through the real softmax, after the closed-form conversion and the o_proj refit; 0 turns it off (default: \(AttentionRefinement.defaultSteps) with calibration text of at least \(AttentionRefinement.minimumWindows) windows, none with --calib-stats or --no-calib).",
        discussion: "Moves the latent, the up-projections and the rope key; every fourth calibration window is held out, and the weights that score best on it are kept, so a layer never ends worse there than the closed form left it. So it needs at least \(AttentionRefinement.minimumWindows) windows: with fewer the default leaves it out and the summary says so, and an explicit --refine-steps is refused. Each step costs about three attention passes over \(AttentionRefinement.defaultWindowsPerStep) calibration windows per layer (docs/method.md §6.c)."))
    var refineSteps: Int?

    @Option(help: "Adam's step size in --refine-steps, relative to the root-mean-square value of each refined matrix.")
    var refineRate: Double = AttentionRefinement.defaultLearningRate
}
