import MLACheckpoint
import MLARuntime

// The two methods' rope candidates, checks against the model, and the settings text of their summary.

extension ConversionPlan {
    /// Refuses, before any work, rope settings the model's heads cannot hold (the budget is checked
    /// with the candidates by `checkBeforeWork`).
    func checkRequest(config c: ModelConfig) throws {
        guard case let .gqa2mla(r) = method else { return }
        let hd = c.headDim, pairs = hd / 2
        if let dims = r.dims, dims > hd { throw ConversionPlanError("--rope-dim \(dims) exceeds the head dim \(hd)") }
        if let dims = r.dims, r.frequencies == .uniform, pairs % (dims / 2) != 0 {
            throw ConversionPlanError("--rope-frequencies uniform needs rope-dim/2 (\(dims / 2)) to divide the \(pairs) pairs per head")
        }
        if r.isFixed, let dims = r.dims, let fold = r.freqfold.pairs {
            let stride = r.frequencies == .high ? 1 : pairs / (dims / 2)
            guard pairs % fold == 0, fold % stride == 0 else {
                throw ConversionPlanError("--freqfold \(fold) must divide the \(pairs) pairs per head and be a multiple of the stride \(stride)")
            }
        }
    }

    /// gqa2mla's candidates: the given plan, else (nothing measured) the fixed rule labeled with
    /// `searchReason`, else every shared rope plan of `SharedRopeSpace`, explored by width. Also returns
    /// the rope label of the summary when nothing is measured.
    func sharedCandidates(_ r: SharedRopeRequest, config c: ModelConfig, searchReason: String?, searching: Bool, refined: Bool) throws
        -> (MethodCandidates, ropeLabel: String) {
        let hd = c.headDim, pairs = hd / 2
        let space = SharedRopeSpace(headDim: hd, dims: r.dims, frequencies: r.frequencies, fold: r.freqfold.pairs)
        var options = LayerConversionOptions(ropePlan: .shared(dims: min(r.dims ?? 32, hd), stride: 1, fold: 1), weighting: weighting,
                                             queryRank: r.queryRank, foldSoftmaxScale: format.foldsSoftmaxScale)
        var ropeLabel = ""
        if r.isFixed, let dims = r.dims, let freq = r.frequencies, let fold = r.freqfold.pairs {
            let stride = freq == .high ? 1 : pairs / (dims / 2)
            options.ropePlan = .shared(dims: dims, stride: stride, fold: max(fold, stride))
            ropeLabel = "\(freq.rawValue) pairs, stride \(stride), freqfold \(max(fold, stride)) (as given)"
        } else if let reason = searchReason {
            let limit = space.ropeLimit(budget: budget, sourceCacheValues: ModelConversion.sourceCacheValues(config: c),
                                        refined: refined)
            guard let rule = space.fixedRule(ropeLimit: limit) else { throw ConversionPlanError("no rope plan fits --rope-dim/--rope-frequencies/--freqfold as given") }
            options.ropePlan = rule.plan
            ropeLabel = rule.label + " (fixed rule: \(reason), docs/defaults.md)"
        }
        let base = options, first = allocations[0]
        let candidates: [SearchCandidate] = r.isFixed
            ? [SearchCandidate(label: "rope \(ropeLabel)", options: base, allocation: first)]
            : space.dimCandidates.flatMap { d in space.plans(dims: d).map { p -> SearchCandidate in
                var o = base
                o.ropePlan = p.plan
                return SearchCandidate(label: p.label, options: o, allocation: first)
            } }
        let keyWeightingFixed = r.isFixed || keyWeighting != nil
        let what = [r.isFixed ? nil : "rope plan", keyWeightingFixed ? nil : "key weighting",
                    allocations.count > 1 ? "rank allocation" : nil].compactMap { $0 }.joined(separator: ", ")
        let method = MethodCandidates(options: options, checked: r.isFixed || !searching ? [options] : candidates.map(\.options), what: what,
                                      keyWeightingFixed: keyWeightingFixed) { _, measure in try Self.exploreByWidth(candidates, measure: measure) }
        return (method, ropeLabel)
    }

    /// The rope plans measured, staged: each rope width with its last plan (uniform pairs folded, or
    /// the one plan that keeps every pair), then the other plans of the best width.
    static func exploreByWidth(_ candidates: [SearchCandidate], measure: (SearchCandidate) throws -> Double?) throws {
        let byDims = Dictionary(grouping: candidates) { candidate -> Int in
            if case let .shared(dims, _, _) = candidate.options.ropePlan { return dims }
            return 0
        }
        var bestDims: Int?, bestKL = Double.infinity
        for dims in byDims.keys.sorted() {
            guard let last = byDims[dims]?.last, let kl = try measure(last) else { continue }
            if kl < bestKL { (bestDims, bestKL) = (dims, kl) }
        }
        for candidate in (bestDims.flatMap { byDims[$0] } ?? []).dropLast() { _ = try measure(candidate) }
    }

