import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLATensor

/// The cache budget options gqa2mla and mha2mla share.
struct BudgetOptions: ParsableArguments {
    @Option(help: "Latent width kv_lora_rank (the same in every layer unless --rank-allocation greedy).")
    var kvLoraRank: Int?

    @Option(help: "Fraction of the source KV cache to keep, in (0, 1]: 0.3125 is -68.75 %. Default 0.5.")
    var kvBudget: Double?

    @Option(help: "Rank per layer: uniform, or greedy (same total, more rank where the measured loss is larger; native format only). Default: measured with the other automatic choices in the native format, uniform in DeepSeek-V3.")
    var rankAllocation: RankAllocation?

    /// Refuses both spellings of the budget at once (`ConversionPlan.validate` checks the value).
    func validate() throws {
        if kvLoraRank != nil && kvBudget != nil { throw ValidationError("give --kv-lora-rank or --kv-budget, not both") }
    }

    var budget: CacheBudget { kvLoraRank.map { .rank($0) } ?? .fraction(kvBudget ?? 0.5) }
}

/// What the joint factorization minimizes, shared by the converters.
struct WeightingOptions: ParsableArguments {
    @Option(help: "Key error to minimize: plain (‖k - k̂‖) or query (score error under the calibration queries). Default: plain, and query is measured against it when the rope plan is chosen automatically.")
    var keyWeighting: LatentWeighting.Keys?

    @Option(help: "Value error to minimize: plain (‖v - v̂‖) or output (after o_proj).")
    var valueWeighting: LatentWeighting.Values = .output
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

    @Option(help: "Tensor dtype: f32 or bf16, and f16 or q8_0 (llama-quantize's Q8_0 of the f32 values) for --format gguf (default: the source's float type; quantized -> f32; the HF formats' latent-norm scales do not fit in f16).")
    var dtype: ConvertedDType?

    @Option(help: ArgumentHelp("Largest safetensors shard, e.g. 500MB (default 5GB; not with --format gguf, which writes one file).", valueName: ByteSize.valueName))
    var maxShardSize: ByteSize?

    @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).")
    var force = false

    @Flag(help: "Print the conversion summary as JSON on standard output.")
    var json = false

    @Option(help: ArgumentHelp(
        "Layers converted at the same time, on their own threads (default: as many as the cores allow whose extra layers' F32 weights fit in 512 MiB, on cores / workers BLAS threads each, or on --threads each when given).",
        discussion: "Memory grows by about one layer's working set per worker; a layer's F32 source weights are the size proxy (a 7B-8B layer is about 0.85 GB, so one layer on all BLAS threads remains the default there). Two layers on one BLAS thread each measured faster than one layer on two (docs/performance.md)."))
    var layerWorkers: Int?

    /// Refuses options `format` does not use.
    func validate(format: MLAOutputFormat) throws {
        if format == .gguf { try refuseShardSize(maxShardSize, oneFileFormat: format.rawValue) }
    }

    /// The checked output (`OutputPlan`: a directory, or one file for GGUF), made before any calibration
    /// or conversion so that an output that overlaps `inputs`, exists or cannot be written fails at once.
    func plan(inputs: [String], format: MLAOutputFormat) throws -> OutputPlan {
        if format == .gguf { return try OutputPlan(output, kind: .file, force: force, inputs: inputs) }
        return try writer.output(output, force: force, inputs: inputs)
    }

    var writer: CheckpointWriter { CheckpointWriter(format: .hf, maxShardBytes: (maxShardSize ?? ByteSize.defaultShard).bytes) }
}

/// Refuses `--max-shard-size` for an output format that writes one file (GGUF, HDF5).
func refuseShardSize(_ given: ByteSize?, oneFileFormat format: String) throws {
    if given != nil { throw ValidationError("--max-shard-size splits safetensors shards; --format \(format) writes one file") }
}

/// The tensor dtypes the converters write: f32, bf16, and f16 and q8_0 for GGUF only (the HF formats'
/// latent-norm scales do not fit in f16; q8_0 is llama.cpp's block type, computed from F32).
enum ConvertedDType: String, CaseIterable {
    case f32, bf16, f16, q8_0

    var dtype: DType {
        switch self {
        case .f32, .q8_0: return .f32
        case .bf16: return .bf16
        case .f16: return .f16
        }
    }
}

/// Maps the library's refusals of a plan (`ConversionPlanError`) to usage errors: one line, exit status 64.
func asUsageError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ConversionPlanError {
        throw ValidationError(error.description)
    }
}

/// The converters' plan from their shared option groups, `method` and `format` (`ConversionPlan.validate`
/// is the check of every value).
func conversionPlan(_ method: ConversionMethod, format: MLAOutputFormat, budget: BudgetOptions, weighting: WeightingOptions,
                    calibration: CalibrationOptions, layerPass: LayerPassOptions, search: SearchOptions,
                    output: ConversionOutputOptions, runtime: RuntimeOptions) -> ConversionPlan {
    var plan = ConversionPlan(method: method, format: format)
    plan.budget = budget.budget
    plan.allocation = budget.rankAllocation
    plan.keyWeighting = weighting.keyWeighting
    plan.valueWeighting = weighting.valueWeighting
    plan.calibration = calibration.source
    plan.calibrationOrder = layerPass.calibOrder
    plan.outputRefit = layerPass.outputRefit
    plan.refineSteps = layerPass.refineSteps
    plan.refineRate = layerPass.refineRate
    plan.searchTokens = search.searchTokens
    plan.dtype = output.dtype?.dtype
    plan.q8_0 = output.dtype == .q8_0
    plan.layerWorkers = output.layerWorkers
    plan.threads = runtime.threads
    return plan
}

/// Runs `plan` as the converters do: the output checked and the source opened before any work, the
/// conversion by `ConversionPlan.run` with progress and notes on standard error, the summary printed.
func runConversion(_ plan: ConversionPlan, source: SourceModelArgument, output: ConversionOutputOptions, runtime: RuntimeOptions) throws {
    let start = MonotonicClock.now()
    runtime.apply()
    let outputPlan = try output.plan(inputs: [source.model] + plan.calibration.inputs, format: plan.format)
    let checkpoint = try source.open()
    let summary = try asUsageError {
        try plan.run(checkpoint: checkpoint, to: outputPlan, writer: output.writer, observer: ProgressObserver(), start: start)
    }
    if output.json {
        print(try summary.json.serialized(indent: 2))
    } else {
        print(summary.text)
        print("  wrote \(output.output) in \(String(format1: summary.seconds)) s, peak RSS \(formatBytes(summary.peakResidentBytes))")
    }
}

/// A conversion's stages as `Progress` lines and its notes as lines on standard error.
final class ProgressObserver: ConversionObserver, @unchecked Sendable {
    // @unchecked: `stages` is used under `lock` only.
    private let lock = NSLock()
    private var stages: [String: MLACLI.Progress] = [:]

    func begin(_ stage: String, total: Int) {
        lock.withLock { stages[stage] = MLACLI.Progress(total: total, label: stage) }
    }

    func advance(_ stage: String, to done: Int) { lock.withLock { stages[stage] }?.advance(to: done) }

    func end(_ stage: String) { lock.withLock { stages.removeValue(forKey: stage) }?.finish() }

    func note(_ line: String) { writeStandardError(line + "\n") }

    func now() -> Double { MonotonicClock.now() }

    var peakResidentBytes: Int { ResourceUsage.peakResidentBytes }
}
