import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLALinalg
import MLATensor

/// The architecture of a synthetic Llama checkpoint.
struct SyntheticShape {
    var layers: Int
    var hidden: Int
    var heads: Int
    var kvHeads: Int
    var headDim: Int
    var intermediate: Int
    var vocab: Int
    var ropeTheta: Double
    var rmsNormEps: Double
    var maxPositions: Int
    var bos: Int
    var eos: Int

    /// Llama-2-7B and Llama-3-8B as published (config.json of meta-llama/Llama-2-7b-hf and
    /// Meta-Llama-3-8B), two smaller shapes of the same family for cost-growth measurements, and a
    /// tiny one (about 200 KB) that the input fuzz test mutates thousands of times.
    static let presets: [String: SyntheticShape] = [
        "llama2-7b": SyntheticShape(layers: 32, hidden: 4096, heads: 32, kvHeads: 32, headDim: 128, intermediate: 11008,
                                    vocab: 32000, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 4096, bos: 1, eos: 2),
        "llama3-8b": SyntheticShape(layers: 32, hidden: 4096, heads: 32, kvHeads: 8, headDim: 128, intermediate: 14336,
                                    vocab: 128_256, ropeTheta: 500_000, rmsNormEps: 1e-5, maxPositions: 8192, bos: 128_000, eos: 128_001),
        "medium": SyntheticShape(layers: 8, hidden: 2048, heads: 16, kvHeads: 4, headDim: 128, intermediate: 5632,
                                 vocab: 32000, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 4096, bos: 1, eos: 2),
        "small": SyntheticShape(layers: 4, hidden: 1024, heads: 8, kvHeads: 2, headDim: 128, intermediate: 2816,
                                vocab: 32000, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 4096, bos: 1, eos: 2),
        "tiny": SyntheticShape(layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, intermediate: 128,
                               vocab: 256, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 512, bos: 1, eos: 2),
    ]

    /// The Hugging Face `config.json` of a `LlamaForCausalLM` with this shape, BF16.
    var config: JSONValue {
        .object([
            ("architectures", .array([.string("LlamaForCausalLM")])),
            ("model_type", .string("llama")),
            ("hidden_size", JSONValue(hidden)),
            ("intermediate_size", JSONValue(intermediate)),
            ("num_hidden_layers", JSONValue(layers)),
            ("num_attention_heads", JSONValue(heads)),
            ("num_key_value_heads", JSONValue(kvHeads)),
            ("head_dim", JSONValue(headDim)),
            ("vocab_size", JSONValue(vocab)),
            ("max_position_embeddings", JSONValue(maxPositions)),
            ("rms_norm_eps", JSONValue(rmsNormEps)),
            ("rope_theta", JSONValue(ropeTheta)),
            ("rope_scaling", .null),
            ("hidden_act", .string("silu")),
            ("attention_bias", .bool(false)),
            ("mlp_bias", .bool(false)),
            ("tie_word_embeddings", .bool(false)),
            ("bos_token_id", JSONValue(bos)),
            ("eos_token_id", JSONValue(eos)),
            ("torch_dtype", .string("bfloat16")),
        ])
    }

    /// Every tensor in Hugging Face order (embedding, layer by layer, final norm, LM head), BF16.
    var entries: [TensorWriteEntry] {
        let d = hidden, q = heads * headDim, kv = kvHeads * headDim, f = intermediate
        func e(_ name: String, _ shape: [Int]) -> TensorWriteEntry { TensorWriteEntry(name: name, dtype: .bf16, shape: shape) }
        var out = [e(ModelTensorNames.embedding, [vocab, d])]
        for l in 0..<layers {
            let n = LayerTensorNames(layer: l)
            out += [e(n.inputNorm, [d]), e(n.qProj, [q, d]), e(n.kProj, [kv, d]), e(n.vProj, [kv, d]), e(n.oProj, [d, q]),
                    e(n.postAttentionNorm, [d]), e(n.gateProj, [f, d]), e(n.upProj, [f, d]), e(n.downProj, [d, f])]
        }
        return out + [e(ModelTensorNames.finalNorm, [d]), e(ModelTensorNames.lmHead, [vocab, d])]
    }
}

