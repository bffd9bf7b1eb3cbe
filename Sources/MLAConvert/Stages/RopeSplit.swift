import Foundation
import MLALinalg

/// How the key space of a layer splits into rope keys and NoPE coordinates (`docs/method.md` §4.B-C, §5):
/// an orthogonal change of basis of the stacked keys R^{n_kv·d_h} whose first rows are the rope key
/// heads (pairs interleaved) and whose remaining rows are NoPE coordinates.
///
/// Exactness: before any component is moved from RoPE to NoPE the basis change leaves every q·k
/// unchanged (the rotation acts alike on the real and imaginary part of one frequency). Components
/// that become NoPE lose their position dependence; folded components (FreqFold) get a representative
/// frequency. Both are the lossy part, reported by `ropeEnergyRetained`.
public struct RopeSplit: Sendable {
    /// Orthogonal [n_kv·d_h × n_kv·d_h]. Rows [ρ·dRope, (ρ+1)·dRope) are rope head ρ (row 2i real part,
    /// 2i+1 imaginary part of slot i); rows [nRopeHeads·dRope, n_kv·d_h) are the NoPE coordinates.
    /// A permutation basis (partial RoPE) is kept as `sourceRows` and expanded only when asked for.
    public var basis: Matrix<Double> { sourceRows.map(Self.permutation) ?? rotation! }
    /// n_kv·d_h: the rows (and columns) of `basis`.
    public let keyRows: Int
    private let rotation: Matrix<Double>?
    public let nRopeHeads: Int
    /// Rope dims per rope head (2 per slot).
    public let dRope: Int
    /// [n_h]: the rope head of each query head.
    public let ropeHeadOfQueryHead: [Int]
    /// [nRopeHeads][dRope/2]: radians per position of each slot.
    public let invFreq: [[Double]]
    /// [nRopeHeads][dRope/2]: the source pair whose frequency each slot carries.
    public let keptPairs: [[Int]]
    /// Fraction of the key second moment's trace left in rope rows.
    public let ropeEnergyRetained: Double
    /// Per NoPE component (rows 2c, 2c+1 of the NoPE block: real and imaginary part), the share of each
    /// source pair in it (sums to 1): which frequencies the component lost.
    public let nopePairMix: [[Double]]

    /// The NoPE rows split into groups that read disjoint KV heads (partial RoPE: one group per KV
    /// head; RoRoPE: one group, the rotation mixes heads), relative to the first NoPE row. Weights
    /// built from NoPE coordinates are block diagonal along these groups.
    public let nopeGroups: [Range<Int>]
    /// [n_kv]: the NoPE group holding KV head j's coordinates.
    public let nopeGroupOfKVHead: [Int]
    /// For a permutation basis (partial RoPE), the source key row of each basis row: keys are then
    /// gathered instead of multiplied.
    private let sourceRows: [Int]?
    /// [nRopeHeads][n_kv] of `ropeBlock` and [n_kv] of `nopeToKey`, cut from `basis` once (a layer
    /// asks for them once per query head).
    private let ropeBlocks: [[Matrix<Double>]]
    private let nopeToKeyBlocks: [Matrix<Double>]

    public var ropeRows: Int { nRopeHeads * dRope }
    public var nopeRows: Int { keyRows - ropeRows }

