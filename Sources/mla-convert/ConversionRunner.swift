import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLALinalg
import MLARuntime
import MLATensor

/// The cache budget options gqa2mla and mha2mla share.
struct BudgetOptions: ParsableArguments {
    @Option(help: "Latent width kv_lora_rank (the same in every layer unless --rank-allocation greedy).")
    var kvLoraRank: Int?

    @Option(help: "Fraction of the source KV cache to keep, in (0, 1]: 0.3125 is -68.75 %. Default 0.5.")
    var kvBudget: Double?

    @Option(help: "Rank per layer: uniform, or greedy (same total, more rank where the measured loss is larger; native format only). Default: measured with the other automatic choices in the native format, uniform in DeepSeek-V3.")
    var rankAllocation: RankAllocation?

    func validate() throws {
        if kvLoraRank != nil && kvBudget != nil { throw ValidationError("give --kv-lora-rank or --kv-budget, not both") }
        if let kvLoraRank, kvLoraRank < 1 { throw ValidationError("--kv-lora-rank must be positive, got \(kvLoraRank)") }
        if let kvBudget, !(kvBudget > 0 && kvBudget <= 1) { throw ValidationError("--kv-budget must be in (0, 1], got \(kvBudget)") }
    }

    var budget: CacheBudget { kvLoraRank.map { .rank($0) } ?? .fraction(kvBudget ?? 0.5) }

    /// Refuses combinations the output format cannot hold.
    func check(format: MLAOutputFormat) throws {
        if format != .native, rankAllocation == .greedy {
            throw ValidationError("--rank-allocation greedy gives layers different ranks, which \(format == .gguf ? "deepseek2 GGUF" : "DeepSeek-V3") cannot hold; use --format native")
        }
    }
}

/// What the joint factorization minimizes, shared by the converters.
struct WeightingOptions: ParsableArguments {
    @Option(help: "Key error to minimize: plain (‖k - k̂‖) or query (score error under the calibration queries). Default: plain, and query is measured against it when the rope plan is chosen automatically.")
    var keyWeighting: LatentWeighting.Keys?

    @Option(help: "Value error to minimize: plain (‖v - v̂‖) or output (after o_proj).")
    var valueWeighting: LatentWeighting.Values = .output

    var weighting: LatentWeighting { LatentWeighting(keys: keyWeighting ?? .plain, values: valueWeighting) }
    var description: String { Self.describe(weighting) }
    static func describe(_ w: LatentWeighting) -> String { "keys \(w.keys.rawValue)-weighted, values \(w.values.rawValue)-weighted" }
}

/// The source model argument of the converters.
struct SourceModelArgument: ParsableArguments {
    @Argument(help: "Source checkpoint (HF directory, .safetensors, GGUF or HDF5).")
    var model: String

    /// Opens the source; an MLA model is refused (there is nothing to convert). The tensors the
    /// writers copy unchanged are checked now, before calibration and conversion (the writers ask again).
    func open() throws -> Checkpoint {
        let checkpoint = try Checkpoint.openPrintingWarnings(model)
        guard !checkpoint.config.family.isMLA else {
            throw ValidationError("\(model) is already an MLA model (\(checkpoint.config.family.rawValue))")
        }
        _ = try checkpoint.passThroughTensors()
        return checkpoint
    }
}

