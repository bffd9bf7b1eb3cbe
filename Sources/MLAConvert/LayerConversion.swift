import MLALinalg
import MLARuntime

/// How the rope keys are chosen (the lossy position step).
public enum RopePlan: Sendable, Equatable {
    /// RoRoPE + FreqFold (gqa2mla): one shared rope head of `dims` dims carrying source pairs
    /// stride·i, pairs folded `fold` at a time (`RopeSplit.rotated`).
    case shared(dims: Int, stride: Int, fold: Int)
    /// MHA2MLA partial RoPE: one rope head per KV head with `pairs` pairs chosen by `strategy`.
    case partial(strategy: PartialRopeStrategy, pairs: Int, start: Int, combination: NormCombination)

    /// One rope key shared by all heads (DeepSeek's layout).
    public var isShared: Bool {
        switch self {
        case .shared, .partial(.rorope, _, _, _): return true
        case .partial: return false
        }
    }
}

/// Joint (one latent for NoPE keys and values) or split (half the rank each, MHA2MLA's variant).
public enum FactorizationMode: String, Sendable, CaseIterable {
    case joint, split
}

/// Everything that decides how a source layer becomes an MLA layer, except its rank.
public struct LayerConversionOptions: Sendable {
    public var ropePlan: RopePlan
    public var weighting: LatentWeighting
    public var mode: FactorizationMode
    public var sigma: SigmaPlacement
    /// Low-rank query of this rank (output PCA of the final query weights), or nil for a full q_proj.
    public var queryRank: Int?
    /// Fold the change of softmax scale into the query rows so the layer uses DeepSeek's
    /// (d_nope + d_rope)^-½ (stock export). Otherwise the layer keeps the source scale d_h^-½.
    public var foldSoftmaxScale: Bool
    /// Factor under the calibration moment (activation-aware, default) or the weights alone (C = I,
    /// MHA2MLA's SVD) even when calibration is available for choosing rope pairs.
    public var activationAware: Bool

    public init(ropePlan: RopePlan, weighting: LatentWeighting, mode: FactorizationMode = .joint, sigma: SigmaPlacement = .down,
                queryRank: Int? = nil, foldSoftmaxScale: Bool, activationAware: Bool = true) {
        self.activationAware = activationAware
        self.ropePlan = ropePlan
        self.weighting = weighting
        self.mode = mode
        self.sigma = sigma
        self.queryRank = queryRank
        self.foldSoftmaxScale = foldSoftmaxScale
    }
}

/// What a layer's conversion kept and lost (the per-layer part of the conversion summary).
public struct LayerConversionReport: Sendable {
    public let layer: Int
    public let kvRank: Int
    /// [n_rope_heads][slots]: the source pair whose frequency each rope slot carries.
    public let keptPairs: [[Int]]
    /// Fraction of key energy (second-moment trace) left in rope keys.
    public let ropeEnergyRetained: Double
    /// Fraction of the weighted latent energy the rank keeps (activation-weighted with calibration).
    public let kvEnergyRetained: Double
    /// Fraction of the query energy the query rank keeps (1 for a full query).
    public let queryEnergyRetained: Double
    /// The attention-output error on the calibration tokens relative to the output's energy,
    /// Σ‖ŷ − y‖² / Σ‖y‖², before and after the o_proj refit (`OutputRefit`); nil when not refit.
    public var outputError: (before: Double, after: Double)?
    /// The relative ridge the refit chose by cross-validation, or nil when it kept o_proj (or did not run).
    public var outputRidge: Double?
    /// The held-out attention-output error before and after `--refine-steps` (`AttentionRefinement`);
    /// nil when not refined.
    public var refinement: AttentionRefinement.Result?
    /// The stages the layer went through, in order (`LayerConversion.stages`, then `.outputRefit` when refit and `.refinement` when refined).
    public var stages: [ConversionStage]
}

/// The per-layer work common to gqa2mla and mha2mla: rope split, weighted joint factorization, query.
/// Construction does the rank-independent part (moments, rope basis, spectrum); `weights(rank:)` cuts it.
public struct LayerConversion: Sendable {
    public let source: SourceLayer
    public let options: LayerConversionOptions
    public let ropeSplit: RopeSplit
    public let latents: [LatentFactorization]
    /// The moment the factorizations use (nil when weights only).
    let factorMoment: Matrix<Double>?
    let invFreq: [Double]
    let attentionFactor: Double

