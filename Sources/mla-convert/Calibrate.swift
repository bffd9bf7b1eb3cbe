import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLARuntime

extension MLAConvertCommand {
    struct Calibrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Collect activation statistics for activation-aware conversion and save them.",
            discussion: """
            Streams calibration text through the model and accumulates, per layer, the second moment E[x xᵀ] of
            the attention input (F64), without storing activations. The result is a safetensors file that
            conversions can reuse (calibrate once, convert many times).

            Default text: the sample corpus's modern-spelling plays other than Hamlet (Hamlet is evaluation
            text), in file-name order, sampled round-robin: window i of every play, then window i+1, skipping
            each play's first 256 tokens of front matter.
            """)

        @Argument(help: "The model to calibrate.")
        var model: String

        @Option(name: .shortAndLong, help: "Output statistics file (.safetensors).")
        var output: String

        @Option(parsing: .upToNextOption, help: "Calibration text files (default: the sample corpus without Hamlet).")
        var calib: [String] = []

        @Option(help: "Calibration tokens in all.")
        var calibTokens: Int = 32768

        @Option(help: "Window length in tokens.")
        var window: Int = 512

        @Flag(help: "Replace an existing output.")
        var force = false

        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard calibTokens > 0 else { throw ValidationError("--calib-tokens must be positive") }
            guard window >= 1 else { throw ValidationError("--window must be positive") }
        }

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.open(model)
            let files = try calib.isEmpty ? CalibrationCorpus.defaultFiles(in: try defaultCorpusDirectory()) : calib
            let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
            var streams: [[Int]] = []
            for file in files {
                guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                    throw ValidationError("\(file): cannot read it as UTF-8 text")
                }
                streams.append(tokenizer.encode(text))
            }
            let windows = CalibrationCorpus.windows(streams: streams, window: window, totalTokens: calibTokens,
                                                    skip: calib.isEmpty ? 256 : 0)
            let available = windows.reduce(0) { $0 + $1.count }
            guard available > 0 else { throw ValidationError("the calibration text holds no complete window of \(window) tokens") }
            let decoder = try DecoderModel(config: checkpoint.config, store: checkpoint.store)
            let progress = Progress(total: windows.count, label: "calibrate")
            let stats = try collectCalibration(
                model: decoder, windows: windows,
                tags: ["model": model, "text": files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ","),
                       "windows": String(windows.count), "window": String(window)]) { _, _ in progress.step() }
            progress.finish()
            try stats.save(to: output, force: force)
            print("wrote \(output): \(stats.tokenCount) tokens in \(windows.count) windows, \(checkpoint.config.numLayers) layers")
        }

        /// `$MLA_CACHE/corpus`, else `.cache/corpus` under the current directory (scripts/setup fetches it).
        func defaultCorpusDirectory() throws -> String {
            let candidates = [ProcessInfo.processInfo.environment["MLA_CACHE"].map { $0 + "/corpus" }, ".cache/corpus"].compactMap { $0 }
            guard let dir = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw ValidationError("no calibration text: pass --calib FILES or run scripts/setup to fetch the sample corpus")
            }
            return dir
        }
    }
}