    /// Partial RoPE (MHA2MLA): KV head j keeps RoPE on `kept[j]` (source pair indices), one rope head
    /// per KV head; every other coordinate becomes NoPE. No rotation: the basis is a permutation.
    /// - `keyEnergy` [n_kv·d_h]: E[k_i²] of the stacked source keys (the diagonal of their second moment).
    public static func partial(source s: SourceLayer, kept: [[Int]], invFreq: [Double], keyEnergy: [Double]) -> RopeSplit {
        let pairs = kept.first?.count ?? 0
        var used = Set<Int>()
        var sourceRows: [Int] = []
        var row = 0
        for j in 0..<s.numKVHeads {
            for l in kept[j] {
                for t in 0..<2 {
                    let col = s.keyRow(kvHead: j, pair: l, part: t)
                    sourceRows.append(col)
                    used.insert(col)
                    row += 1
                }
            }
        }
        let ropeRows = row
        var mix: [[Double]] = []
        var groups: [Range<Int>] = []
        for j in 0..<s.numKVHeads {
            let first = row - ropeRows
            for l in 0..<s.pairs where !used.contains(s.keyRow(kvHead: j, pair: l, part: 0)) {
                for t in 0..<2 {
                    sourceRows.append(s.keyRow(kvHead: j, pair: l, part: t))
                    row += 1
                }
                mix.append((0..<s.pairs).map { $0 == l ? 1 : 0 })
            }
            groups.append(first..<(row - ropeRows))
        }
        let total = keyEnergy.reduce(0, +)
        let ropeEnergy = total > 0 ? sourceRows[..<ropeRows].reduce(0.0) { $0 + keyEnergy[$1] } / total : 1
        return RopeSplit(basis: permutation(sourceRows), sourceRows: sourceRows, nRopeHeads: s.numKVHeads, dRope: 2 * pairs,
                         ropeHeadOfQueryHead: (0..<s.numHeads).map(s.kvHead(ofQueryHead:)),
                         invFreq: kept.map { $0.map { invFreq[$0] } }, keptPairs: kept, nopePairMix: mix,
                         nopeGroups: groups, nopeGroupOfKVHead: Array(0..<s.numKVHeads), ropeEnergyRetained: ropeEnergy, headDim: s.headDim)
    }

    /// RoRoPE with FreqFold (TransMLA): one shared rope head of `dRope` dims keeping the source pairs
    /// l = stride·i (i < dRope/2). Pairs are grouped `fold` at a time (fold = 1: one pair per group,
    /// exact rotation); in each group a PCA of the key coordinates of all KV heads (real and imaginary
    /// parts alike, from `keyMoment` = E[k kᵀ] of the stacked source keys) orders the components, and the
    /// group's kept slots take its leading components, slot i at the frequency of pair stride·i.
    /// Requires fold to divide d_h/2 and stride·(dRope/2) ≤ d_h/2.
    public static func rotated(source s: SourceLayer, dRope: Int, stride: Int, fold: Int, invFreq: [Double],
                               keyMoment: Matrix<Double>) throws -> RopeSplit {
        let nkv = s.numKVHeads, pairs = s.pairs, n = nkv * s.headDim, slots = dRope / 2
        precondition(pairs % fold == 0 && stride * slots <= pairs && dRope % 2 == 0, "RopeSplit.rotated: invalid fold/stride")
        var basis = Matrix<Double>.zeros(n, n)
        var nopeRows: [[Double]] = []
        var mix: [[Double]] = []
        var slotPairs = [Int](repeating: 0, count: slots)
        for g in 0..<(pairs / fold) {
            let group = Array((g * fold)..<((g + 1) * fold))
            // Coordinates (j, l) of the group; the moment sums the real-part and imaginary-part blocks.
            let coords = (0..<nkv).flatMap { j in group.map { (j, $0) } }
            let m = coords.count
            var moment = Matrix<Double>.zeros(m, m)
            for a in 0..<m {
                for b in 0..<m {
                    var sum = 0.0
                    for t in 0..<2 {
                        sum += keyMoment[s.keyRow(kvHead: coords[a].0, pair: coords[a].1, part: t),
                                         s.keyRow(kvHead: coords[b].0, pair: coords[b].1, part: t)]
                    }
                    moment[a, b] = sum
                }
            }
            let vectors = try symmetricEigen(moment).vectors
            let groupSlots = (0..<slots).filter { group.contains(stride * $0) }
            for component in 0..<m {
                var rows = [[Double]](repeating: [Double](repeating: 0, count: n), count: 2)
                for a in 0..<m {
                    for t in 0..<2 { rows[t][s.keyRow(kvHead: coords[a].0, pair: coords[a].1, part: t)] = vectors[a, component] }
                }
                if component < groupSlots.count {
                    let slot = groupSlots[component]
                    slotPairs[slot] = stride * slot
                    for t in 0..<2 { basis.values.replaceSubrange(((2 * slot + t) * n)..<((2 * slot + t + 1) * n), with: rows[t]) }
                } else {
                    nopeRows += rows
                    var weights = [Double](repeating: 0, count: pairs)
                    for a in 0..<m { weights[coords[a].1] += vectors[a, component] * vectors[a, component] }
                    mix.append(weights)
                }
            }
        }
        for (i, row) in nopeRows.enumerated() {
            basis.values.replaceSubrange(((dRope + i) * n)..<((dRope + i + 1) * n), with: row)
        }
        let total = trace(keyMoment)
        let ropeEnergy = total > 0 ? trace(outputMoment(basis.rows(0..<dRope), keyMoment)) / total : 1
        return RopeSplit(basis: basis, sourceRows: nil, nRopeHeads: 1, dRope: dRope, ropeHeadOfQueryHead: Array(repeating: 0, count: s.numHeads),
                         invFreq: [slotPairs.map { invFreq[$0] }], keptPairs: [slotPairs], nopePairMix: mix,
                         nopeGroups: [0..<(n - dRope)], nopeGroupOfKVHead: Array(repeating: 0, count: nkv),
                         ropeEnergyRetained: ropeEnergy, headDim: s.headDim)
    }

