import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLAConvert
import MLALinalg
import MLARuntime
import MLATensor

/// Benchmarks whose numbers go into docs/performance.md (scripts/bench runs them all).
@main
struct Bench: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "mla-bench",
        abstract: "Measure open, GEMM and forward-pass speed and memory on this machine.",
        version: ToolkitVersion.string,
        subcommands: [Open.self, GEMM.self, Forward.self, Decode.self, Synth.self, SynthStats.self, Eig.self, Layer.self, ConcurrencyCheck.self, Fuzz.self])
}

extension Bench {
    struct Open: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Time to open a checkpoint and read one tensor, and the memory it costs.")
        @Argument(help: "The checkpoint to open (HF directory, .safetensors, GGUF or HDF5).") var model: String
        @Option(help: "Tensor to read.") var tensor = "model.layers.0.self_attn.k_proj.weight"

        func run() throws {
            let rss0 = ResourceUsage.residentBytes
            let t0 = MonotonicClock.now()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let t1 = MonotonicClock.now()
            let values = try checkpoint.store.tensor(tensor).floats()
            let t2 = MonotonicClock.now()
            let rss1 = ResourceUsage.residentBytes
            print(String(format: "open %.2f ms, read %@ (%d values) %.2f ms, RSS +%@",
                         (t1 - t0) * 1e3, tensor, values.count, (t2 - t1) * 1e3, formatBytes(rss1 - rss0)))
        }
    }

    struct GEMM: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GEMM rate (single precision, or --double): n³ (the machine's reference) or given shapes.",
            discussion: "--shape M,N,K times C[M×N] = A[M×K]·B[N×K]ᵀ, the layout of a linear layer on M tokens.")
        @Option(help: "n of the square n³ product (the machine's reference rate in docs/performance.md).") var size = 2048
        @Option(parsing: .upToNextOption, help: "Shapes M,N,K (several allowed) instead of --size.")
        var shape: [String] = []
        @Flag(help: "Double precision (the converters' factorizations) instead of single.") var double = false
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            var shapes: [(Int, Int, Int)] = []
            for text in shape {
                let parts = text.split(separator: ",").compactMap { Int($0) }
                guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--shape '\(text)' is not M,N,K") }
                shapes.append((parts[0], parts[1], parts[2]))
            }
            if shapes.isEmpty { shapes = [(size, size, size)] }
            for (m, n, k) in shapes {
                let before = FlopCount.totals
                let best = double ? Self.time(Double.self, m, n, k) : Self.time(Float.self, m, n, k)
                let counted = FlopCount.totals.since(before)
                let label = m == n && n == k ? "\(m)^3" : "\(m)x\(n)x\(k)"
                // The counted work of the 3 timed runs, as `FlopCount` (the conversions' work_flops) sees it.
                let spin = BLASIdleThreads.spinExponent.map { ", idle threads spin 2^\($0) cycles" } ?? ""
                print(String(format: "%@gemm %@: %.2f ms, %.1f GFLOP/s (%d BLAS threads, OpenBLAS %@ kernels%@); counted %.0f F32 + %.0f F64 flops",
                             double ? "d" : "s", label, best * 1e3, 2 * Double(m) * Double(n) * Double(k) / best / 1e9, BLASThreads.current,
                             BLASKernel.current, spin, counted.single, counted.double))
            }
        }

        /// Best of 3 seconds for C[m×n] = A[m×k]·B[n×k]ᵀ.
        static func time<T: LinalgScalar>(_: T.Type, _ m: Int, _ n: Int, _ k: Int) -> Double {
            let a = [T](repeating: 0.5, count: m * k), b = [T](repeating: 0.25, count: n * k)
            var c = [T](repeating: 0, count: m * n)
            var best = Double.infinity
            for _ in 0..<3 {
                let t0 = MonotonicClock.now()
                T.gemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: k, beta: 0, c: &c, ldc: n)
                best = min(best, MonotonicClock.now() - t0)
            }
            return best
        }
    }

    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forward-pass throughput on windows of the sample text.")
        @Argument(help: "The model to run (a GQA or MHA source checkpoint).") var model: String
        @Option(help: "Tokens per window.") var window = 512
        @Option(help: "Windows per batch for the batched and calibration measurements (calibration batches 2048 tokens).")
        var batch = 4
        @Option(help: "Timed runs of each measurement; the best is printed.") var repeats = 3
        @Option(help: "Calibration workers for the last measurement (one BLAS thread each).")
        var workers = 2
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let t0 = MonotonicClock.now()
            let decoder = try DecoderModel(config: checkpoint.config, store: checkpoint.store)
            let load = MonotonicClock.now() - t0
            let c = checkpoint.config
            let windows = (0..<batch).map { w in (0..<window).map { ($0 * 7919 + w * 104729) % c.vocabSize } }
            func best(_ body: () throws -> Void) rethrows -> Double {
                var best = Double.infinity
                for _ in 0..<repeats {
                    let t = MonotonicClock.now()
                    try body()
                    best = min(best, MonotonicClock.now() - t)
                }
                return best
            }
            let logits = try best { _ = try decoder.logits(windows[0]) }
            let hidden = try best { _ = try decoder.hiddenStates(windows[0]) }
            let batched = try best { _ = try decoder.hiddenStates(batch: windows) }
            let calibration = try best { _ = try collectCalibration(model: decoder, windows: windows, batchTokens: batch * window) }
            let parallel = try best { _ = try collectCalibration(model: decoder, windows: windows, workers: workers) }
            // Matmul FLOPs per token without the LM head: 2·(q,k,v,o + MLP) + attention (2·T/2·2·nh·dh on average).
            let d = Double(c.hiddenSize), q = Double(c.numHeads * c.headDim), kv = Double(c.numKVHeads * c.headDim)
            let perToken = 2 * (d * (q + 2 * kv) + q * d + 3 * d * Double(c.intermediateSize)) * Double(c.numLayers)
                + 2 * Double(window) * q * Double(c.numLayers)
            let head = 2 * d * Double(c.vocabSize)
            func rate(_ tokens: Int, _ seconds: Double) -> String {
                String(format: "%.3f s (%.0f tokens/s, %.1f GFLOP/s)", seconds, Double(tokens) / seconds, perToken * Double(tokens) / seconds / 1e9)
            }
            print(String(format: "load %.2f s; %.3f GFLOP/token of layers at window %d, LM head %.3f GFLOP/token", load, perToken / 1e9, window, head / 1e9))
            print(String(format: "  one window: logits %.3f s (%.0f tokens/s); layers only ", logits, Double(window) / logits) + rate(window, hidden))
            print("  \(batch) windows as one batch: layers only " + rate(batch * window, batched))
            print("  calibration of the batch (layers + second moments, last layer's input norm only): " + rate(batch * window, calibration))
            print("  calibration of the \(batch) windows on \(workers) workers × 1 BLAS thread: " + rate(batch * window, parallel))
            print("  peak RSS " + formatBytes(ResourceUsage.peakResidentBytes))
        }
    }
}

