import Foundation
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

/// A plan made concrete for one source model: the automatic choices made, the calibration gathered,
/// nothing converted yet. `ranks` and `layers` give the per-layer results; `ConversionPlan.run` writes them.
public struct PreparedConversion: Sendable {
    /// The plan it was prepared from.
    public let plan: ConversionPlan
    /// The source model.
    public let checkpoint: Checkpoint
    /// The chosen layer options over the source (and the calibration statistics, when used).
    public let conversion: ModelConversion
    /// The rank allocation given or chosen.
    public let allocation: RankAllocation
    /// What the method chose, as the summary states it.
    public let settings: MethodSettings
    /// What the automatic choice measured, when it ran.
    public let search: SearchReport?
    /// The layer pass (`CalibratedConversion`) and its calibration windows, when it runs.
    let layerPass: FittedLayerPass

    /// Latent rank of each layer (`ModelConversion.ranks`: the budget through `CacheBudget.rank`, then
    /// the allocation); a greedy allocation reports its spectra pass as stage "spectra".
    public func ranks(observer: any ConversionObserver = SilentObserver()) throws -> [Int] {
        let budget = plan.budget
        guard allocation == .greedy else { return try conversion.ranks(budget: budget, allocation: allocation) }
        observer.begin("spectra", total: checkpoint.config.numLayers)
        let ranks = try conversion.ranks(budget: budget, allocation: allocation) { done, _ in observer.advance("spectra", to: done) }
        observer.end("spectra")
        return ranks
    }

    /// Whether `layers` converts in order (the layer pass), whatever order the layers are asked for in.
    public var convertsInOrder: Bool { layerPass.pass != nil }

    /// The summary's description of the calibration and of the layer pass as it runs.
    var calibrationDescription: String {
        plan.calibrationDescription(pass: layerPass.pass, tokens: layerPass.windows.map { $0.reduce(0) { $0 + $1.count } }, omitted: layerPass.omitted)
    }

    /// The per-layer producer: layer l converted at `ranks[l]`, with its report. With the layer pass
    /// (`convertsInOrder`) the layers are converted in order (asking for a later one converts the earlier
    /// ones first), and `converted` gets the number converted after each.
    public func layers(ranks: [Int], converted: @escaping @Sendable (Int) -> Void = { _ in })
        throws -> @Sendable (Int) throws -> (MLALayerWeights, LayerConversionReport) {
        let conversion = self.conversion
        guard let pass = layerPass.pass, let windows = layerPass.windows else {
            return { l in try conversion.layer(l, upToRank: ranks[l]).weights(rank: ranks[l]) }
        }
        let calibrated = try CalibratedConversion(conversion: conversion, source: StreamedModel(checkpoint), windows: windows,
                                                  ranks: ranks, order: pass.order, refitOutput: pass.refitOutput,
                                                  refinement: pass.refinement, converted: converted)
        return { l in try calibrated.layer(l) }
    }
}

