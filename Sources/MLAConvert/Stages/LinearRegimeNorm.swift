import Foundation
import MLALinalg

/// An RMSNorm that does not change the model (`docs/method.md` §8.b): the norm weight is w = 2^k and the
/// rows feeding it are stored times s = √ε·2^-k, so RMSNorm_ε(s·(Ax + a)) = (Ax + a)(1 − δ) with
/// δ ≤ u = 2^-24 for every input the layer can see. Used for DeepSeek's kv_a_layernorm and q_a_layernorm.
public struct LinearRegimeNorm: Sendable {
    /// The exponent k and the bound K ≥ ‖Ax + a‖ over all attention inputs.
    public let exponent: Int
    public let bound: Double
    public let eps: Double

    /// f32 unit roundoff.
    public static let unitRoundoff: Double = 0x1p-24

    /// - `rows` A [r × d], `bias` a [r]?, `inputNorm` γ_n [d] (the attention input is γ_n ⊙ x̂ with ‖x̂‖² < d);
    /// - `maxDeviation`: the bound on δ the exponent must reach (default the f32 unit roundoff).
    public init(rows: Matrix<Double>, bias: [Double]?, inputNorm: [Double], eps: Double, maxDeviation: Double = unitRoundoff) throws {
        var scaled = rows
        for r in 0..<rows.rows { for c in 0..<rows.cols { scaled[r, c] *= inputNorm[c] } }
        let sigmaMax = rows.rows == 0 ? 0 : try truncatedSVD(scaled, rank: 1).s[0]
        let biasNorm = (bias ?? []).reduce(0) { $0 + $1 * $1 }.squareRoot()
        bound = sigmaMax * Double(rows.cols).squareRoot() + biasNorm
        self.eps = eps
        let ratio = bound / (2 * Double(max(rows.rows, 1)) * maxDeviation).squareRoot()
        exponent = max(0, Int(ceil(log2(max(ratio, 1)))))
    }

    /// The norm weight 2^k (exact in BF16 and F32).
    public var weight: Double { pow(2, Double(exponent)) }
    /// The factor s = √ε·2^-k for the rows and bias.
    public var rowScale: Double { eps.squareRoot() / weight }
    /// The bound K²/(2·r·4^k) on the relative deviation δ from the identity (≤ u by construction).
    public func maxDeviation(rank: Int) -> Double { bound * bound / (2 * Double(rank) * weight * weight) }
}
