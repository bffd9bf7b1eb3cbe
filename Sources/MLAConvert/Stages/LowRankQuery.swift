import MLALinalg
import MLARuntime

/// The low-rank query path (`docs/method.md` §7): output PCA of the final query weights Q under C,
/// q = B_q · RMSNorm(A_q x) with a linear-regime norm, so only the rank truncation changes the model.
struct LowRankQuery {
    let form: MLALayerWeights.Query
    let energyRetained: Double

    /// Norm eps written with the query path (DeepSeek-V3 in HF uses this constant).
    static let eps = 1e-6

    init(query: Matrix<Double>, moment: Matrix<Double>?, rank: Int, inputNorm: [Double]) throws {
        guard rank >= 1, rank <= min(query.rows, query.cols) else {
            throw MLAError.invalid(layer: "query", field: "q_lora_rank", reason: "\(rank) is outside 1...\(min(query.rows, query.cols)) (query rows, hidden size)")
        }
        let (lambda, ur) = try symmetricEigen(outputMoment(query, moment), vectors: rank)
        let a = matmul(ur, query, transA: true)
        let norm = try LinearRegimeNorm(rows: a, bias: nil, inputNorm: inputNorm, eps: Self.eps)
        let positive = lambda.map { max($0, 0) }
        let total = positive.reduce(0, +)
        energyRetained = total > 0 ? positive.prefix(rank).reduce(0, +) / total : 1
        form = .lowRank(rank: rank, a: a.values.map { Float($0 * norm.rowScale) }, aBias: nil,
                        norm: [Float](repeating: Float(norm.weight), count: rank), eps: Float(Self.eps),
                        b: ur.values.map(Float.init))
    }
}