/// Output options of the converters.
struct ConversionOutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Output directory (--format gguf: the output .gguf file).")
    var output: String

    @Option(help: "Tensor dtype: f32 or bf16, and f16 for --format gguf (default: the source's float type; quantized -> f32; the HF formats' latent-norm scales do not fit in f16).")
    var dtype: ConvertedDType?

    @Option(help: ArgumentHelp("Largest safetensors shard, e.g. 5GB.", valueName: ByteSize.valueName))
    var maxShardSize = ByteSize("5GB")!

    @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).")
    var force = false

    @Flag(help: "Print the conversion summary as JSON on standard output.")
    var json = false

    @Option(help: ArgumentHelp(
        "Layers converted at the same time, on their own threads (default: as many as the cores allow whose extra layers' F32 weights fit in 512 MiB, on cores / workers BLAS threads each, or on --threads each when given).",
        discussion: "Memory grows by about one layer's working set per worker; a layer's F32 source weights are the size proxy (a 7B-8B layer is about 0.85 GB, so one layer on all BLAS threads remains the default there). Two layers on one BLAS thread each measured faster than one layer on two (docs/performance.md)."))
    var layerWorkers: Int?

    func validate() throws {
        if let layerWorkers, layerWorkers < 1 { throw ValidationError("--layer-workers must be at least 1") }
    }

    /// The checked output (`OutputPlan`: a directory, or one file for GGUF), made before any calibration
    /// or conversion so that an output that overlaps `inputs`, exists or cannot be written, or a dtype
    /// the format cannot hold, fails at once.
    func plan(inputs: [String], format: MLAOutputFormat) throws -> OutputPlan {
        if format != .gguf, dtype == .f16 {
            throw ValidationError("--dtype f16 is written only with --format gguf (the HF formats' latent-norm scales do not fit in f16)")
        }
        if format == .gguf { return try OutputPlan(output, kind: .file, force: force, inputs: inputs) }
        return try writer.output(output, force: force, inputs: inputs)
    }

    /// The output dtype for `checkpoint`: the option, else its first float weight's dtype (F16 and quantized -> F32).
    func resolvedDType(for checkpoint: Checkpoint) -> DType {
        if let dtype { return dtype.dtype }
        let stored = checkpoint.store.info(LayerTensorNames(layer: 0).qProj)?.dtype
        return stored == .bf16 ? .bf16 : .f32
    }

    var writer: CheckpointWriter { CheckpointWriter(format: .hf, maxShardBytes: maxShardSize.bytes) }
}

/// Output formats of the converters.
enum MLAOutputFormat: String, CaseIterable {
    case deepseek, native, gguf

    /// DeepSeek-V3 and llama.cpp's deepseek2 fix the softmax scale at 1/√(d_nope + d_rope).
    var foldsSoftmaxScale: Bool { self != .native }
}

/// The tensor dtypes the converters write: f32, bf16, and f16 for GGUF only (the HF formats'
/// latent-norm scales do not fit in f16).
enum ConvertedDType: String, CaseIterable {
    case f32, bf16, f16

    var dtype: DType {
        switch self {
        case .f32: return .f32
        case .bf16: return .bf16
        case .f16: return .f16
        }
    }
}

/// Runs a conversion end to end: ranks, layers, writing, summary.
struct ConversionRunner {
    let method: String
    let checkpoint: Checkpoint
    let conversion: ModelConversion
    let budget: CacheBudget
    let allocation: RankAllocation
    let format: MLAOutputFormat
    let output: ConversionOutputOptions
    /// Where the model goes, checked at command start (`ConversionOutputOptions.plan`).
    let plan: OutputPlan
    let settings: [(String, String)]
    let calibration: String
    /// --threads, if given.
    let threads: Int?
    /// What the automatic choice measured, if it ran.
    var search: SearchReport? = nil
    /// The layer-by-layer calibration pass (`CalibrationOptions.layerPass`), or nil.
    var layerPass: (windows: [[Int]], order: CalibrationOrder, refitOutput: Bool)? = nil