extension ConversionPlan {
    /// Checks the plan against `checkpoint` before any work, gathers the calibration and makes the
    /// automatic choices (each score a note to `observer`; the search's calibration samples are kept in a
    /// temporary file in `scratchDirectory`, by default the system's). Throws `ConversionPlanError` for a
    /// request the model cannot satisfy or a plan that does not fit the budget, before any work.
    public func prepare(checkpoint: Checkpoint, observer: any ConversionObserver = SilentObserver(),
                        scratchDirectory: String = NSTemporaryDirectory()) throws -> PreparedConversion {
        try validate()
        let c = checkpoint.config
        do { try checkRequest(config: c) } catch let refusal as ConversionPlanError { throw Self.naming(checkpoint, refusal) }
        let settings: (ConversionChoice) -> MethodSettings
        let choice: ConversionChoice
        switch method {
        case let .gqa2mla(r):
            let search = r.isFixed && allocations.count == 1 ? (windows: nil, reason: nil) : searchWindows(for: checkpoint)
            // The fixed rule depends on whether the layers are refined, so on the calibration windows: only
            // then are they counted before the plan is checked against the budget.
            let fittedPass = !r.isFixed && search.reason != nil ? try layerPass(for: checkpoint) : nil
            let (candidates, ropeLabel) = try sharedCandidates(r, config: c, searchReason: search.reason, searching: search.windows != nil,
                                                               refined: fittedPass?.pass?.refinement != nil)
            try Self.checkBeforeWork(checkpoint: checkpoint, budget: budget, plans: candidates.checked)
            choice = try choose(candidates, searchWindows: search.windows, fittedPass: fittedPass, checkpoint: checkpoint,
                                scratchDirectory: scratchDirectory, observer: observer)
            settings = { sharedSettings(r, $0, ropeLabel: ropeLabel) }
        case let .mha2mla(r):
            let search = r.isFixed && allocations.count == 1 ? (windows: nil, reason: nil) : searchWindows(for: checkpoint)
            let candidates = partialCandidates(r, config: c, searching: search.windows != nil)
            try Self.checkBeforeWork(checkpoint: checkpoint, budget: budget, plans: candidates.checked)
            if let reason = search.reason, !r.isFixed { observer.note("rope: \(reason), so the fixed rule applies (docs/defaults.md)") }
            choice = try choose(candidates, searchWindows: search.windows, fittedPass: nil, checkpoint: checkpoint, scratchDirectory: scratchDirectory,
                                observer: observer)
            let described = partialSettings(r, choice, config: c)
            observer.note(described.note)
            settings = { _ in described.settings }
        }
        return PreparedConversion(plan: self, checkpoint: checkpoint,
                                  conversion: ModelConversion(config: c, store: checkpoint.store, statistics: choice.statistics, options: choice.options),
                                  allocation: choice.allocation, settings: settings(choice), search: choice.search, layerPass: choice.layerPass)
    }

    /// Converts `checkpoint` and writes the result to `output` (checked beforehand, see
    /// `CheckpointWriter.output`) with `writer` (shard size). Layer 0 is converted first as the template
    /// of every layer's tensors; the others are converted on background workers ahead of the writer
    /// (stage "convert" of `observer`). Returns the summary, also written into the output
    /// (`mla_convert.json`); `start` (on `observer.now()`'s clock) dates its duration.
    public func run(checkpoint: Checkpoint, to output: OutputPlan, writer: CheckpointWriter,
                    observer: any ConversionObserver = SilentObserver(), start: Double? = nil) throws -> ConversionSummary {
        let start = start ?? observer.now(), startWork = FlopCount.totals
        // The search's samples go beside the output, where the user has made room for it.
        let prepared = try prepare(checkpoint: checkpoint, observer: observer, scratchDirectory: output.directory)
        let ranks = try prepared.ranks(observer: observer)
        let parallelism = prepared.layerParallelism()
        // Where BLAS calls run one at a time (BLASConcurrency), each keeps every thread.
        let workerThreads = (BLASConcurrency.callsMayOverlap ? parallelism.blasThreads : nil) ?? BLASThreads.current
        let summary = SummaryMaker(prepared: prepared, ranks: ranks, start: start, startWork: startWork, observer: observer,
                                   settings: ConversionSettings(method: prepared.settings, dtype: outputDType(for: checkpoint), q8_0: q8_0,
                                                                layerWorkers: parallelism.workers, blasThreads: workerThreads))
        observer.begin("convert", total: checkpoint.config.numLayers)
        // The writer takes the layers in its own order (safetensors: by name, 0, 1, 10, 11, …); a pass that
        // converts in order reports the layers converted, else the layers taken.
        let inOrder = prepared.convertsInOrder
        let produce = try prepared.layers(ranks: ranks) { observer.advance("convert", to: $0) }
        let (template, firstReport) = try produce(0)
        let layer: @Sendable (Int) throws -> (MLALayerWeights, LayerConversionReport) = { l in l == 0 ? (template, firstReport) : try produce(l) }
        var streamed: [Int: LayerConversionReport] = [:]
        func ordered() -> [LayerConversionReport] { streamed.keys.sorted().compactMap { streamed[$0] } }
        let previous = BLASThreads.current
        BLASThreads.set(workerThreads)
        defer { BLASThreads.set(previous) }
        try writeModel(prepared, to: output, template: template, ranks: ranks, layer: layer, dtype: summary.settings.dtype, writer: writer,
                       workers: parallelism.workers, summary: { summary.make(ordered()).json }) { l, report in
            streamed[l] = report
            if !inOrder { observer.advance("convert", to: streamed.count) }
        }
        let reports = ordered()
        observer.end("convert")
        return summary.make(reports)
    }

