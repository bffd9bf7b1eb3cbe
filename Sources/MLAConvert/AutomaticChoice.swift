import MLACheckpoint
import MLARuntime
import MLATensor

/// What a method contributes to the automatic choice (`ConversionPlan.choose`).
struct MethodCandidates {
    /// The plan taken when nothing is measured: as given, or the fixed rule.
    var options: LayerConversionOptions
    /// Plans of which one must fit the budget before any work (the rope candidates, or `options`).
    var checked: [LayerConversionOptions]
    /// The settings the search chooses, for its report ("rope plan, key weighting").
    var what: String
    /// Whether the key weighting is fixed (given, or the whole rope plan is).
    var keyWeightingFixed: Bool
    /// Measures the rope candidates it wants through `measure` (nil: the candidate does not fit the
    /// budget); may look at `search.best`.
    var explore: (_ search: ConversionSearch, _ measure: (SearchCandidate) throws -> Double?) throws -> Void
}

/// What a conversion settled on before converting.
struct ConversionChoice {
    var options: LayerConversionOptions
    var allocation: RankAllocation
    /// The calibration statistics (nil: weights only, or the layer pass measures each layer itself).
    var statistics: CalibrationStatistics?
    /// What the automatic choice measured, when it ran.
    var search: SearchReport?
    /// The layer pass fitted to its calibration windows.
    var layerPass: FittedLayerPass
}

extension ConversionPlan {
    /// Largest source model (F32 weights) the automatic choice measures candidates on: 4 GiB, models up
    /// to about 1B parameters. Each candidate is a whole conversion and pass at the budget, minutes per
    /// candidate beyond that size, so larger models use the fixed rule.
    public static let searchSourceBytesLimit = 4 << 30

    /// The held-out windows when the search can run, or why it cannot: no calibration, a source model
    /// above `searchSourceBytesLimit`, or no held-out calibration text (e.g. a checkpoint without a tokenizer).
    func searchWindows(for checkpoint: Checkpoint) -> (windows: [[Int]]?, reason: String?) {
        guard let text = heldOutText else { return (nil, "without calibration") }
        let c = checkpoint.config
        let bytes = LayerParallelism.sourceLayerBytes(checkpoint) * c.numLayers + 4 * c.vocabSize * c.hiddenSize * (c.tiedEmbeddings ? 1 : 2)
        if bytes > Self.searchSourceBytesLimit {
            return (nil, "the source model (\(formatBytes(bytes)) in F32) is above the search's \(formatBytes(Self.searchSourceBytesLimit)) limit")
        }
        do {
            return (try text.searchWindows(for: checkpoint, searchTokens: searchTokens), nil)
        } catch {
            return (nil, "no held-out calibration text (\(error))")
        }
    }

    /// Calibration tokens each search candidate's o_proj is refit on, when the conversion refits: the
    /// first ones of the calibration text. 1,024 ranked every candidate as 2,048 did at each budget of
    /// the sample, at 70 % of the search's time (docs/defaults.md).
    static let searchRefitTokens = 1024

