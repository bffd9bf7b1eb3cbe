/// The rope plans gqa2mla can choose from, with what the user fixed.
struct SharedRopeSpace {
    let headDim: Int
    /// Fixed by the request (`SharedRopeRequest`; nil: auto).
    let dims: Int?
    let frequencies: RopeFrequencyChoice?
    let fold: Int?

    var pairs: Int { headDim / 2 }

    /// Rope dims to try: 16, 32 and 64 that fit the head (all its dims when none does).
    var dimCandidates: [Int] {
        if let dims { return [dims] }
        let fitting = [16, 32, 64].filter { $0 <= headDim && pairs % ($0 / 2) == 0 }
        return fitting.isEmpty ? [headDim - headDim % 2] : fitting
    }

    /// The plans for `dims` rope dims: the highest pairs unfolded, and uniform pairs (stride s =
    /// pairs / slots) folded by the smallest multiple of s that is at least 4 (FreqFold 4, TransMLA's
    /// choice; on the sample it beat folds of 2 and 8 at every rope width and budget, docs/defaults.md).
    /// Keeping every pair, the rotation per frequency is exact and only the unfolded plan is kept.
    func plans(dims: Int) -> [(label: String, plan: RopePlan)] {
        let slots = dims / 2
        var out: [(String, RopePlan)] = []
        if frequencies != .uniform, fold == nil || fold == 1 || slots == pairs {
            let f = fold ?? 1
            if pairs % f == 0 { out.append(("rope \(dims), highest pairs" + (f == 1 ? ", no fold" : ", freqfold \(f)"), .shared(dims: dims, stride: 1, fold: f))) }
        }
        guard frequencies != .high, slots < pairs, pairs % slots == 0 else { return out }
        let stride = pairs / slots
        let folds = fold.map { [$0] } ?? [stride * ((4 + stride - 1) / stride)]
        for f in folds where pairs % f == 0 && f % stride == 0 {
            out.append(("rope \(dims), uniform pairs (stride \(stride)), freqfold \(f)", .shared(dims: dims, stride: stride, fold: f)))
        }
        return out
    }

    /// When nothing can be measured: the fixed dims, else the widest rope key of `dimCandidates` and
    /// head_dim/2 of at most `ropeLimit` dims (`ropeLimit(budget:sourceCacheValues:refined:)`), else the
    /// narrowest; on uniform pairs folded as above (TransMLA's setting), else the first valid plan.
    func fixedRule(ropeLimit: Int) -> (label: String, plan: RopePlan)? {
        let widths = Set(dimCandidates + [max(2, (headDim / 2) & ~1)]).sorted().filter { !plans(dims: $0).isEmpty }
        guard let width = dims ?? widths.last(where: { $0 <= ropeLimit }) ?? widths.first else { return nil }
        let all = plans(dims: width)
        return all.first { if case let .shared(_, s, _) = $0.plan { return s > 1 } else { return false } } ?? all.first
    }

    /// The most rope dims the fixed rule gives a layer under `budget`, out of the cache values per token
    /// it leaves the layer (β·2·n_kv·d_h; with a given latent rank r the rope key adds to the r values).
    /// When the layers are `refined` through the softmax: a third of them (r/2), the width the search
    /// keeps, refined, at every budget of the sample. In closed form (saved statistics, weights only,
    /// `--refine-steps 0`): half of them (r), and at most head_dim/2, which the closed form preferred at
    /// the same budgets (docs/defaults.md).
    func ropeLimit(budget: CacheBudget, sourceCacheValues: Int, refined: Bool) -> Int {
        let share = refined ? 3 : 2
        let limit: Int
        switch budget {
        case let .rank(r): limit = r / (share - 1)
        case let .fraction(beta): limit = Int((beta * Double(sourceCacheValues)).rounded(.down)) / share
        }
        return refined ? limit : min(limit, headDim / 2)
    }
}
