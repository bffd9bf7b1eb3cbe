import ArgumentParser
import Foundation
import MLACLI
import MLALinalg

extension Bench {
    struct Eig: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Top-r eigenpairs of S = W·Wᵀ: full syevd vs partial syevr vs randomized, time and accuracy.",
            discussion: """
            W [n × d] is a synthetic weight matrix (the generator of `synth`), so S has the decaying spectrum of \
            the converters' S = W·C·Wᵀ; n = 1024, 2048, 4096, 8192 with d = 4096 are the k_proj and stacked \
            k/v_proj heights of Llama-3-8B and Llama-2-7B. Accuracy is the captured energy Σ vᵢᵀ·S·vᵢ of each \
            method's vectors relative to syevd's top-r eigenvalue sum. F32, as the converters hold weights.
            """)
        @Option(parsing: .upToNextOption, help: "Heights n of W, one measurement each.") var sizes = [1024, 2048, 4096, 8192]
        @Option(help: "Eigenvectors r wanted (the top r).") var rank = 512
        @Option(help: "Columns d of W.") var cols = 4096
        @Option(parsing: .upToNextOption, help: "full, partial, randomized.") var methods = ["full", "partial", "randomized"]
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard sizes.allSatisfy({ $0 >= rank }), rank >= 1 else { throw ValidationError("--rank must be in 1...min(--sizes)") }
            guard methods.allSatisfy(["full", "partial", "randomized"].contains) else {
                throw ValidationError("--methods: full, partial or randomized")
            }
        }

        func run() throws {
            runtime.apply()
            let d = cols
            for n in sizes {
                var w = Matrix<Float>.zeros(n, d)
                w.values.withUnsafeMutableBufferPointer { wp in
                    SyntheticWeights().matrix(rows: n, cols: d, rng: SplitMix64(seed: UInt64(n))) { first, values in
                        _ = UnsafeMutableBufferPointer(rebasing: wp[(first * d)...]).initialize(from: values)
                    }
                }
                let s = matmul(w, w, transB: true)
                var line = "n \(n), r \(rank) (automatic: \(EigenMethod.automatic(n: n, rank: rank).name)):"
                var exact: Double?
                for name in methods {
                    let method: EigenMethod = [EigenMethod.full, .partial, .randomized(rank: rank)].first { $0.name == name }!
                    let t0 = MonotonicClock.now()
                    let (values, vectors) = try topEigen(s, rank: rank, method: method)
                    let seconds = MonotonicClock.now() - t0
                    let captured = Self.capturedEnergy(s, vectors)
                    if name == "full" { exact = values.reduce(0) { $0 + Double($1) } }
                    line += String(format: "  %@ %.2f s", name, seconds)
                    if let exact, name != "full" { line += String(format: " (energy error %.1e)", (exact - captured) / exact) }
                }
                print(line)
            }
        }

        /// Σ vᵢᵀ·S·vᵢ over the columns of `v` (accumulated in Double).
        static func capturedEnergy(_ s: Matrix<Float>, _ v: Matrix<Float>) -> Double {
            zip(v.values, matmul(s, v).values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
    }
}

extension EigenMethod {
    /// The name `mla-bench eig --methods` uses.
    var name: String {
        switch self {
        case .full: return "full"
        case .partial: return "partial"
        case .randomized: return "randomized"
        }
    }
}
