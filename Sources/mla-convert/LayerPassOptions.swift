import ArgumentParser
import MLACheckpoint
import MLAConvert

/// How the converters run the calibration text through the layers as they convert them
/// (`CalibratedConversion`, docs/method.md §6.a).
struct LayerPassOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Calibration order: parallel (every layer calibrated on the source model's hidden states) or sequential (each layer on the states of the model whose earlier layers are already converted). Default: sequential with calibration text, parallel with --calib-stats.",
        discussion: "Sequential runs the source and the converted attention of every layer on the calibration tokens, so it needs calibration text (not --calib-stats or --no-calib) (docs/method.md §6.a)."))
    var calibOrder: CalibrationOrder?

    @Flag(inversion: .prefixedNo, help: "Refit each layer's o_proj by least squares so its attention output matches the source layer's on the calibration tokens (default: on with calibration text; --calib-stats and --no-calib cannot refit).")
    var outputRefit: Bool?

    /// The pass for `calibration`, or nil when the statistics alone calibrate (parallel, no refit);
    /// refuses an explicit sequential order or refit without calibration text.
    func plan(_ calibration: CalibrationOptions) throws -> (order: CalibrationOrder, refitOutput: Bool)? {
        guard calibration.runsText else {
            if calibOrder == .sequential || outputRefit == true {
                throw ValidationError("--calib-order sequential and --output-refit run the calibration text through the layers; they cannot use --no-calib or --calib-stats")
            }
            return nil
        }
        let order = calibOrder ?? .sequential, refit = outputRefit ?? true
        return order == .sequential || refit ? (order, refit) : nil
    }

    /// The summary's description of `calibration` run with `plan`.
    static func describe(_ calibration: CalibrationOptions, _ plan: (order: CalibrationOrder, refitOutput: Bool)?) -> String {
        guard calibration.runsText else { return calibration.description }
        guard let plan else { return calibration.description + ", parallel" }
        return calibration.description + ", " + plan.order.rawValue + (plan.refitOutput ? ", o_proj refit" : "")
    }
}