    private init(basis: Matrix<Double>, sourceRows: [Int]?, nRopeHeads: Int, dRope: Int, ropeHeadOfQueryHead: [Int], invFreq: [[Double]],
                 keptPairs: [[Int]], nopePairMix: [[Double]], nopeGroups: [Range<Int>], nopeGroupOfKVHead: [Int],
                 ropeEnergyRetained: Double, headDim: Int) {
        self.nopePairMix = nopePairMix
        rotation = sourceRows == nil ? basis : nil
        keyRows = basis.rows
        self.sourceRows = sourceRows
        self.nopeGroups = nopeGroups
        self.nopeGroupOfKVHead = nopeGroupOfKVHead
        self.ropeEnergyRetained = ropeEnergyRetained
        self.nRopeHeads = nRopeHeads
        self.dRope = dRope
        self.ropeHeadOfQueryHead = ropeHeadOfQueryHead
        self.invFreq = invFreq
        self.keptPairs = keptPairs
        let ropeBasis = basis.rows(0..<(nRopeHeads * dRope)), nopeBasis = basis.rows((nRopeHeads * dRope)..<basis.rows)
        let kvHeads = basis.cols / headDim
        ropeBlocks = (0..<nRopeHeads).map { rho in
            let rows = ropeBasis.rows((rho * dRope)..<((rho + 1) * dRope))
            return (0..<kvHeads).map { rows.columns(($0 * headDim)..<(($0 + 1) * headDim)) }
        }
        nopeToKeyBlocks = (0..<kvHeads).map { j in
            nopeBasis.rows(nopeGroups[nopeGroupOfKVHead[j]]).columns((j * headDim)..<((j + 1) * headDim)).transposed
        }
    }

    /// The permutation matrix P with P[r, sourceRows[r]] = 1, [n × n].
    private static func permutation(_ sourceRows: [Int]) -> Matrix<Double> {
        var p = Matrix<Double>.zeros(sourceRows.count, sourceRows.count)
        for (r, c) in sourceRows.enumerated() { p[r, c] = 1 }
        return p
    }

    /// Rows `rows` of the basis times `w` [n_kv·d_h × m] (the stacked keys' weights or bias): the rope
    /// keys (rows ..< ropeRows) or NoPE coordinates of `w`. A permutation basis gathers rows.
    public func transform(_ w: Matrix<Double>, rows: Range<Int>) -> Matrix<Double> {
        guard let sourceRows else { return matmul(rotation!.rows(rows), w) }
        var out = Matrix<Double>.zeros(rows.count, w.cols)
        for (i, r) in rows.enumerated() {
            out.values.replaceSubrange((i * w.cols)..<((i + 1) * w.cols), with: w.values[(sourceRows[r] * w.cols)..<((sourceRows[r] + 1) * w.cols)])
        }
        return out
    }

    /// Rope head ρ's rows of the basis restricted to KV head j's coordinates: [dRope × d_h]. The rope
    /// query of a query head h in group j is this times q_h.
    public func ropeBlock(ropeHead rho: Int, kvHead j: Int) -> Matrix<Double> { ropeBlocks[rho][j] }

    /// N_j = E_j R_Nᵀ restricted to the NoPE group of KV head j, [d_h × nopeGroups[g].count]: maps that
    /// group's NoPE coordinates back to KV head j's key (in source order); other groups do not reach it.
    public func nopeToKey(kvHead j: Int) -> Matrix<Double> { nopeToKeyBlocks[j] }
}
