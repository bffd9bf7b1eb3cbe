import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert

extension MLAConvertCommand {
    struct Calibrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Collect activation statistics for activation-aware conversion and save them.",
            discussion: """
            Streams calibration text through the model and accumulates, per layer, the second moment E[x xᵀ] of \
            the attention input (F64 sums of F32 blocks), without storing activations. The result is a safetensors file that \
            conversions can reuse (calibrate once, convert many times).

            Default text: a mix of three domains of the sample data (--calib-mix, default \(CalibrationMix.standard) \
            of the windows): Shakespeare's modern-spelling plays other than Hamlet, the Docutils \
            documentation and the Docutils Python sources, each without its held-out evaluation file and \
            without license texts. Within a domain the files are sampled round-robin in path order (window i of \
            every file, then window i+1, skipping each file's first 256 tokens of front matter); the domains' \
            windows are interleaved by their shares, in the same order for any --calib-tokens.
            """)

        @Argument(help: "The model to calibrate.")
        var model: String

        @Option(name: .shortAndLong, help: "Output statistics file (.safetensors).")
        var output: String

        @OptionGroup var calibration: CalibrationTextOptions

        @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).")
        var force = false

        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            // Before the calibration pass: an output that overlaps an input, exists or cannot be written fails now.
            let plan = try OutputPlan(output, kind: .file, contents: .statistics, force: force, inputs: [model] + calibration.text.inputs)
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let stats = try asUsageError { try calibration.text.statistics(for: checkpoint, observer: ProgressObserver()) }
            try stats.save(to: plan)
            print("wrote \(output): \(stats.tokenCount) tokens in \(stats.tags["windows"] ?? "?") windows, \(checkpoint.config.numLayers) layers")
        }
    }
}
