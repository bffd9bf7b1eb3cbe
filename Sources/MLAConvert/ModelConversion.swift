import MLACheckpoint
import MLALinalg
import MLARuntime

/// How the latent rank is distributed over layers under one cache budget (`docs/method.md` §6; the budget formula is §9).
public enum RankAllocation: String, Sendable, CaseIterable {
    /// The same kv_lora_rank in every layer (required by stock DeepSeek-V3 configs).
    case uniform
    /// The same total, each next unit of rank to the layer whose next direction holds the largest share
    /// of its layer's weighted energy (one global threshold; optimal for this separable objective).
    case greedy
}

/// The cache a conversion must fit, per token per layer.
public enum CacheBudget: Sendable, Equatable {
    /// kv_lora_rank directly.
    case rank(Int)
    /// Kept fraction β of the source cache (2·n_kv·d_h values): r = ⌊β·2·n_kv·d_h⌋ − rope dims.
    case fraction(Double)

    /// The latent rank for a source layer shape and the rope dims the plan keeps.
    public func rank(sourceValues: Int, ropeValues: Int) throws -> Int {
        switch self {
        case let .rank(r):
            return r
        case let .fraction(beta):
            let r = Int((beta * Double(sourceValues)).rounded(.down)) - ropeValues
            guard r > 0 else {
                throw ConversionPlanError("--kv-budget \(beta): \(beta) of \(sourceValues) cache values leaves no room for a latent after \(ropeValues) rope values; raise the budget or keep fewer rope dims")
            }
            return r
        }
    }
}

/// Converts every attention layer of a source model, one layer at a time.
public struct ModelConversion: Sendable {
    public let config: ModelConfig
    public let store: any TensorStore
    public let statistics: CalibrationStatistics?
    public let options: LayerConversionOptions

    public init(config: ModelConfig, store: any TensorStore, statistics: CalibrationStatistics?, options: LayerConversionOptions) {
        self.config = config
        self.store = store
        self.statistics = statistics
        self.options = options
    }

    /// Cache values per token per layer of the source (2·n_kv·d_h).
    public var sourceCacheValues: Int { Self.sourceCacheValues(config: config) }

    /// Cache values per token per layer of a source with `config` (2·n_kv·d_h: keys and values of every KV head).
    public static func sourceCacheValues(config: ModelConfig) -> Int { 2 * config.numKVHeads * config.headDim }

    /// The latent rank `budget` leaves every layer of `config` under `rope` (before any allocation):
    /// the one place `CacheBudget.rank` is evaluated, for the plan check and for `ranks`.
    public static func budgetRank(config: ModelConfig, rope: RopePlan, budget: CacheBudget) throws -> Int {
        try budget.rank(sourceValues: sourceCacheValues(config: config), ropeValues: ropeValues(config: config, rope: rope))
    }

    /// The rank-independent conversion work of layer `layer`, for ranks up to `upToRank` (nil: any;
    /// 0: the spectrum alone, see `LayerConversion.init`).
    public func layer(_ layer: Int, upToRank: Int? = nil) throws -> LayerConversion {
        try self.layer(layer, moment: statistics?.secondMoment(layer: layer), upToRank: upToRank)
    }

    /// The same for a given attention-input second moment [d × d] (nil: weights only), e.g. one measured
    /// on the partly converted model (`CalibratedConversion`).
    public func layer(_ layer: Int, moment: Matrix<Double>?, upToRank: Int?) throws -> LayerConversion {
        let c = config
        return try LayerConversion(source: SourceLayer(config: c, store: store, layer: layer), moment: moment,
                                   frequencies: RopeFrequencies(config: c), options: options, upToRank: upToRank)
    }

    /// Per-layer ranks for `budget` with `allocation`. Greedy needs every layer's spectrum first
    /// (one extra pass over the layers); ranks stay within [1, max rank of the layer].
    public func ranks(budget: CacheBudget, allocation: RankAllocation, progress: ((Int, Int) -> Void)? = nil) throws -> [Int] {
        let layers = config.numLayers
        let rank = try Self.budgetRank(config: config, rope: options.ropePlan, budget: budget)
        guard allocation == .greedy else { return Array(repeating: rank, count: layers) }
        var spectra: [[Double]] = []
        for l in 0..<layers {
            let conversion = try self.layer(l, upToRank: 0)
            let directions = conversion.maxRank
            // Marginal gain of the i-th direction: its share of the layer's weighted energy.
            spectra.append((1...directions).map { conversion.energyRetained(rank: $0) - conversion.energyRetained(rank: $0 - 1) })
            progress?(l + 1, layers)
        }
        var ranks = Array(repeating: 1, count: layers)
        var remaining = rank * layers - layers
        var heap = spectra.enumerated().filter { $0.element.count > 1 }.map { (gain: $0.element[1], layer: $0.offset) }
        while remaining > 0, let best = heap.indices.max(by: { heap[$0].gain < heap[$1].gain }) {
            let l = heap[best].layer
            ranks[l] += 1
            remaining -= 1
            if ranks[l] < spectra[l].count { heap[best].gain = spectra[l][ranks[l]] } else { heap.remove(at: best) }
        }
        return ranks
    }