    /// - `moment`: the layer's calibration second moment C [d × d], or nil (weights only: C = I).
    /// - `frequencies`: the source's RoPE table (scaled).
    /// - `upToRank`: the largest rank `weights(rank:)` will be asked for (nil: any; 0: only the spectrum,
    ///   for `energyRetained`); eigenvectors beyond it are never computed.
    public init(source s: SourceLayer, moment: Matrix<Double>?, frequencies: RopeFrequencies,
                options: LayerConversionOptions, upToRank: Int? = nil) throws {
        source = s
        self.options = options
        invFreq = frequencies.inverseFrequencies
        attentionFactor = frequencies.attentionFactor
        // E[q_h q_hᵀ] per head: only query-weighted keys need them (2-norm reads their diagonals).
        let queryMoments = { (0..<s.numHeads).map { outputMoment(s.queryHead($0), moment) } }
        switch options.ropePlan {
        case let .shared(dims, stride, fold):
            ropeSplit = try RopeSplit.rotated(source: s, dRope: dims, stride: stride, fold: fold, invFreq: invFreq,
                                         keyMoment: outputMoment(s.k, moment))
        case let .partial(.rorope, pairs, _, _):
            ropeSplit = try RopeSplit.rotated(source: s, dRope: 2 * pairs, stride: 1, fold: 1, invFreq: invFreq,
                                         keyMoment: outputMoment(s.k, moment))
        case let .partial(strategy, pairs, start, combination):
            let keyEnergy = momentDiagonal(s.k, moment)
            let kept = PartialRope.keptPairs(strategy: strategy, pairs: pairs, start: start, combination: combination, source: s,
                                             keyEnergy: keyEnergy, queryEnergy: { (0..<s.numHeads).map { momentDiagonal(s.queryHead($0), moment) } })
            ropeSplit = RopeSplit.partial(source: s, kept: kept, invFreq: invFreq, keyEnergy: keyEnergy)
        }
        let nope = ropeSplit.transform(s.k, rows: ropeSplit.ropeRows..<ropeSplit.keyRows)
        let factorMoment = options.activationAware ? moment : nil
        self.factorMoment = factorMoment
        let split = ropeSplit
        // Diagonal blocks of Σ_j N_jᵀ Q_j N_j along the NoPE groups, and of Σ_{h∈j} W_o,hᵀ W_o,h per KV head.
        func keyWeight() -> [Matrix<Double>] {
            var blocks = split.nopeGroups.map { Matrix<Double>.zeros($0.count, $0.count) }
            let queryMoments = queryMoments()
            for h in 0..<s.numHeads {
                let j = s.kvHead(ofQueryHead: h), n = split.nopeToKey(kvHead: j)
                let term = matmul(matmul(n, queryMoments[h], transA: true), n)
                let g = split.nopeGroupOfKVHead[j]
                for i in 0..<term.values.count { blocks[g].values[i] += term.values[i] }
            }
            return blocks
        }
        func valueWeight() -> [Matrix<Double>] {
            var blocks = (0..<s.numKVHeads).map { _ in Matrix<Double>.zeros(s.headDim, s.headDim) }
            for h in 0..<s.numHeads {
                let block = gram(s.outputHead(h)), j = s.kvHead(ofQueryHead: h)
                for i in 0..<block.values.count { blocks[j].values[i] += block.values[i] }
            }
            return blocks
        }
        let latentRanks = upToRank.map { Self.splitRanks($0, mode: options.mode) }
        switch options.mode {
        case .joint:
            latents = [try LatentFactorization(nope: nope, values: s.v, moment: factorMoment, weighting: options.weighting,
                                               keyWeight: keyWeight, valueWeight: valueWeight, upToRank: latentRanks?[0])]
        case .split:
            let empty = Matrix<Double>.zeros(0, s.hiddenSize)
            latents = [try LatentFactorization(nope: nope, values: empty, moment: factorMoment, weighting: options.weighting,
                                               keyWeight: keyWeight, valueWeight: { [] }, upToRank: latentRanks?[0]),
                       try LatentFactorization(nope: empty, values: s.v, moment: factorMoment, weighting: options.weighting,
                                               keyWeight: { [] }, valueWeight: valueWeight, upToRank: latentRanks?[1])]
        }
    }

