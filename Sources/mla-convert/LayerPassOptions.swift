import ArgumentParser
import MLAConvert

/// How the converters run the calibration text through the layers as they convert them
/// (`CalibratedConversion`, docs/method.md §6.a); `ConversionPlan.validate` refuses what needs calibration text without it.
struct LayerPassOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Calibration order: parallel (every layer calibrated on the source model's hidden states) or sequential (each layer on the states of the model whose earlier layers are already converted). Default: sequential with calibration text, parallel with --calib-stats.",
        discussion: "Sequential runs the source and the converted attention of every layer on the calibration tokens, so it needs calibration text (not --calib-stats or --no-calib) (docs/method.md §6.a)."))
    var calibOrder: CalibrationOrder?

    @Flag(inversion: .prefixedNo, help: "Refit each layer's o_proj by least squares so its attention output matches the source layer's on the calibration tokens (default: on with calibration text; --calib-stats and --no-calib cannot refit).")
    var outputRefit: Bool?
}
