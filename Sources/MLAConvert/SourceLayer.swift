import MLACheckpoint
import MLALinalg

/// One source attention layer (MHA/GQA/MQA) in float64, as the HF checkpoint stores it: rotate-half
/// RoPE rows, weights `[out, in]`. Symbols as in `docs/method.md` §1: d, n_h, n_kv, d_h, P = d_h/2.
public struct SourceLayer: Sendable {
    public let layer: Int
    public let hiddenSize: Int, numHeads: Int, numKVHeads: Int, headDim: Int
    /// W_q [n_h·d_h, d], W_k and W_v [n_kv·d_h, d], W_o [d, n_h·d_h].
    public let q: Matrix<Double>, k: Matrix<Double>, v: Matrix<Double>, o: Matrix<Double>
    /// Biases [n_h·d_h], [n_kv·d_h], [n_kv·d_h], [d] when the model has them.
    public let qBias: [Double]?, kBias: [Double]?, vBias: [Double]?, oBias: [Double]?
    /// The input RMSNorm weight γ_n [d] (bounds the attention input for the latent norm, §8.b).
    public let inputNorm: [Double]

    public var groupSize: Int { numHeads / numKVHeads }
    public var pairs: Int { headDim / 2 }
    /// The KV head j(h) of query head h.
    public func kvHead(ofQueryHead h: Int) -> Int { h / groupSize }
    /// Row of W_k (or W_v) holding the real (t = 0) or imaginary (t = 1) part of pair `pair` of KV head `j`.
    public func keyRow(kvHead j: Int, pair: Int, part t: Int) -> Int { j * headDim + pair + t * pairs }

    public init(config c: ModelConfig, store: any TensorStore, layer: Int) throws {
        let n = LayerTensorNames(layer: layer)
        let d = c.hiddenSize, hd = c.headDim, nh = c.numHeads, nkv = c.numKVHeads
        func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> Matrix<Double> {
            let values = widened(try store.floats(name, shape: rows == 1 ? [cols] : [rows, cols]))
            guard let bad = values.firstIndex(where: { !$0.isFinite }) else { return Matrix(rows: rows, cols: cols, values: values) }
            throw CheckpointError.malformedTensor(file: store.info(name)?.file ?? "<store>", tensor: name,
                                                  reason: "holds a non-finite value at row \(bad / cols), column \(bad % cols); the checkpoint is damaged")
        }
        func vector(_ name: String, _ count: Int, present: Bool) throws -> [Double]? {
            guard present, store.contains(name) else { return nil }
            return try matrix(name, 1, count).values
        }
        self.layer = layer
        hiddenSize = d
        numHeads = nh
        numKVHeads = nkv
        headDim = hd
        q = try matrix(n.qProj, nh * hd, d)
        k = try matrix(n.kProj, nkv * hd, d)
        v = try matrix(n.vProj, nkv * hd, d)
        o = try matrix(n.oProj, d, nh * hd)
        qBias = try vector(n.qBias, nh * hd, present: c.qkvBias)
        kBias = try vector(n.kBias, nkv * hd, present: c.qkvBias)
        vBias = try vector(n.vBias, nkv * hd, present: c.qkvBias)
        oBias = try vector(n.oBias, d, present: c.outputBias)
        inputNorm = try matrix(n.inputNorm, 1, d).values
    }

    /// Rows [h·d_h, (h+1)·d_h) of W_q: query head h.
    public func queryHead(_ h: Int) -> Matrix<Double> { q.rows((h * headDim)..<((h + 1) * headDim)) }
    /// Columns [h·d_h, (h+1)·d_h) of W_o: what head h's output writes to the residual stream.
    public func outputHead(_ h: Int) -> Matrix<Double> { o.columns((h * headDim)..<((h + 1) * headDim)) }
}

/// Second moments of linear maps of the attention input: W C Wᵀ = E[(Wx)(Wx)ᵀ], with C = E[x xᵀ]
/// from calibration, or C = I (weights only) when `c` is nil. Biases are left out (they only weight).
public func outputMoment(_ w: Matrix<Double>, _ c: Matrix<Double>?) -> Matrix<Double> {
    guard let c else { return matmul(w, w, transB: true) }
    return matmul(matmul(w, c), w, transB: true)
}

/// The diagonal of `outputMoment(w, c)`, E[(Wx)_i²] [rows of w], without the off-diagonal products:
/// row norms of W (weights only) or of (W C) ∘ W.
public func momentDiagonal(_ w: Matrix<Double>, _ c: Matrix<Double>?) -> [Double] {
    let wc = c.map { matmul(w, $0) } ?? w
    return (0..<w.rows).map { r in (0..<w.cols).reduce(0.0) { $0 + wc[r, $1] * w[r, $1] } }
}
