import MLALinalg

/// Which frequency pairs each KV head keeps with RoPE in MHA2MLA's partial RoPE (`docs/method.md` §5).
public enum PartialRopeStrategy: String, Sendable, CaseIterable {
    /// Pairs 0 ..< r (the fastest-turning).
    case high
    /// The r slowest pairs.
    case low
    /// Every (P/r)-th pair from the start offset: pairs start + ⌊k·P/r⌋, the last within the head
    /// (`ModelConversion.checkPlan`).
    case uniform
    /// Per KV head, the r pairs with the largest query·key norm from calibration.
    case twoNorm = "2-norm"
    /// RoRoPE across KV heads, one shared rope head of r pairs (the gqa2mla rope stage).
    case rorope
}

/// How 2-norm combines a pair's query and key norms: MHA2MLA's paper multiplies them, its early code added.
public enum NormCombination: String, Sendable, CaseIterable {
    case product, sum
}

/// Pair selection for the per-KV-head strategies (all but `rorope`).
public enum PartialRope {
    /// The kept pairs of every KV head, ascending: [n_kv][pairs].
    /// - `keyEnergy` [n_kv·d_h]: E[k_i²] of the stacked source keys, `queryEnergy()[h]` [d_h]: E[q_h,i²]
    ///   (only 2-norm reads them; RMS norms stand in for mean norms, which C cannot give).
    public static func keptPairs(strategy: PartialRopeStrategy, pairs r: Int, start: Int, combination: NormCombination,
                                 source s: SourceLayer, keyEnergy: [Double], queryEnergy: () -> [[Double]]) -> [[Int]] {
        let p = s.pairs
        switch strategy {
        case .high, .rorope:
            return Array(repeating: Array(0..<r), count: s.numKVHeads)
        case .low:
            return Array(repeating: Array((p - r)..<p), count: s.numKVHeads)
        case .uniform:
            return Array(repeating: (0..<r).map { start + $0 * p / r }, count: s.numKVHeads)
        case .twoNorm:
            let queryEnergy = queryEnergy()
            return (0..<s.numKVHeads).map { j in
                let score = (0..<p).map { l -> Double in
                    let k = (keyEnergy[s.keyRow(kvHead: j, pair: l, part: 0)] + keyEnergy[s.keyRow(kvHead: j, pair: l, part: 1)]).squareRoot()
                    return (0..<s.numHeads).filter { s.kvHead(ofQueryHead: $0) == j }.reduce(0.0) { sum, h in
                        let q = (queryEnergy[h][l] + queryEnergy[h][l + p]).squareRoot()
                        return sum + (combination == .product ? q * k : q + k)
                    }
                }
                return Array((0..<p).sorted { score[$0] > score[$1] }.prefix(r)).sorted()
            }
        }
    }
}