extension Bench {
    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "MLA decode speed and cache memory, absorbed vs naive, at several context lengths.",
            discussion: """
            The model is the exact head merge of MODEL (a GQA source) into MLA: latent r = n_kv·d_h plus n_kv rope \
            key heads of d_h. Caches are filled with random latents of the right size (decode cost does not depend \
            on their values), then new tokens are decoded one at a time through the whole model.
            """)
        @Argument(help: "The GQA source model whose exact head merge is decoded.") var model: String
        @Option(parsing: .upToNextOption, help: "Context lengths (tokens already cached) to decode at.") var contexts: [Int] = [512, 2048, 8192]
        @Option(help: "Tokens decoded per measurement.") var steps = 8
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let c = checkpoint.config
            let layers = try (0..<c.numLayers).map { try MLALayerWeights.headMerge(c, checkpoint.store, layer: $0) }
            var rng = SystemRandomNumberGenerator()
            for context in contexts {
                var line = "context \(context):"
                for form in [MLAAttention.Form.absorbed, .naive] {
                    let decoder = try DecoderModel(config: c, store: checkpoint.store,
                                                   attention: layers.map { MLAAttentionBlock(weights: $0, form: form) })
                    var caches = decoder.mlaCaches() ?? []
                    for (i, layer) in layers.enumerated() {
                        let latent = (0..<(context * layer.kvRank)).map { _ in Float.random(in: -1...1, using: &rng) }
                        let keys = (0..<(context * layer.nRopeHeads * layer.dRope)).map { _ in Float.random(in: -1...1, using: &rng) }
                        try caches[i].append(latent: latent, ropeKeys: keys, tokens: context)
                    }
                    let n = form == .naive && context > 2048 ? max(2, steps / 4) : steps
                    let t0 = MonotonicClock.now()
                    for s in 0..<n { _ = try decoder.decode([(s * 131) % c.vocabSize], caches: &caches) }
                    let perToken = (MonotonicClock.now() - t0) / Double(n)
                    let cacheBytes = caches.reduce(0) { $0 + $1.bytes }
                    let expanded = (context + n) * c.numLayers * c.numHeads * (layers[0].qHeadWidth + layers[0].dV) * 4
                    line += String(format: "  %@ %.1f ms/token (%.1f tokens/s)", form == .absorbed ? "absorbed" : "naive",
                                   perToken * 1e3, 1 / perToken)
                    if form == .absorbed {
                        line += String(format: ", latent cache %@ (per-head K/V cache would be %@)", formatBytes(cacheBytes), formatBytes(expanded))
                    }
                }
                print(line)
            }
        }
    }
}

