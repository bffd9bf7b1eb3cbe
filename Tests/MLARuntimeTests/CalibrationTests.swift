import Foundation
import Testing
import MLACheckpoint
@testable import MLARuntime

@Suite struct CalibrationTests {
    /// The accumulated moment equals the plain sum of outer products of the observed inputs (Double).
    @Test func secondMomentEqualsNaiveOuterProducts() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let windows = [[1, 2, 3, 4, 5], [9, 8, 7], [50, 60, 70, 80]]
        let stats = try collectCalibration(model: model, windows: windows)
        #expect(stats.tokenCount == 12)
        let d = config.hiddenSize
        var naive = Array(repeating: [Double](repeating: 0, count: d * d), count: config.numLayers)
        for w in windows {
            _ = try model.hiddenStates(w, hooks: LayerHooks(attentionInput: { layer, x, t in
                for r in 0..<t {
                    for i in 0..<d { for j in 0..<d { naive[layer][i * d + j] += Double(x[r * d + i]) * Double(x[r * d + j]) } }
                }
            }))
        }
        for layer in 0..<config.numLayers {
            let c = stats.secondMoment(layer: layer)
            let scale = naive[layer].map(abs).max()!
            for k in 0..<(d * d) { #expect(abs(c.values[k] * 12 - naive[layer][k]) <= 1e-12 * scale) }
        }
    }

    @Test func saveAndLoadRoundTrip() throws {
        let (config, store) = SyntheticModel.make()
        let model = try DecoderModel(config: config, store: store)
        let stats = try collectCalibration(model: model, windows: [[1, 2, 3]], tags: ["text": "unit"])
        let path = NSTemporaryDirectory() + "calib-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try stats.save(to: path)
        let back = try CalibrationStatistics(path: path, numLayers: 2, hiddenSize: 64)
        #expect(back.tokenCount == 3 && (0..<stats.numLayers).allSatisfy { back.layerSum($0) == stats.sums[$0] } && back.tags["text"] == "unit")
        #expect(throws: CheckpointError.self) { try CalibrationStatistics(path: path, numLayers: 3, hiddenSize: 64) }
        #expect(throws: CheckpointError.self) { try CalibrationStatistics(path: path, numLayers: 2, hiddenSize: 32) }
    }

    @Test func roundRobinWindows() {
        let a = Array(0..<20), b = Array(100..<110)
        let w = CalibrationCorpus.windows(streams: [a, b], window: 4, totalTokens: 14, skip: 2)
        #expect(w == [[2, 3, 4, 5], [102, 103, 104, 105], [6, 7, 8, 9], [106, 107]])
    }

    @Test func defaultCorpusNeverContainsHamlet() throws {
        guard TestData.require() else { return }
        let files = try CalibrationCorpus.defaultFiles(in: TestData.corpus)
        #expect(files.count == 36)
        #expect(!files.contains { $0.contains("hamlet") })
        #expect(!files.contains { $0.contains("sonnets") })
    }
}