/// Weights with the structure of trained ones, generated in blocks of rows.
///
/// A matrix W [out × in] is c·A·diag(σ)·B + E·diag(τ): A [out × k] and B [k × in] uniform with unit
/// variance and σ_i = (1 + i)^(-1/2), plus noise E (uniform, iid) whose column j is scaled by
/// τ_j = (1 + j)^(-1/2). The first term is a rank-k part with a slowly decaying spectrum; the second
/// gives the rest of the spectrum the same kind of power-law decay (where white noise would give it a
/// flat Marchenko–Pastur bulk) and holds `noiseShare` of the energy. Trained projection weights
/// look like this: full rank, energy spread over a decaying spectrum, and some input features
/// (columns) far larger than others. Elements have RMS 1/√in, so activations keep their scale
/// through a forward pass. Every block of rows has its own sub-stream of the tensor's seed: the
/// result does not depend on block size or thread count.
struct SyntheticWeights {
    var factorRank = 256
    var noiseShare = 0.1
    /// Rows per independently seeded chunk (the unit of parallel noise generation).
    static let chunkRows = 64

    /// Norm weights exp(u/2), u uniform in [-1, 1]: around 1 with variation.
    func norm(count: Int, rng: SplitMix64) -> [Float] {
        var g = rng
        return (0..<count).map { _ in expf(g.float(0.5)) }
    }

    /// Calls `body(firstRow, values)` for consecutive blocks of whole rows of the [rows × cols] F32
    /// matrix (row-major, about 16 MB per block); memory holds one block and the [k × cols] factor B.
    func matrix(rows: Int, cols: Int, rng: SplitMix64, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        let k = min(factorRank, rows, cols)
        let root3 = Float(3).squareRoot()
        // B pre-scaled by c·σ_i per row, so a block of the low-rank part is one GEMM A_block · B.
        let rms = 1 / Double(cols).squareRoot()
        let c = rms * ((1 - noiseShare) / (0..<k).reduce(0.0) { $0 + 1 / Double(1 + $1) }).squareRoot()
        var b = [Float](repeating: 0, count: k * cols)
        var bRng = rng.split(0)
        b.withUnsafeMutableBufferPointer { bRng.fill($0, scale: root3) }
        for i in 0..<k {
            let scale = Float(c / Double(1 + i).squareRoot())
            for j in 0..<cols { b[i * cols + j] *= scale }
        }
        // Column scales of the noise: uniform amplitude a·τ_j with mean square rms²·noiseShare.
        let tauSquares = (0..<cols).reduce(0.0) { $0 + 1 / Double(1 + $1) }
        let amplitude = rms * (3 * noiseShare * Double(cols) / tauSquares).squareRoot()
        let columnScale = (0..<cols).map { Float(amplitude / Double(1 + $0).squareRoot()) }
        let blockRows = max(1, (4 << 20) / cols / Self.chunkRows) * Self.chunkRows
        var block = [Float](repeating: 0, count: blockRows * cols)
        var a = [Float](repeating: 0, count: blockRows * k)
        for r0 in stride(from: 0, to: rows, by: blockRows) {
            let n = min(blockRows, rows - r0)
            let chunks = (n + Self.chunkRows - 1) / Self.chunkRows
            a.withUnsafeMutableBufferPointer { ap in
                for ch in 0..<chunks {
                    let first = ch * Self.chunkRows, count = min(Self.chunkRows, n - first)
                    var g = rng.split(UInt64(1 + 2 * ((r0 + first) / Self.chunkRows)))
                    g.fill(UnsafeMutableBufferPointer(rebasing: ap[(first * k)..<((first + count) * k)]), scale: root3)
                }
            }
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    block.withUnsafeMutableBufferPointer { cp in
                        Float.gemm(transA: false, transB: false, m: n, n: cols, k: k, alpha: 1, a: ap.baseAddress!, lda: k,
                                   b: bp.baseAddress!, ldb: cols, beta: 0, c: cp.baseAddress!, ldc: cols)
                    }
                }
            }
            // Noise, chunk by chunk on every core.
            block.withUnsafeMutableBufferPointer { cp in
                // Each chunk adds to its own rows only, so sharing the base pointer is race-free.
                nonisolated(unsafe) let base = cp.baseAddress!
                DispatchQueue.concurrentPerform(iterations: chunks) { ch in
                    let first = ch * Self.chunkRows, count = min(Self.chunkRows, n - first)
                    var g = rng.split(UInt64(2 + 2 * ((r0 + first) / Self.chunkRows)))
                    var e = [Float](repeating: 0, count: cols)
                    e.withUnsafeMutableBufferPointer { ep in
                        for r in first..<(first + count) {
                            g.fill(ep, scale: 1)
                            let row = base + r * cols
                            for j in 0..<cols { row[j] += ep[j] * columnScale[j] }
                        }
                    }
                }
            }
            try block.withUnsafeBufferPointer { try body(r0, UnsafeBufferPointer(rebasing: $0[0..<(n * cols)])) }
        }
    }

    /// Streams tensor `entry` (a 1-D norm or a 2-D matrix) into `sink` as BF16, seeded by `rng`.
    func write(_ entry: TensorWriteEntry, rng: SplitMix64, to sink: TensorByteSink) throws {
        if entry.shape.count == 1 {
            try norm(count: entry.shape[0], rng: rng).map(FloatConversion.floatToBF16).withUnsafeBytes { try sink.write($0) }
            return
        }
        var bits: [UInt16] = []
        try matrix(rows: entry.shape[0], cols: entry.shape[1], rng: rng) { _, values in
            bits.removeAll(keepingCapacity: true)
            bits.append(contentsOf: values.lazy.map(FloatConversion.floatToBF16))
            try bits.withUnsafeBytes { try sink.write($0) }
        }
    }
}