    /// Fits the layer pass to its calibration windows (unless
    /// `fittedPass` already is), gathers the calibration statistics the search, greedy ranks or (without a
    /// layer pass) the layers need and, when `searchWindows` is given, measures the candidates and keeps the best. The source attention's
    /// samples that the search refits and refines on are kept by the statistics pass in a temporary file
    /// in `scratchDirectory` (`WindowSamples`).
    func choose(_ method: MethodCandidates, searchWindows: [[Int]]?, fittedPass: FittedLayerPass?, checkpoint: Checkpoint, scratchDirectory: String,
                observer: any ConversionObserver) throws -> ConversionChoice {
        let c = checkpoint.config
        let layerPass = try fittedPass ?? self.layerPass(for: checkpoint)
        let (pass, layerWindows) = (layerPass.pass, layerPass.windows)
        // With the o_proj refit, each candidate is refit too, on the first `searchRefitTokens` calibration
        // tokens; with the refinement, the finalists are refined on the first `ConversionSearch.finalistWindows`
        // windows (not when the text holds fewer: the closed form then decides). The statistics pass keeps
        // the samples of the windows they cover.
        var refitTokens = 0, finalistRefinement: AttentionRefinement?
        if searchWindows != nil, let pass, let layerWindows {
            // At least the windows the refit's cross-validation needs: with windows of 1,024 tokens or more,
            // 1,024 tokens would be one window, and every candidate would keep o_proj.
            if pass.refitOutput { refitTokens = max(Self.searchRefitTokens, OutputRefit.minimumWindows * (calibrationText?.window ?? 0)) }
            if layerWindows.count >= ConversionSearch.finalistWindows { finalistRefinement = pass.refinement }
        }
        let refitWindows = CalibrationText.truncatedLengths(layerWindows?.map(\.count) ?? [], to: refitTokens).count
        let sampled = max(refitWindows, finalistRefinement == nil ? 0 : ConversionSearch.finalistWindows)
        let samples = try layerWindows.flatMap { windows in
            try sampled > 0 ? WindowSamples(directory: scratchDirectory, layers: c.numLayers, hiddenSize: c.hiddenSize,
                                            windowTokens: windows.prefix(sampled).map(\.count)) : nil
        }
        // The layer pass measures each layer's moment itself; the statistics serve the search and greedy ranks.
        let needsStatistics = layerWindows == nil || searchWindows != nil || allocations != [.uniform]
        let stats = needsStatistics ? try calibration.statistics(for: checkpoint, observer: observer, samples: samples) : nil
        // The statistics pass freed its layers and states: give the memory back before the search and the pass.
        AllocatorTuning.returnFreedMemory()
        var choice = ConversionChoice(options: method.options, allocation: allocations[0], statistics: stats, layerPass: layerPass)
        if let windows = searchWindows {
            let report = try runSearch(try ConversionSearch(source: StreamedModel(checkpoint), store: checkpoint.store, statistics: stats, budget: budget,
                                                            windows: windows, samples: samples, refitTokens: refitTokens),
                                       method: method, finalistRefinement: finalistRefinement, observer: observer)
            AllocatorTuning.returnFreedMemory()
            choice.options = report.choice.options
            choice.allocation = report.choice.allocation
            choice.search = report
        }
        return choice
    }

    /// Runs an automatic choice: `method.explore` measures the rope candidates; with `finalistRefinement`
    /// (the layer pass's) the finalists among them are scored again refined (`ConversionSearch.scoreRefined`); then, as refinements of the kept candidate
    /// (`ConversionSearch.chosenIndex`), query-weighted keys (unless fixed) and every other allocation are
    /// measured. Each score is a note to `observer`.
    private func runSearch(_ search: ConversionSearch, method: MethodCandidates, finalistRefinement: AttentionRefinement?,
                           observer: any ConversionObserver) throws -> SearchReport {
        let start = observer.now()
        func measure(_ candidate: SearchCandidate) throws -> Double? {
            guard search.fits(candidate.options) else { return nil }
            let kl = try search.score(candidate)
            observer.note("auto: KL \(String(format: "%.5f", kl))  \(candidate.label)")
            return kl
        }
        try method.explore(search, measure)
        let finalists = search.finalists
        if let finalistRefinement, finalists.count > 1 {
            observer.note("auto: refining the \(finalists.count) finalists")
            // Progress per layer: this stage takes most of the search's time (docs/defaults.md, Cost).
            let stage = "auto: refining finalists"
            observer.begin(stage, total: search.config.numLayers)
            try search.scoreRefined(finalists, refinement: finalistRefinement) {
                observer.advance(stage, to: $0)
            }
            observer.end(stage)
            for i in finalists {
                let s = search.scored[i]
                observer.note("auto: KL \(String(format: "%.5f", s.refinedKL ?? s.kl)) after \(search.refinedSteps) refinement steps  \(s.candidate.label)")
            }
        }
        if !method.keyWeightingFixed, let best = search.best, best.candidate.options.weighting.keys == .plain {
            var o = best.candidate.options
            o.weighting = LatentWeighting(keys: .query, values: o.weighting.values)
            _ = try measure(SearchCandidate(label: best.candidate.label + ", query-weighted keys", options: o, allocation: best.candidate.allocation,
                                            refines: best.candidate.label))
        }
        if let best = search.best, allocations.count > 1 {
            for allocation in allocations where allocation != best.candidate.allocation {
                _ = try measure(SearchCandidate(label: best.candidate.label + ", \(allocation.rawValue) ranks", options: best.candidate.options,
                                                allocation: allocation, refines: best.candidate.label))
            }
        }
        let seconds = observer.now() - start
        observer.note("auto: \(search.scored.count) candidates in \(String(format: "%.1f", seconds)) s")
        guard let report = search.report(what: method.what) else {
            throw ConversionPlanError("no automatic candidate fits this budget; raise the budget or fix the rope settings")
        }
        return report
    }
}