extension Bench {
    struct Layer: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time one layer's gqa2mla (or, with --rope-pairs, mha2mla) conversion (read, rank-independent work, weights at a rank) and its memory.",
            discussion: "Weights only (C = I) unless --with-moment is given; the cost does not depend on C's values.")
        @Argument(help: "The source model whose layer is converted.") var model: String
        @Option(help: "Layer index.") var layer = 0
        @Option(help: "Latent rank kv_lora_rank of the weights made.") var rank = 512
        @Option(help: "Shared rope key dims (default min(64, head_dim)).") var ropeDim: Int?
        @Option(help: "Time mha2mla's partial RoPE instead: this many highest-frequency pairs per KV head (strategy high).")
        var ropePairs: Int?
        @Flag(help: "Use a calibration-like moment (identity) so the activation-aware path is timed.") var withMoment = false
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let c = checkpoint.config
            let rope: RopePlan = ropePairs.map { .partial(strategy: .high, pairs: $0, start: 0, combination: .product) }
                ?? .shared(dims: ropeDim ?? min(64, c.headDim), stride: 1, fold: 1)
            let options = LayerConversionOptions(ropePlan: rope,
                                                 weighting: LatentWeighting(keys: .plain, values: .output), foldSoftmaxScale: true)
            guard (0..<c.numLayers).contains(layer) else { throw ValidationError("--layer \(layer): \(model) has layers 0..<\(c.numLayers)") }
            do {
                try ModelConversion.checkPlan(config: c, options: options, budget: .rank(rank))
            } catch let refusal as ConversionPlanError {
                throw ValidationError("\(model): \(refusal)")
            }
            let moment: Matrix<Double>? = withMoment ? .identity(c.hiddenSize) : nil
            var t = MonotonicClock.now()
            let source = try SourceLayer(config: c, store: checkpoint.store, layer: layer)
            let read = MonotonicClock.now() - t
            t = MonotonicClock.now()
            let conversion = try LayerConversion(source: source, moment: moment, frequencies: RopeFrequencies(config: c), options: options,
                                                 upToRank: rank)
            let prepare = MonotonicClock.now() - t
            var cut = Double.infinity
            for _ in 0..<3 {
                t = MonotonicClock.now()
                _ = try conversion.weights(rank: rank)
                cut = min(cut, MonotonicClock.now() - t)
            }
            print(String(format: "layer %d: read %.2f s, rank-independent work %.2f s, weights at rank %d %.2f s (best of 3); peak RSS %@",
                         layer, read, prepare, rank, cut, formatBytes(ResourceUsage.peakResidentBytes)))
        }
    }
}
