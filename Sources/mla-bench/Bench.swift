import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

/// Benchmarks whose numbers go into docs/performance.md (scripts/bench runs them all).
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mla-bench",
        abstract: "Measure open, GEMM and forward-pass speed and memory on this machine.",
        subcommands: [Open.self, GEMM.self, Forward.self])
}

extension Bench {
    struct Open: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Time to open a checkpoint and read one tensor, and the memory it costs.")
        @Argument var model: String
        @Option(help: "Tensor to read.") var tensor = "model.layers.0.self_attn.k_proj.weight"

        func run() throws {
            let rss0 = ResourceUsage.residentBytes
            let t0 = MonotonicClock.now()
            let checkpoint = try Checkpoint.open(model)
            let t1 = MonotonicClock.now()
            let values = try checkpoint.store.tensor(tensor).floats()
            let t2 = MonotonicClock.now()
            let rss1 = ResourceUsage.residentBytes
            print(String(format: "open %.2f ms, read %@ (%d values) %.2f ms, RSS +%@",
                         (t1 - t0) * 1e3, tensor, values.count, (t2 - t1) * 1e3, formatBytes(rss1 - rss0)))
        }
    }

    struct GEMM: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Large single-precision GEMM rate (the machine's reference).")
        @Option var size = 2048
        @OptionGroup var runtime: RuntimeOptions

        func run() {
            runtime.apply()
            let n = size
            let a = [Float](repeating: 0.5, count: n * n), b = a
            var c = [Float](repeating: 0, count: n * n)
            var best = Double.infinity
            for _ in 0..<3 {
                let t0 = MonotonicClock.now()
                Float.gemm(transA: false, transB: true, m: n, n: n, k: n, alpha: 1, a: a, lda: n, b: b, ldb: n, beta: 0, c: &c, ldc: n)
                best = min(best, MonotonicClock.now() - t0)
            }
            print(String(format: "sgemm %d^3: %.1f ms, %.1f GFLOP/s (%d BLAS threads)", n, best * 1e3,
                         2 * pow(Double(n), 3) / best / 1e9, BLASThreads.current))
        }
    }

    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forward-pass throughput on windows of the sample text.")
        @Argument var model: String
        @Option var window = 512
        @Option var repeats = 3
        @OptionGroup var runtime: RuntimeOptions

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.open(model)
            let t0 = MonotonicClock.now()
            let decoder = try DecoderModel(config: checkpoint.config, store: checkpoint.store)
            let load = MonotonicClock.now() - t0
            let c = checkpoint.config
            let tokens = (0..<window).map { ($0 * 7919) % c.vocabSize }
            var bestLogits = Double.infinity, bestHidden = Double.infinity
            for _ in 0..<repeats {
                var t = MonotonicClock.now()
                _ = try decoder.logits(tokens)
                bestLogits = min(bestLogits, MonotonicClock.now() - t)
                t = MonotonicClock.now()
                _ = try decoder.hiddenStates(tokens)
                bestHidden = min(bestHidden, MonotonicClock.now() - t)
            }
            // Matmul FLOPs per token without the LM head: 2·(q,k,v,o + MLP) + attention (2·T/2·2·nh·dh on average).
            let d = Double(c.hiddenSize), q = Double(c.numHeads * c.headDim), kv = Double(c.numKVHeads * c.headDim)
            let perToken = 2 * (d * (q + 2 * kv) + q * d + 3 * d * Double(c.intermediateSize)) * Double(c.numLayers)
                + 2 * Double(window) * q * Double(c.numLayers)
            let head = 2 * d * Double(c.vocabSize)
            print(String(format: "load %.2f s; window %d: logits %.3f s (%.0f tokens/s), layers only %.3f s (%.0f tokens/s, %.1f GFLOP/s at %.3f GFLOP/token)",
                         load, window, bestLogits, Double(window) / bestLogits, bestHidden, Double(window) / bestHidden,
                         perToken * Double(window) / bestHidden / 1e9, perToken / 1e9))
            print(String(format: "  LM head: %.3f GFLOP/token; peak RSS %@", head / 1e9, formatBytes(ResourceUsage.peakResidentBytes)))
        }
    }
}