extension Bench {
    struct Synth: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a synthetic Llama checkpoint (HF directory, BF16 shards) with realistic weight spectra.",
            discussion: """
            Shapes: llama2-7b (MHA 32/32, d 4096), llama3-8b (GQA 32/8, d 4096, vocab 128256), medium (8 layers, \
            d 2048, GQA 16/4), small (4 layers, d 1024, GQA 8/2), tiny (2 layers, d 64, vocab 256). Every matrix is low rank with a decaying \
            spectrum plus noise, generated block by block and written as it is made: \
            memory holds one block of rows, never a whole tensor. The same seed gives the same bytes.
            """)
        @Option(help: "llama2-7b, llama3-8b, medium, small or tiny.") var shape: String
        @Option(name: .shortAndLong, help: "Output directory.") var output: String
        @Option(help: "Number of layers (default: the shape's).") var layers: Int?
        @Option(help: "Random seed; the same seed gives the same bytes.") var seed: UInt64 = 0
        @Option(help: "Rank of the structured part of each matrix.") var factorRank = 256
        @Option(help: ArgumentHelp("Shard size limit.", valueName: ByteSize.valueName)) var maxShardSize = ByteSize("2GB")!
        @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).") var force = false
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard SyntheticShape.presets[shape] != nil else {
                throw ValidationError("unknown shape '\(shape)'; use one of \(SyntheticShape.presets.keys.sorted().joined(separator: ", "))")
            }
            if let layers, layers < 1 { throw ValidationError("--layers must be positive") }
            guard factorRank >= 1 else { throw ValidationError("--factor-rank must be positive") }
        }

        func run() throws {
            runtime.apply()
            let plan = try OutputPlan(output, kind: .directory, force: force, inputs: [])
            var s = SyntheticShape.presets[shape]!
            if let layers { s.layers = layers }
            let entries = s.entries
            let position = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, UInt64($0)) })
            let weights = SyntheticWeights(factorRank: factorRank)
            let root = SplitMix64(seed: seed)
            let progress = Progress(total: entries.count, label: "synth")
            let t0 = MonotonicClock.now()
            var files: [String] = []
            try plan.write { dir in
                let config = Data((try s.config.serialized(indent: 2) + "\n").utf8)
                guard FileManager.default.createFile(atPath: dir + "/config.json", contents: config) else {
                    throw CheckpointError.writeFailed(path: dir + "/config.json", reason: "cannot create file")
                }
                files = try SafetensorsWriter.writeDirectoryInPieces(
                    dir, entries: entries,
                    metadata: ["mla_convert.synthetic": "\(shape) layers \(s.layers) seed \(seed) factor_rank \(factorRank)"],
                    maxShardBytes: maxShardSize.bytes) { sink in
                    try weights.write(sink.entry, rng: root.split(position[sink.entry.name]!), to: sink)
                    progress.step(sink.entry.name)
                }
            }
            progress.finish()
            let seconds = MonotonicClock.now() - t0
            let bytes = entries.reduce(0) { $0 + $1.byteCount }
            let parameters = entries.reduce(0) { $0 + $1.shape.reduce(1, *) }
            print(String(format: "wrote %@: %d tensors, %@ parameters, %@ in %d files; %.1f s (%.0f MB/s), peak RSS %@",
                         output, entries.count, groupDigits(parameters), formatBytes(bytes),
                         files.filter { $0.hasSuffix(".safetensors") }.count, seconds, Double(bytes) / seconds / 1e6,
                         formatBytes(ResourceUsage.peakResidentBytes)))
        }
    }
}