    /// The stages `weights(rank:)` runs, in order: the rope split, the factorization, and the query-side
    /// and bias steps the options and the source call for.
    public var stages: [ConversionStage] {
        var stages: [ConversionStage]
        switch options.ropePlan {
        case let .shared(_, _, fold): stages = fold > 1 ? [.ropeRotation, .freqFold] : [.ropeRotation]
        case .partial(.rorope, _, _, _): stages = [.ropeRotation]
        case .partial: stages = [.partialRope]
        }
        if ropeSplit.nopeRows > 0 { stages.append(.ropeTruncation) }
        stages.append(.latentFactorization)
        if source.kBias != nil || source.vBias != nil { stages.append(.biasMove) }
        if options.foldSoftmaxScale { stages.append(.softmaxScaleFold) }
        if options.queryRank != nil { stages += [.lowRankQuery, .linearRegimeNorm] }
        return stages
    }

    /// Largest latent rank: rank of [NoPE keys; values] and at most d.
    public var maxRank: Int {
        min(latents.reduce(0) { $0 + $1.eigenvalues.count }, source.hiddenSize)
    }

    /// Ranks of the key and value latents for a total `rank` (split mode: half each, keys first).
    func splitRanks(_ rank: Int) -> [Int] { Self.splitRanks(rank, mode: options.mode) }

    static func splitRanks(_ rank: Int, mode: FactorizationMode) -> [Int] {
        mode == .joint ? [rank] : [rank / 2, rank - rank / 2]
    }

    /// The weighted energy a total `rank` keeps.
    public func energyRetained(rank: Int) -> Double {
        let ranks = splitRanks(rank)
        let kept = zip(latents, ranks).reduce(0.0) { $0 + $1.0.eigenvalues.prefix($1.1).reduce(0, +) }
        let total = latents.reduce(0.0) { $0 + $1.eigenvalues.reduce(0, +) }
        return total > 0 ? kept / total : 1
    }

    /// Latent rows A [r × d] and up-projections B_N [nN × r], B_V [nV × r] at total `rank` (`ranks` per
    /// latent; split mode: block diagonal, keys first).
    private func latentFactors(rank: Int, ranks: [Int]) throws -> (a: Matrix<Double>, bNope: Matrix<Double>, bValue: Matrix<Double>) {
        let s = source, hd = s.headDim
        let parts = try zip(latents, ranks).map { latent, r in
            do {
                return try latent.factors(rank: r, sigma: options.sigma)
            } catch let error as LAPACKError {
                throw MLAError.invalid(layer: "layer \(s.layer)", field: "kv_lora_rank",
                                       reason: "rank \(rank) is beyond this layer's numerical rank (\(error)); use a smaller rank")
            }
        }
        var a: Matrix<Double>, bNope: Matrix<Double>, bValue: Matrix<Double>
        if parts.count == 1 {
            (a, bNope, bValue) = parts[0]
        } else {
            a = Matrix(stacking: parts.map(\.a))
            bNope = .zeros(ropeSplit.nopeRows, rank)
            bValue = .zeros(s.numKVHeads * hd, rank)
            var offset = 0
            for (f, r) in zip(parts, ranks) {
                for row in 0..<f.bNope.rows { for c in 0..<r { bNope[row, offset + c] = f.bNope[row, c] } }
                for row in 0..<f.bValue.rows { for c in 0..<r { bValue[row, offset + c] = f.bValue[row, c] } }
                offset += r
            }
        }
        return (a, bNope, bValue)
    }