    /// gqa2mla's summary settings for what was chosen.
    func sharedSettings(_ r: SharedRopeRequest, _ choice: ConversionChoice, ropeLabel: String) -> MethodSettings {
        guard case let .shared(dRope, _, _) = choice.options.ropePlan else { preconditionFailure("gqa2mla keeps one shared rope key") }
        let label = choice.search.map { $0.choice.label + " (auto)" } ?? ropeLabel
        return MethodSettings(
            rope: "one shared key of \(dRope) dims = \(dRope / 2) frequency pairs, \(label)",
            latent: "joint [NoPE keys; values], \(choice.options.weighting.settingText), \(choice.allocation.rawValue) ranks",
            query: r.queryRank.map { .lowRank($0) } ?? .full)
    }

    /// mha2mla's layer options for `strategy` keeping `pairs` pairs per head.
    private func partialOptions(_ r: PartialRopeRequest, _ strategy: PartialRopeStrategy, _ pairs: Int) -> LayerConversionOptions {
        LayerConversionOptions(
            ropePlan: .partial(strategy: strategy, pairs: pairs, start: r.uniformStart, combination: r.combination),
            weighting: weighting, mode: r.factorization, sigma: r.sigma,
            foldSoftmaxScale: format.foldsSoftmaxScale, activationAware: r.factorOn == .activations && heldOutText != nil)
    }

    /// mha2mla's candidates: the given strategy and pairs (default: the first of `partialStrategies(config:)`,
    /// head_dim/16 pairs), else those strategies at the default pairs, then the best one's pairs halved or
    /// doubled while the score improves.
    func partialCandidates(_ r: PartialRopeRequest, config c: ModelConfig, searching: Bool) -> MethodCandidates {
        let defaultPairs = r.pairs ?? max(1, c.headDim / 16)
        let strategies = r.strategy.map { [$0] } ?? partialStrategies(config: c)
        let chosen = partialOptions(r, r.strategy ?? strategies[0], defaultPairs), first = allocations[0]
        func candidate(_ s: PartialRopeStrategy, _ p: Int) -> SearchCandidate {
            let label = s == .rorope ? "rorope, one shared rope key of \(p) pairs" : "\(s.rawValue), \(p) pairs per KV head"
            return SearchCandidate(label: label, options: partialOptions(r, s, p), allocation: first)
        }
        let keyWeightingFixed = r.isFixed || keyWeighting != nil
        let what = [r.strategy == nil ? "rope strategy" : nil, r.pairs == nil ? "rope pairs" : nil, keyWeightingFixed ? nil : "key weighting",
                    allocations.count > 1 ? "rank allocation" : nil].compactMap { $0 }.joined(separator: ", ")
        let checked = r.isFixed || !searching ? [chosen] : strategies.map { partialOptions(r, $0, defaultPairs) }
        return MethodCandidates(options: chosen, checked: checked, what: what, keyWeightingFixed: keyWeightingFixed) { searcher, measure in
            for s in strategies { _ = try measure(candidate(s, defaultPairs)) }
            guard r.pairs == nil, let best = searcher.best, case let .partial(s, p, _, _) = best.candidate.options.ropePlan else { return }
            // Rope pairs trade against the latent rank: halve or double while the score improves.
            for step in [{ (p: Int) in p * 2 }, { (p: Int) in p / 2 }] {
                var pairs = step(p), current = best.kl
                while pairs >= 1, pairs <= c.headDim / 2, let kl = try measure(candidate(s, pairs)), kl < current {
                    current = kl
                    pairs = step(pairs)
                }
                if current < best.kl { break }
            }
        }
    }

    /// The strategies mha2mla measures when none is given: high, 2-norm and rorope in the native format. A
    /// DeepSeek-V3 or GGUF output holds one rope key shared by all heads, on every s-th pair from pair 0
    /// (docs/method.md §8.a): with several KV heads only rorope makes one; with one, high does too.
    func partialStrategies(config c: ModelConfig) -> [PartialRopeStrategy] {
        if format == .native { return [.high, .twoNorm, .rorope] }
        return c.numKVHeads > 1 ? [.rorope] : [.high, .rorope]
    }

    /// mha2mla's summary settings for what was chosen, and the note of the rope kept.
    func partialSettings(_ r: PartialRopeRequest, _ choice: ConversionChoice, config c: ModelConfig) -> (settings: MethodSettings, note: String) {
        guard case let .partial(strategy, pairs, _, _) = choice.options.ropePlan else { preconditionFailure("mha2mla keeps partial RoPE") }
        let heads = strategy == .rorope ? "one shared rope key" : "each of the \(c.numKVHeads) KV heads"
        let note = "rope: \(heads) keeps \(pairs) frequency pairs = \(2 * pairs) rope dims (head dim \(c.headDim))"
        let settings = MethodSettings(
            rope: "\(strategy.rawValue): \(heads) keeps \(pairs) pairs (\(2 * pairs) dims)" + (choice.search == nil || r.isFixed ? "" : " (auto)"),
            latent: "\(r.factorization.rawValue) on \(heldOutText == nil ? "weights" : r.factorOn.rawValue), sigma \(r.sigma.rawValue), "
                + "\(choice.options.weighting.settingText), \(choice.allocation.rawValue) ranks",
            query: nil)
        return (settings, note)
    }
}

extension LatentWeighting {
    /// How the summary names the weighting: "keys plain-weighted, values output-weighted".
    var settingText: String { "keys \(keys.rawValue)-weighted, values \(values.rawValue)-weighted" }
}