    /// Rope values per token per layer that `rope` keeps (n_rope_heads · rope dims).
    static func ropeValues(config: ModelConfig, rope: RopePlan) -> Int {
        switch rope {
        case let .shared(dims, _, _): return dims
        case let .partial(.rorope, pairs, _, _): return 2 * pairs
        case let .partial(_, pairs, _, _): return 2 * pairs * config.numKVHeads
        }
    }

    /// Refuses impossible requests before any work: odd head dims, more rope pairs than a head has,
    /// ranks beyond what the layer can hold, budgets with no room for a latent. The refusal
    /// (`ConversionPlanError`) names the flag that sets the value.
    public static func checkPlan(config c: ModelConfig, options: LayerConversionOptions, budget: CacheBudget) throws {
        guard c.headDim % 2 == 0 else { throw ConversionPlanError("head dim \(c.headDim) is odd; RoPE needs pairs") }
        let pairs = c.headDim / 2, nkvDims = c.numKVHeads * c.headDim
        switch options.ropePlan {
        case let .shared(dims, stride, fold):
            guard dims >= 2, dims % 2 == 0, dims <= c.headDim else { throw ConversionPlanError("--rope-dim \(dims) must be even and within 2...\(c.headDim) (the head dim)") }
            guard stride * dims / 2 <= pairs, pairs % fold == 0 else { throw ConversionPlanError("--freqfold \(fold): with stride \(stride) it does not fit \(pairs) pairs") }
        case let .partial(strategy, keep, start, _):
            guard keep >= 1, keep <= pairs else { throw ConversionPlanError("--rope-pairs \(keep): a head has \(pairs) pairs (head dim \(c.headDim)); --rope-pairs counts frequency pairs, not dims") }
            // Uniform keeps pairs start + ⌊k·pairs/keep⌋ (k < keep): a larger start would run past the last pair.
            let startLimit = pairs - (keep - 1) * pairs / keep
            guard strategy != .uniform || (start >= 0 && start < startLimit) else {
                throw ConversionPlanError("--uniform-start \(start): \(keep) uniform pairs (--rope-pairs) of a head's \(pairs) start in 0..<\(startLimit), else the last would be past the head's last pair")
            }
        }
        let ropeValues = Self.ropeValues(config: c, rope: options.ropePlan)
        let nope = nkvDims - min(ropeValues, nkvDims)
        let rank = try Self.budgetRank(config: c, rope: options.ropePlan, budget: budget)
        let maxRank = min(nope + nkvDims, c.hiddenSize)
        guard rank <= maxRank else {
            let asked: String
            switch budget {
            case .rank: asked = "--kv-lora-rank \(rank)"
            case let .fraction(beta): asked = "--kv-budget \(beta) gives kv_lora_rank \(rank), which"
            }
            throw ConversionPlanError("\(asked) exceeds the largest useful rank \(maxRank) (NoPE key dims \(nope) + value dims \(nkvDims), at most hidden size \(c.hiddenSize))")
        }
        if options.mode == .split, rank / 2 > nope || rank - rank / 2 > nkvDims {
            throw ConversionPlanError("--factorization split: kv_lora_rank \(rank) gives keys \(rank / 2) and values \(rank - rank / 2) of it, more than their \(nope) and \(nkvDims) dims")
        }
        if let qr = options.queryRank {
            let rows = c.numHeads * (c.headDim + (options.ropePlan.isShared ? ropeValues : ropeValues / c.numKVHeads))
            guard qr <= min(rows, c.hiddenSize) else { throw ConversionPlanError("--q-lora-rank \(qr) exceeds min(query rows \(rows), hidden size \(c.hiddenSize))") }
        }
    }

    /// The RoPE stage alone as MLA layers: every layer at its full latent rank, where the factorization
    /// is exact, so the model differs from the source only by the rope plan. Used to measure rope plans.
    public func fullRankLayers() throws -> [MLALayerWeights] {
        try (0..<config.numLayers).map { l in
            let conversion = try layer(l)
            return try conversion.weights(rank: conversion.maxRank).0
        }
    }

    /// Every layer converted at `ranks[layer]`, in order; `progress(done, total)` after each layer.
    public func convert(ranks: [Int], progress: ((Int, Int) -> Void)? = nil) throws -> [(MLALayerWeights, LayerConversionReport)] {
        try (0..<config.numLayers).map { l in
            let result = try layer(l, upToRank: ranks[l]).weights(rank: ranks[l])
            progress?(l + 1, ranks.count)
            return result
        }
    }
}