    /// The MLA layer at latent width `rank`, with its report.
    public func weights(rank: Int) throws -> (MLALayerWeights, LayerConversionReport) {
        let s = source, hd = s.headDim, d = s.hiddenSize, nh = s.numHeads
        let ranks = splitRanks(rank)
        for (latent, r) in zip(latents, ranks) where r > latent.eigenvalues.count || r < 0 {
            throw MLAError.invalid(layer: "layer \(s.layer)", field: "kv_lora_rank",
                                   reason: "rank \(rank) exceeds the \(latent.eigenvalues.count) latent directions this layer has")
        }
        let (a, bNope, bValue) = try latentFactors(rank: rank, ranks: ranks)
        let dRope = ropeSplit.dRope, qWidth = hd + dRope
        let scale = 1 / Double(hd).squareRoot()
        let newScale = options.foldSoftmaxScale ? 1 / Double(qWidth).squareRoot() : scale
        let gamma = scale / newScale
        var kvB = Matrix<Double>.zeros(nh * (hd + hd), rank)
        var query = Matrix<Double>.zeros(nh * qWidth, d)
        var queryBias: [Double]? = s.qBias.map { _ in [Double](repeating: 0, count: nh * qWidth) }
        let keyUp = (0..<s.numKVHeads).map { matmul(ropeSplit.nopeToKey(kvHead: $0), bNope.rows(ropeSplit.nopeGroups[ropeSplit.nopeGroupOfKVHead[$0]])) }
        for h in 0..<nh {
            let j = s.kvHead(ofQueryHead: h)
            let uk = keyUp[j]
            kvB.values.replaceSubrange((h * 2 * hd * rank)..<((h * 2 + 1) * hd * rank), with: uk.values)
            kvB.values.replaceSubrange(((h * 2 + 1) * hd * rank)..<((h + 1) * 2 * hd * rank),
                                       with: bValue.values[(j * hd * rank)..<((j + 1) * hd * rank)])
            let block = ropeSplit.ropeBlock(ropeHead: ropeSplit.ropeHeadOfQueryHead[h], kvHead: j)
            let qh = s.queryHead(h)
            let rows = qh.values + matmul(block, qh).values
            query.values.replaceSubrange((h * qWidth * d)..<((h + 1) * qWidth * d), with: rows.map { $0 * gamma })
            if let qb = s.qBias {
                let bh = Array(qb[(h * hd)..<((h + 1) * hd)])
                let ropeBias = matmul(block, Matrix(rows: hd, cols: 1, values: bh)).values
                queryBias!.replaceSubrange((h * qWidth)..<((h + 1) * qWidth), with: (bh + ropeBias).map { $0 * gamma })
            }
        }
        let kRope = ropeSplit.transform(s.k, rows: 0..<ropeSplit.ropeRows)
        let kRopeBias = s.kBias.map { ropeSplit.transform(Matrix(rows: $0.count, cols: 1, values: $0), rows: 0..<ropeSplit.ropeRows).values }
        // Value bias: rows of p sum to 1, so it moves to o_proj's bias exactly; NoPE key bias is dropped
        // exactly (a constant shift of a score row).
        var oBias = s.oBias
        if let vb = s.vBias {
            var bias = oBias ?? [Double](repeating: 0, count: d)
            for h in 0..<nh {
                let j = s.kvHead(ofQueryHead: h)
                let add = matmul(s.outputHead(h), Matrix(rows: hd, cols: 1, values: Array(vb[(j * hd)..<((j + 1) * hd)]))).values
                bias = zip(bias, add).map(+)
            }
            oBias = bias
        }
        var queryEnergy = 1.0
        let queryForm: MLALayerWeights.Query
        if let qr = options.queryRank {
            guard queryBias == nil else {
                throw MLAError.invalid(layer: "layer \(s.layer)", field: "q_lora_rank", reason: "a low-rank query with a query bias is not supported; omit --q-lora-rank")
            }
            let lowRank = try LowRankQuery(query: query, moment: factorMoment, rank: qr, inputNorm: s.inputNorm)
            queryEnergy = lowRank.energyRetained
            queryForm = lowRank.form
        } else {
            queryForm = .full(proj: narrowed(query.values), bias: queryBias?.map(Float.init))
        }
        let weights = MLALayerWeights(
            label: "model.layers.\(s.layer).self_attn.", hiddenSize: d, numHeads: nh, dNope: hd, dRope: dRope, dV: hd,
            kvRank: rank, nRopeHeads: ropeSplit.nRopeHeads, ropeHeadOfQueryHead: ropeSplit.ropeHeadOfQueryHead, query: queryForm,
            kvA: narrowed(a.values), kvABias: nil, latentNorm: nil, kRope: narrowed(kRope.values),
            kRopeBias: kRopeBias?.map(Float.init), kvB: narrowed(kvB.values), oProj: narrowed(s.o.values),
            oBias: oBias?.map(Float.init), ropeInvFreq: ropeSplit.invFreq, ropeAttentionFactor: attentionFactor,
            softmaxScale: Float(newScale))
        try weights.validate()
        let report = LayerConversionReport(layer: s.layer, kvRank: rank, keptPairs: ropeSplit.keptPairs,
                                           ropeEnergyRetained: ropeSplit.ropeEnergyRetained, kvEnergyRetained: energyRetained(rank: rank),
                                           queryEnergyRetained: queryEnergy, stages: stages)
        return (weights, report)
    }
}