    func run(start: Double) throws {
        let layers = checkpoint.config.numLayers
        // The calibration pass converts one layer after the other (each on all BLAS threads).
        let parallelism = layerPass != nil ? LayerParallelism(workers: 1, blasThreads: nil)
            : LayerParallelism.choose(requested: output.layerWorkers, layerBytes: LayerParallelism.sourceLayerBytes(checkpoint),
                                      cores: ProcessInfo.processInfo.activeProcessorCount, threads: threads)
        let workers = parallelism.workers, workerThreads = parallelism.blasThreads ?? BLASThreads.current
        // Runs the streamed write (the layers' conversion) on the chosen BLAS threads per worker.
        func onWorkerThreads(_ write: () throws -> Void) throws {
            let previous = BLASThreads.current
            BLASThreads.set(workerThreads)
            defer { BLASThreads.set(previous) }
            try write()
        }
        let ranks: [Int]
        if allocation == .greedy {
            let progress = Progress(total: layers, label: "spectra")
            ranks = try conversion.ranks(budget: budget, allocation: allocation) { _, _ in progress.step() }
            progress.finish()
        } else {
            ranks = try conversion.ranks(budget: budget, allocation: allocation)
        }
        let ropeValues = try conversion.ropeValuesPerToken()
        let dtype = output.resolvedDType(for: checkpoint)
        func summary(_ reports: [LayerConversionReport]) -> ConversionSummary {
            ConversionSummary(
                method: method, source: checkpoint.path, calibration: calibration, format: format.rawValue,
                settings: settings + [("dtype", dtype.rawValue),
                                      ("parallelism", "\(workers) layer worker\(workers == 1 ? "" : "s") × \(workerThreads) BLAS thread\(workerThreads == 1 ? "" : "s")")],
                layers: reports,
                sourceCacheValues: conversion.sourceCacheValues * layers,
                convertedCacheValues: ranks.reduce(0, +) + ropeValues * layers,
                seconds: MonotonicClock.now() - start, peakResidentBytes: ResourceUsage.peakResidentBytes, search: search)
        }
        let progress = Progress(total: layers, label: "convert")
        // Streamed: each layer is converted on background threads (--layer-workers) ahead of the writer
        // and released once written. Layer 0, converted first, plans every layer's tensors.
        var calibrated: CalibratedConversion?
        if let layerPass {
            calibrated = try CalibratedConversion(conversion: conversion, source: StreamedModel(checkpoint), windows: layerPass.windows,
                                                  ranks: ranks, order: layerPass.order, refitOutput: layerPass.refitOutput)
        }
        let conversion = self.conversion, calibratedLayers = calibrated
        let convertLayer: @Sendable (Int) throws -> (MLALayerWeights, LayerConversionReport) = { l in
            if let calibratedLayers { return try calibratedLayers.layer(l) }
            return try conversion.layer(l, upToRank: ranks[l]).weights(rank: ranks[l])
        }
        let (template, firstReport) = try convertLayer(0)
        let convert: @Sendable (Int) throws -> (MLALayerWeights, LayerConversionReport) = { l in
            l == 0 ? (template, firstReport) : try convertLayer(l)
        }
        var streamed: [Int: LayerConversionReport] = [:]
        func received(_ l: Int, _ report: LayerConversionReport) {
            streamed[l] = report
            progress.step()
        }
        func ordered() -> [LayerConversionReport] { streamed.keys.sorted().compactMap { streamed[$0] } }
        let encoder: any MLAModelEncoder
        switch format {
        case .native:
            let provenance: [(String, JSONValue)] = [
                ("source", .string(checkpoint.path)), ("method", .string(method)), ("calibration", .string(calibration)),
            ]
            encoder = NativeMLAEncoder(source: checkpoint, dtype: dtype, provenance: provenance, writer: output.writer)
        case .deepseek:
            encoder = try DeepSeekV3Encoder(source: checkpoint, dtype: dtype, writer: output.writer)
        case .gguf:
            let provenance = [("source", checkpoint.path), ("method", method), ("calibration", calibration)] + settings
            encoder = try GGUFEncoder(source: checkpoint, dtype: dtype, provenance: provenance)
        }
        try onWorkerThreads {
            try MLAModelWriter.write(encoder, to: plan, template: template, ranks: ranks, summary: { summary(ordered()).json },
                                     layer: { l in
                                         let (weights, report) = try convert(l)
                                         return (weights, ConversionSummary.layerEntry(report), report)
                                     }, workers: workers, received: received)
        }
        let reports = ordered()
        progress.finish()
        var summary = summary(reports)
        summary.seconds = MonotonicClock.now() - start
        summary.peakResidentBytes = ResourceUsage.peakResidentBytes
        if output.json {
            print(try summary.json.serialized(indent: 2))
        } else {
            print(summary.text)
            print("  wrote \(output.output) in \(String(format1: summary.seconds)) s, peak RSS \(formatBytes(summary.peakResidentBytes))")
        }
    }
}
