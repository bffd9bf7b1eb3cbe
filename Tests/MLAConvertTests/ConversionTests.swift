import Foundation
import MLACheckpoint
import MLAConvert
import MLALinalg
@testable import MLARuntime
import MLATensor
import MLATestSupport
import Testing

/// The converters' exact stages on the real sample model and on synthetic checkpoints (docs/method.md §10):
/// every stage that is lossless in exact arithmetic must reproduce the source to float rounding.
@Suite(.serialized) struct ConversionTests {
    /// A small calibration of the real model (two windows of 128 tokens of a play that is not Hamlet).
    static let calibration: Result<CalibrationStatistics, any Error> = Result {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let text = try String(contentsOfFile: TestData.corpus + "/macbeth_gut.txt", encoding: .utf8)
        let ids = tokenizer.encode(String(text.prefix(20000)))
        return try collectCalibration(model: box.model, windows: [Array(ids[300..<428]), Array(ids[600..<728])])
    }

    static func hamletIds(_ count: Int) throws -> [Int] {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        return Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(count))
    }

    /// max |a − b| / max |b|.
    static func relative(_ a: [Float], _ b: [Float]) -> Double {
        let scale = Double(b.map(abs).max() ?? 1)
        return zip(a, b).map { Double(abs($0 - $1)) }.max()! / scale
    }

    static func model(_ checkpoint: Checkpoint, _ layers: [MLALayerWeights], form: MLAAttention.Form = .absorbed) throws -> DecoderModel {
        try model(checkpoint.config, checkpoint.store, layers, form: form)
    }

    static func model(_ config: ModelConfig, _ store: any TensorStore, _ layers: [MLALayerWeights],
                      form: MLAAttention.Form = .absorbed) throws -> DecoderModel {
        try DecoderModel(config: config, store: store,
                         attention: layers.map { MLAAttentionBlock(weights: $0, form: form) })
    }

    static func convert(_ config: ModelConfig, _ store: any TensorStore, _ options: LayerConversionOptions, stats: CalibrationStatistics?,
                        budget: CacheBudget) throws -> [(MLALayerWeights, LayerConversionReport)] {
        let conversion = ModelConversion(config: config, store: store, statistics: stats, options: options)
        return try conversion.convert(ranks: conversion.ranks(budget: budget, allocation: .uniform))
    }

    @Test("The input-side (d × d) latent factorization matches the output side, and is exact at full rank (real weights)", .needsSampleData)
    func inputSideFactorizationMatchesOutputSide() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let s = try SourceLayer(config: checkpoint.config, store: checkpoint.store, layer: 5)
        let moment = try Self.calibration.get().secondMoment(layer: 5)
        let split = RopeSplit.partial(source: s, kept: Array(repeating: Array(0..<8), count: s.numKVHeads),
                                      invFreq: RopeFrequencies(config: checkpoint.config).inverseFrequencies,
                                      keyEnergy: momentDiagonal(s.k, moment))
        // Independent of LayerConversion: Σ_{h∈j} W_o,hᵀ W_o,h per KV head by explicit loops.
        let valueWeight = (0..<s.numKVHeads).map { j in
            var w = Matrix<Double>.zeros(s.headDim, s.headDim)
            for h in 0..<s.numHeads where s.kvHead(ofQueryHead: h) == j {
                for a in 0..<s.headDim { for b in 0..<s.headDim { for r in 0..<s.hiddenSize {
                    w[a, b] += s.o[r, h * s.headDim + a] * s.o[r, h * s.headDim + b]
                } } }
            }
            return w
        }
        /// ‖x − y‖ / ‖y‖ in the metric of C (E‖(x − y)·t‖² over the calibration tokens t; plain without C).
        /// The calibration's 256 tokens leave C singular: the objective fixes B·A only on C's range.
        func distance(_ x: Matrix<Double>, _ y: Matrix<Double>, _ c: Matrix<Double>?) -> Double {
            let e = Matrix(rows: x.rows, cols: x.cols, values: zip(x.values, y.values).map(-))
            guard let c else { return e.frobeniusNorm / y.frobeniusNorm }
            func energy(_ m: Matrix<Double>) -> Double { zip(matmul(m, c).values, m.values).reduce(0.0) { $0 + $1.0 * $1.1 } }
            return (max(energy(e), 0) / energy(y)).squareRoot()
        }
        func product(_ f: LatentFactorization, _ rank: Int, _ sigma: SigmaPlacement) throws -> Matrix<Double> {
            let (a, bn, bv) = try f.factors(rank: rank, sigma: sigma)
            return matmul(Matrix(stacking: [bn, bv]), a)
        }
        // GQA shapes (the sample's NoPE keys and values, n_Z = 336 < d = 576), and MHA shapes: the real
        // q_proj rows standing in for 9 heads' NoPE keys, n_Z = 768 > d, where full rank is d.
        let nope = split.transform(s.k, rows: split.ropeRows..<split.keyRows)
        for (keys, fullRank) in [(nope, false), (s.q, true)] {
            let z = Matrix(stacking: [keys, s.v]), rank = min(z.rows, z.cols)
            for c in [moment, nil] {
                func factor(_ side: LatentFactorization.Side, upToRank: Int? = nil) throws -> LatentFactorization {
                    try LatentFactorization(nope: keys, values: s.v, moment: c, weighting: LatentWeighting(keys: .plain, values: .output),
                                            keyWeight: { [] }, valueWeight: { valueWeight }, side: side, upToRank: upToRank)
                }
                let output = try factor(.output), input = try factor(.input)
                #expect(input.eigenvalues.count == rank)
                let top = output.eigenvalues[0]
                // Built for rank 128 only (top vectors alone back-transformed) or for the spectrum alone:
                // the same spectrum, and at rank 128 the same factors to rounding.
                for side in [LatentFactorization.Side.output, .input] {
                    let all = side == .output ? output : input
                    let cut = try factor(side, upToRank: 128), spectrum = try factor(side, upToRank: 0)
                    #expect(cut.vectorCount == 128 && spectrum.vectorCount == 0 && all.vectorCount == all.eigenvalues.count)
                    // F32 on the input side: the spectrum alone comes from a different tridiagonal solver.
                    let tolerance = side == .output ? 1e-9 : 1e-5
                    for f in [cut, spectrum] {
                        #expect(zip(f.eigenvalues, all.eigenvalues).map { abs($0 - $1) }.max()! < tolerance * top)
                    }
                    let error = distance(try product(cut, 128, .sqrt), try product(all, 128, .sqrt), c)
                    #expect(error < (side == .output ? 1e-9 : 1e-5), "\(side) side built up to rank 128, moment \(c != nil): \(error)")
                }
                #expect(zip(input.eigenvalues, output.eigenvalues).map { abs($0 - $1) }.max()! < 1e-5 * top)
                // Lossy: the same subspace up to the single-precision eigenvectors of the input side.
                for sigma in SigmaPlacement.allCases {
                    let lossy = distance(try product(input, 128, sigma), try product(output, 128, sigma), c)
                    #expect(lossy < 1e-3, "n_Z \(z.rows), rank 128, sigma \(sigma), moment \(c != nil): \(lossy)")
                }
                if fullRank {
                    let inputError = distance(try product(input, rank, .down), z, c), outputError = distance(try product(output, rank, .down), z, c)
                    #expect(inputError < 1e-5, "input side at full rank, moment \(c != nil): \(inputError)")
                    #expect(outputError < 1e-9, "output side at full rank, moment \(c != nil): \(outputError)")
                }
            }
        }
    }

    @Test("full-rank joint factorization is exact whatever the weighting and balance (real model)", .needsSampleData)
    func fullRankFactorizationIsExact() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let stats = try Self.calibration.get()
        func layers(_ weighting: LatentWeighting) throws -> [MLALayerWeights] {
            let options = LayerConversionOptions(ropePlan: .shared(dims: 32, stride: 1, fold: 1), weighting: weighting, foldSoftmaxScale: false)
            let converted = try Self.convert(checkpoint.config, checkpoint.store, options, stats: stats, budget: .rank(352))
            #expect(converted.allSatisfy { abs($0.1.kvEnergyRetained - 1) < 1e-9 })
            return converted.map(\.0)
        }
        let ids = try Self.hamletIds(64)
        let plain = try Self.model(checkpoint, try layers(.plain)).logits(ids)
        let weighted = try Self.model(checkpoint, try layers(LatentWeighting(keys: .query, values: .output))).logits(ids)
        #expect(Self.relative(weighted, plain) < 1e-4)
    }

    @Test("a low-rank query at full rank is exact, and the DeepSeek export of it (q_a_proj path) loads and matches", .needsSampleData)
    func lowRankQueryFullRank() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        var options = LayerConversionOptions(ropePlan: .shared(dims: 32, stride: 1, fold: 1), weighting: .plain, foldSoftmaxScale: true)
        let full = try Self.convert(checkpoint.config, checkpoint.store, options, stats: nil, budget: .rank(96)).map(\.0)
        options.queryRank = 576
        let lowRank = try Self.convert(checkpoint.config, checkpoint.store, options, stats: nil, budget: .rank(96))
        #expect(lowRank.allSatisfy { abs($0.1.queryEnergyRetained - 1) < 1e-9 })
        let ids = try Self.hamletIds(64)
        let reference = try Self.model(checkpoint, full).logits(ids)
        #expect(Self.relative(try Self.model(checkpoint, lowRank.map(\.0)).logits(ids), reference) < 1e-4)
        try Self.withDeepSeekExport(of: checkpoint, layers: lowRank.map(\.0)) { exported, _ in
            #expect(exported.config.raw["q_lora_rank"]?.int == 576)
            let loaded = try DecoderModel.load(exported).logits(ids)
            #expect(Self.relative(loaded, reference) < 1e-4)
        }
    }

    /// `body(exported, directory)` on `layers` of `checkpoint` exported as DeepSeek-V3 (F32) to a temporary
    /// directory, removed afterwards.
    static func withDeepSeekExport(of checkpoint: Checkpoint, layers: [MLALayerWeights], _ body: (Checkpoint, String) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "mla-ds-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = CheckpointWriter(format: .hf)
        try MLAModelWriter.write(try DeepSeekV3Encoder(source: checkpoint, dtype: .f32, writer: writer),
                                 to: try writer.output(dir, force: false, inputs: [checkpoint.path]), layers: layers, summary: .object([]))
        try body(try Checkpoint.open(dir), dir)
    }

    @Test("DeepSeek export refuses attention biases by name (biases convert exactly: stageIsAsExactAsDeclared)")
    func deepSeekRefusesBiases() throws {
        let (config, store) = SyntheticModel.make(heads: 4, kvHeads: 2, qkvBias: true, outputBias: true, tied: false, family: .qwen2)
        let shared = LayerConversionOptions(ropePlan: .shared(dims: 16, stride: 1, fold: 1), weighting: .plain, foldSoftmaxScale: true)
        let exportable = try Self.convert(config, store, shared, stats: nil, budget: .rank(16)).map(\.0)
        let reason = DeepSeekV3Encoder.unsupportedReason(layers: exportable, source: config)
        #expect(reason?.contains("model.layers.0.self_attn.k_proj.bias") == true, "\(reason ?? "")")
    }

    @Test("MHA sources (synthetic, heads = KV heads): all pairs kept at full rank reproduce the source")
    func mhaSourceIsExact() throws {
        let (config, store) = SyntheticModel.make(heads: 4, kvHeads: 4, seed: 5)
        let ids = SyntheticModel.tokens
        let source = try DecoderModel(config: config, store: store).logits(ids)
        // All 8 pairs of each of the 4 KV heads keep RoPE; the latent holds the 64 value dims.
        let all = LayerConversionOptions(ropePlan: .partial(strategy: .uniform, pairs: 8, start: 0, combination: .product),
                                         weighting: LatentWeighting(keys: .plain, values: .output), foldSoftmaxScale: true)
        let exact = try Self.convert(config, store, all, stats: nil, budget: .rank(64))
        #expect(Self.relative(try Self.model(config, store, exact.map(\.0)).logits(ids), source) < 1e-5)
    }

    @Test("greedy allocation keeps the total rank and gives more to layers with more energy left")
    func greedyAllocationKeepsTotal() throws {
        let (config, store) = SyntheticModel.make(heads: 4, kvHeads: 2)
        let options = LayerConversionOptions(ropePlan: .shared(dims: 8, stride: 1, fold: 1), weighting: .plain, foldSoftmaxScale: false)
        let conversion = ModelConversion(config: config, store: store, statistics: nil, options: options)
        let greedy = try conversion.ranks(budget: .rank(20), allocation: .greedy)
        #expect(greedy.reduce(0, +) == 40)
        let uniformLoss = try (0..<2).map { 1 - (try conversion.layer($0).energyRetained(rank: 20)) }.reduce(0, +)
        let greedyLoss = try (0..<2).map { 1 - (try conversion.layer($0).energyRetained(rank: greedy[$0])) }.reduce(0, +)
        #expect(greedyLoss <= uniformLoss + 1e-12)
    }

    @Test("impossible requests are refused before any work, naming the flag", arguments: [
        (RopePlan.partial(strategy: .high, pairs: 9, start: 0, combination: .product), CacheBudget.rank(8), "--rope-pairs 9"),
        (.partial(strategy: .uniform, pairs: 2, start: 4, combination: .product), .rank(8), "--uniform-start 4"),
        (.shared(dims: 18, stride: 1, fold: 1), .rank(8), "--rope-dim 18"),
        (.shared(dims: 8, stride: 1, fold: 1), .rank(500), "--kv-lora-rank 500"),
        (.shared(dims: 16, stride: 1, fold: 1), .fraction(0.1), "--kv-budget 0.1"),
    ])
    func impossibleRequests(rope: RopePlan, budget: CacheBudget, field: String) throws {
        let (config, _) = SyntheticModel.make(heads: 4, kvHeads: 2)
        let options = LayerConversionOptions(ropePlan: rope, weighting: .plain, foldSoftmaxScale: false)
        #expect { try ModelConversion.checkPlan(config: config, options: options, budget: budget) } throws: { error in
            "\(error)".contains(field)
        }
    }

    /// The DeepSeek-V3 config's rope_theta: every 4th pair of a base-100000 head of 64 dims is the
    /// table of base 100000 for a 16-dim rope key, written as exactly 100000 (it was 100000.00000000003);
    /// the fastest 8 pairs are base 100000^(1/4), which is no integer; the slowest 8 are no table.
    @Test func ropeThetaOfAUniformStrideIsTheSourceBase() throws {
        let source = (0..<32).map { pow(100000.0, -2 * Double($0) / 64) }
        #expect(DeepSeekV3Encoder.ropeTheta(stride(from: 0, to: 32, by: 4).map { source[$0] }, dRope: 16) == 100000)
        let highest = try #require(DeepSeekV3Encoder.ropeTheta(Array(source.prefix(8)), dRope: 16))
        #expect(abs(highest / pow(100000, 0.25) - 1) < 1e-12)
        #expect(DeepSeekV3Encoder.ropeTheta(Array(source.suffix(8)), dRope: 16) == nil)
    }

    /// Uniform keeps pairs start + ⌊k·P/r⌋: every start `checkPlan` accepts keeps r distinct pairs of the
    /// head (a larger one wrapped around to the first pairs), and the first start past them is refused.
    @Test func uniformPairsStayInTheHead() throws {
        let (config, store) = SyntheticModel.make(heads: 4, kvHeads: 2)
        let source = try SourceLayer(config: config, store: store, layer: 0)
        func kept(_ r: Int, _ start: Int) -> [[Int]] {
            PartialRope.keptPairs(strategy: .uniform, pairs: r, start: start, combination: .product, source: source, keyEnergy: [], queryEnergy: { [] })
        }
        #expect(kept(3, 2) == [[2, 4, 7], [2, 4, 7]])
        for r in 1...8 {
            var start = 0
            while (try? ModelConversion.checkPlan(config: config, options: LayerConversionOptions(
                ropePlan: .partial(strategy: .uniform, pairs: r, start: start, combination: .product), weighting: .plain, foldSoftmaxScale: false),
                budget: .rank(4))) != nil {
                let pairs = kept(r, start)[0]
                #expect(Set(pairs).count == r && pairs.allSatisfy { (0..<8).contains($0) }, "r \(r), start \(start): \(pairs)")
                start += 1
            }
            #expect(start == 8 - (r - 1) * 8 / r, "r \(r)")
        }
    }
}

