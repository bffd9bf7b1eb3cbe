import Foundation
import Testing
import MLACheckpoint
import MLATestSupport
@testable import MLARuntime

@Suite struct CalibrationTests {
    /// The accumulated moment equals the plain sum of outer products of the attention inputs of the
    /// same batch (Double) to F32 block rounding, the last layer's included (calibration computes it
    /// without running the last layer).
    @Test func secondMomentEqualsNaiveOuterProducts() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let windows = [[1, 2, 3, 4, 5], [9, 8, 7], [50, 60, 70, 80]]
        let stats = try collectCalibration(model: model, windows: windows)
        #expect(stats.tokenCount == 12)
        let d = config.hiddenSize
        var naive = Array(repeating: [Double](repeating: 0, count: d * d), count: config.numLayers)
        _ = try model.hiddenStates(batch: windows, hooks: LayerHooks(attentionInput: { layer, x, sequences in
            #expect(sequences == windows.map(\.count))
            for r in 0..<sequences.reduce(0, +) {
                for i in 0..<d { for j in 0..<d { naive[layer][i * d + j] += Double(x[r * d + i]) * Double(x[r * d + j]) } }
            }
        }))
        for layer in 0..<config.numLayers {
            let c = stats.secondMoment(layer: layer)
            let scale = naive[layer].map(abs).max()!
            for k in 0..<(d * d) { #expect(abs(c.values[k] * 12 - naive[layer][k]) <= 1e-6 * scale) }
        }
    }

