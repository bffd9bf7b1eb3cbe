import MLARuntime

/// The stages that follow a layer's closed form on calibration windows (docs/method.md §6.a, §6.c): the
/// o_proj refit (`OutputRefit`), then the refinement through the softmax (`AttentionRefinement`). Both
/// read the same windows: each window's queries are computed once (`MLAAttention.QueryWindows`), the
/// closed form's per-head outputs are both the refit's inputs and the refinement's first held-out check,
/// and with `returningHeads` the heads of the weights left serve the caller (the sequential pass's next
/// states): the closed form's when the refinement kept it, else the held-out checks' and the other
/// windows run again.
struct CalibratedStages {
    /// How the refit picks its ridge, or nil to keep o_proj.
    let refit: OutputRefit.RidgeChoice?
    /// Whether the refit measures its errors before and after (for the summary).
    let measuringRefitErrors: Bool
    /// The refinement, or nil for none.
    let refinement: AttentionRefinement?
    /// Windows worked on at once, each on one BLAS thread.
    let workers: Int

    /// Applies the stages to `weights` (the closed form, no latent norm) on windows of its attention
    /// inputs `inputs[i]` [t_i × d] and the source attention's outputs on them `targets[i]` [t_i × d],
    /// recording them in `report`. Returns, when `returningHeads`, the per-head outputs [t_i × n_h·dV] of
    /// the weights it leaves on every window, else nothing.
    func apply(to weights: inout MLALayerWeights, report: inout LayerConversionReport, inputs: [[Float]], targets: [[Float]],
               returningHeads: Bool) throws -> [[Float]] {
        guard refit != nil || refinement != nil || returningHeads else { return [] }
        let windows = try MLAAttention.QueryWindows(weights, inputs: inputs, workers: workers)
        let closedForm = weights
        var heads = refit != nil || returningHeads ? try parallelMap(windows.count, workers: workers) { windows.heads(closedForm, index: $0) } : nil
        if let refit, let closedFormHeads = heads {
            try OutputRefit.apply(to: &weights, report: &report, heads: closedFormHeads, targets: targets, ridge: refit,
                                  measuringErrors: measuringRefitErrors)
        }
        if let refinement {
            // The refit moved o_proj only, so the closed form's heads are still the weights' heads.
            let checked = try refinement.apply(to: &weights, report: &report, windows: windows, targets: targets, startHeads: heads, workers: workers)
            if returningHeads, let kept = report.refinement?.keptStep, kept != 0 {
                // The held-out checks ran the kept weights on their windows already.
                let refined = weights
                heads = try parallelMap(windows.count, workers: workers) { checked[$0] ?? windows.heads(refined, index: $0) }
            }
        }
        return returningHeads ? heads ?? [] : []
    }
}