/// The automatic layer parallelism of the converters (`LayerParallelism.choose`).
@Suite struct LayerParallelismTests {
    @Test func smallLayersRunOnePerCoreOnOneBLASThreadEach() {
        // The sample: 14 MB layers, 2 cores.
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 14 << 20, cores: 2, threads: nil) == LayerParallelism(workers: 2, blasThreads: 1))
        // 64 cores: as many workers as 512 MiB of extra layers hold (1 + 36), 1 BLAS thread each.
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 14 << 20, cores: 64, threads: nil) == LayerParallelism(workers: 37, blasThreads: 1))
        // 16 cores, 200 MB layers: 1 + 2 workers, 5 BLAS threads each.
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 200 << 20, cores: 16, threads: nil) == LayerParallelism(workers: 3, blasThreads: 5))
    }

    @Test func largeLayersRunOneAtATimeOnAllBLASThreads() {
        // A 7B-8B layer in F32 is about 0.85 GB.
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 870 << 20, cores: 2, threads: nil) == LayerParallelism(workers: 1, blasThreads: nil))
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 870 << 20, cores: 64, threads: nil) == LayerParallelism(workers: 1, blasThreads: nil))
    }

    @Test func explicitSettingsWin() {
        // --layer-workers 3 on 2 cores: one BLAS thread each (it gave each all the cores: 6 threads);
        // with --threads, that many each; one worker keeps the process setting.
        #expect(LayerParallelism.choose(requested: 3, layerBytes: 14 << 20, cores: 2, threads: nil) == LayerParallelism(workers: 3, blasThreads: 1))
        #expect(LayerParallelism.choose(requested: 2, layerBytes: 14 << 20, cores: 16, threads: nil) == LayerParallelism(workers: 2, blasThreads: 8))
        #expect(LayerParallelism.choose(requested: 2, layerBytes: 14 << 20, cores: 2, threads: 2) == LayerParallelism(workers: 2, blasThreads: nil))
        #expect(LayerParallelism.choose(requested: 1, layerBytes: 14 << 20, cores: 2, threads: nil) == LayerParallelism(workers: 1, blasThreads: nil))
        // --threads 2 on 2 cores: one worker (no oversubscription); on 8 cores four.
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 14 << 20, cores: 2, threads: 2) == LayerParallelism(workers: 1, blasThreads: nil))
        #expect(LayerParallelism.choose(requested: nil, layerBytes: 14 << 20, cores: 8, threads: 2) == LayerParallelism(workers: 4, blasThreads: nil))
    }
}