    /// On the real model (one 512-token Hamlet window, two F32 blocks per layer): every entry of every
    /// layer's moment within 1e-6 of the F64 sum, relative to the largest diagonal entry (entries are
    /// bounded by it), and the whole matrix within 1e-6 in Frobenius norm.
    @Test(.needsSampleData) func f32BlockMomentsMatchFloat64OnRealActivations() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = Array(tokenizer.encode(try TestData.hamletExcerpt()).prefix(512))
        let stats = try collectCalibration(model: box.model, windows: [ids])
        let d = checkpoint.config.hiddenSize
        var worst = 0.0, worstFrobenius = 0.0
        _ = try box.model.hiddenStates(ids, hooks: LayerHooks(attentionInput: { layer, x, _ in
            var reference = [Double](repeating: 0, count: d * d)
            Double.syrkTransposed(n: d, k: ids.count, alpha: 1, a: x.map(Double.init), lda: d, beta: 0, c: &reference, ldc: d)
            let ours = stats.layerSum(layer)
            let diagonal = (0..<d).map { reference[$0 * d + $0] }.max()!
            var difference = 0.0, norm = 0.0
            for i in 0..<d {
                for j in i..<d {
                    let e = abs(ours[i * d + j] - reference[i * d + j])
                    worst = max(worst, e / diagonal)
                    difference += e * e
                    norm += reference[i * d + j] * reference[i * d + j]
                }
            }
            worstFrobenius = max(worstFrobenius, (difference / norm).squareRoot())
        }))
        #expect(worst < 1e-6 && worstFrobenius < 1e-6, "max \(worst), Frobenius \(worstFrobenius)")
    }

    /// Calibration on two workers (one BLAS thread each, a window each at a time, sums added at the
    /// end) gives the statistics of one worker on the real sample model, and so does the layer-major
    /// collection from the streamed checkpoint (a different code path: one layer at a time, every window
    /// through it): the same token count and every layer's moment to F32 block rounding (the BLAS thread
    /// counts and the summation order differ, so the rounding may).
    @Test(.needsSampleData) func parallelAndStreamedCollectionMatchOneWorker() throws {
        let (checkpoint, box) = try TestData.sampleModel.get()
        let tokenizer = try BPETokenizer(gguf: try #require(checkpoint.ggufTokenizer))
        let ids = tokenizer.encode(try TestData.hamletExcerpt())
        let windows = (0..<5).map { Array(ids[($0 * 100)..<($0 * 100 + 96)]) }
        let one = try collectCalibration(model: box.model, windows: windows, workers: 1)
        let two = try collectCalibration(model: box.model, windows: windows, workers: 2)
        var layersDone: [Int] = []
        let streamed = try collectCalibration(streaming: try StreamedModel(checkpoint), windows: windows, workers: 2) { done, _ in layersDone.append(done) }
        #expect(layersDone == Array(1...checkpoint.config.numLayers))
        for other in [two, streamed] {
            #expect(one.tokenCount == 480 && other.tokenCount == 480)
            for layer in 0..<checkpoint.config.numLayers {
                let a = one.layerSum(layer), b = other.layerSum(layer)
                let scale = a.map(abs).max()!
                #expect(zip(a, b).map { abs($0 - $1) }.max()! / scale < 1e-6, "layer \(layer)")
            }
        }
    }

    @Test func saveAndLoadRoundTrip() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let stats = try collectCalibration(model: model, windows: [[1, 2, 3]], tags: ["text": "unit"])
        let path = NSTemporaryDirectory() + "calib-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try stats.save(to: try OutputPlan(path, kind: .file, force: false, inputs: []))
        let back = try CalibrationStatistics(path: path, numLayers: 2, hiddenSize: 64)
        #expect(back.tokenCount == 3 && (0..<stats.numLayers).allSatisfy { back.layerSum($0) == stats.layerSum($0) } && back.tags["text"] == "unit")
        #expect(throws: CheckpointError.self) { try CalibrationStatistics(path: path, numLayers: 3, hiddenSize: 64) }
        #expect(throws: CheckpointError.self) { try CalibrationStatistics(path: path, numLayers: 2, hiddenSize: 32) }
    }

    @Test func roundRobinWindows() {
        let a = Array(0..<20), b = Array(100..<110)
        let w = CalibrationCorpus.windows(streams: [a, b], window: 4, totalTokens: 14, skip: 2)
        #expect(w == [[2, 3, 4, 5], [102, 103, 104, 105], [6, 7, 8, 9], [106, 107]])
    }

    /// Shares 2:1:1 give the schedule A B C A (by hand: window k goes to the largest deficit 2k/4 - taken,
    /// ties to the earlier domain), every token count takes a prefix of it, each domain stays within one
    /// window of its share, and a domain that runs out leaves its turns to the others.
    @Test func mixedWindowsHoldTheShares() {
        let domains = (0..<3).map { d in (0..<40).map { w in (0..<4).map { 1000 * d + 4 * w + $0 } } }
        let full = CalibrationCorpus.mixed(domains, shares: [2, 1, 1], totalTokens: 32)
        #expect(full.map { $0[0] / 1000 } == [0, 1, 2, 0, 0, 1, 2, 0])
        #expect(full.map { $0[0] % 1000 } == [0, 0, 0, 4, 8, 4, 4, 12])
        for total in [4, 13, 40, 64, 101] {
            let w = CalibrationCorpus.mixed(domains, shares: [2, 1, 1], totalTokens: total)
            #expect(w.reduce(0) { $0 + $1.count } == total)
            #expect(Array(w.dropLast()) == Array(CalibrationCorpus.mixed(domains, shares: [2, 1, 1], totalTokens: 200).prefix(w.count - 1)))
            for (d, share) in [2, 1, 1].enumerated() {
                let tokens = w.joined().filter { $0 / 1000 == d }.count
                #expect(abs(Double(tokens) - Double(total * share) / 4) <= 4, "total \(total), domain \(d): \(tokens) tokens")
            }
        }
        let short = [domains[0], [domains[1][0]], domains[2]]
        let w = CalibrationCorpus.mixed(short, shares: [1, 1, 1], totalTokens: 24)
        #expect(w.map { $0[0] / 1000 } == [0, 1, 2, 0, 2, 0])
        #expect(CalibrationCorpus.mixed(domains, shares: [0, 1, 0], totalTokens: 12).allSatisfy { $0[0] / 1000 == 1 })
    }
}
