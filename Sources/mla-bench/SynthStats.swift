import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

extension Bench {
    struct SynthStats: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "synth-stats",
            abstract: "Write calibration statistics for a model from synthetic activations (to time calibrated conversions).",
            discussion: """
            Each layer's attention inputs are --tokens rows drawn like the synthetic weights (SyntheticWeights: a \
            low-rank part with a decaying spectrum plus column-scaled noise, so a few features are far larger than \
            the rest, as in real hidden states) and accumulated exactly as `mla-convert calibrate` does. The file \
            is what `--calib-stats` reads; converting from it costs what converting from real statistics costs. \
            Memory holds every layer's d × d sums (4.3 GB for d = 4096 and 32 layers) while writing.
            """)
        @Argument(help: "The model the statistics are for (its layer count and hidden size).") var model: String
        @Option(name: .shortAndLong, help: "Output .safetensors file.") var output: String
        @Option(help: "Synthetic tokens per layer.") var tokens = 4096
        @Option(help: "Random seed; the same seed gives the same file.") var seed: UInt64 = 1
        @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).") var force = false
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            let plan = try OutputPlan(output, kind: .file, contents: .statistics, force: force, inputs: [model])
            let c = try Checkpoint.openPrintingWarnings(model).config
            var stats = CalibrationStatistics(numLayers: c.numLayers, hiddenSize: c.hiddenSize,
                                              tags: ["text": "synthetic activations (mla-bench synth-stats, seed \(seed))"])
            let root = SplitMix64(seed: seed), progress = Progress(total: c.numLayers, label: "synth-stats")
            for layer in 0..<c.numLayers {
                SyntheticWeights().matrix(rows: tokens, cols: c.hiddenSize, rng: root.split(UInt64(layer))) { _, block in
                    stats.accumulate(layer: layer, x: Array(block), tokens: block.count / c.hiddenSize)
                }
                progress.step()
            }
            progress.finish()
            try stats.save(to: plan)
            print("wrote \(output): \(c.numLayers) layers × \(c.hiddenSize)², \(stats.tokenCount) tokens; peak RSS \(formatBytes(ResourceUsage.peakResidentBytes))")
        }
    }
}