    /// The output dtype for `checkpoint`: the plan's, else its first float weight's (F16 and quantized -> F32).
    public func outputDType(for checkpoint: Checkpoint) -> DType {
        if q8_0 { return .f32 }
        if let dtype { return dtype }
        let stored = checkpoint.store.info(LayerTensorNames(layer: 0).qProj)?.dtype
        return stored == .bf16 ? .bf16 : .f32
    }

    /// The writing step, the one place that knows the output formats: writes `prepared`'s model in
    /// `format` to `output`, `template` fixing every layer's tensor shapes, the other layers pulled from
    /// `layer` on `workers` threads and handed to `received` (layer, report) once written; `summary` is
    /// the JSON stored with the model.
    func writeModel(_ prepared: PreparedConversion, to output: OutputPlan, template: MLALayerWeights, ranks: [Int],
                    layer: @escaping @Sendable (Int) throws -> (MLALayerWeights, LayerConversionReport), dtype: DType,
                    writer: CheckpointWriter, workers: Int, summary: () throws -> JSONValue,
                    received: @escaping (Int, LayerConversionReport) -> Void) throws {
        let source = prepared.checkpoint
        let encoder: any MLAModelEncoder
        switch format {
        case .native:
            let provenance: [(String, JSONValue)] = [
                ("source", .string(source.path)), ("method", .string(method.kind.rawValue)), ("calibration", .string(prepared.calibrationDescription)),
            ]
            encoder = NativeMLAEncoder(source: source, dtype: dtype, provenance: provenance, writer: writer)
        case .deepseek:
            encoder = try DeepSeekV3Encoder(source: source, dtype: dtype, writer: writer)
        case .gguf:
            let provenance = [("source", source.path), ("method", method.kind.rawValue), ("calibration", prepared.calibrationDescription)] + prepared.settings.entries
            encoder = try GGUFEncoder(source: source, dtype: dtype, q8_0: q8_0, provenance: provenance)
        }
        try MLAModelWriter.write(encoder, to: output, template: template, ranks: ranks, summary: summary,
                                 layer: { l in
                                     let (weights, report) = try layer(l)
                                     return (weights, ConversionSummary.layerEntry(report), report)
                                 }, workers: workers, received: received)
    }
}

extension PreparedConversion {
    /// How many layers convert at once and on how many BLAS threads: one layer on all threads with the
    /// layer pass (it converts in order), else `LayerParallelism.choose`.
    func layerParallelism() -> LayerParallelism {
        if convertsInOrder { return LayerParallelism(workers: 1, blasThreads: nil) }
        return LayerParallelism.choose(requested: plan.layerWorkers, layerBytes: LayerParallelism.sourceLayerBytes(checkpoint),
                                       cores: ProcessInfo.processInfo.activeProcessorCount, threads: plan.threads)
    }
}

/// Builds the `ConversionSummary` of a run from the layer reports received so far.
private struct SummaryMaker {
    let prepared: PreparedConversion
    let ranks: [Int]
    let start: Double
    let startWork: FlopCount.Totals
    let observer: any ConversionObserver
    let settings: ConversionSettings

    func make(_ reports: [LayerConversionReport]) -> ConversionSummary {
        let plan = prepared.plan, conversion = prepared.conversion, layers = conversion.config.numLayers
        let ropeValues = ModelConversion.ropeValues(config: conversion.config, rope: conversion.options.ropePlan)
        return ConversionSummary(
            method: plan.method.kind, source: prepared.checkpoint.path, calibration: prepared.calibrationDescription, format: plan.format,
            settings: settings,
            layers: reports, sourceCacheValues: conversion.sourceCacheValues * layers,
            convertedCacheValues: ranks.reduce(0, +) + ropeValues * layers,
            seconds: observer.now() - start, peakResidentBytes: observer.peakResidentBytes, work: FlopCount.totals.since(startWork),
            search: prepared.search)
    }
}
