import Foundation
import MLACheckpoint
@testable import MLAConvert
@testable import MLARuntime
import MLATestSupport
import Testing

/// The automatic search's inputs taken from the statistics pass instead of a source pass of its own.
@Suite(.serialized) struct ConversionSearchTests {
    /// The refit samples the statistics pass keeps (`RefitSampleCollector`: the first 300 tokens of three
    /// 128-token windows, so the third is cut to 44 rows, and the last layer's outputs computed afterwards)
    /// are the ones the search's own pass computes on the truncated windows, to F32 rounding, and a
    /// candidate scores the same KL with the same ridges from either.
    @Test(.needsSampleData) func collectedRefitSamplesMatchTheSearchsOwnPass() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let c = checkpoint.config, source = try StreamedModel(checkpoint)
        let windows = try CalibratedConversionTests.windows(4), calibration = Array(windows.prefix(3))
        let collector = RefitSampleCollector(calibrationWindows: calibration, tokens: 300, config: c)
        let stats = try collectCalibration(streaming: source, windows: calibration, workers: 2,
                                           observing: { collector.observe(layer: $0, window: $1, input: $2, output: $3) })
        func search(_ collected: Bool) throws -> ConversionSearch {
            collected
                ? try ConversionSearch(source: source, store: checkpoint.store, statistics: stats, budget: .fraction(0.3125),
                                       windows: [windows[3]], collected: collector)
                : try ConversionSearch(source: source, store: checkpoint.store, statistics: stats, budget: .fraction(0.3125),
                                       windows: [windows[3]], refitWindows: CalibrationText.truncated(calibration, to: 300))
        }
        let own = try search(false), collected = try search(true)
        let a = try #require(own.refitSamples), b = try #require(collected.refitSamples)
        #expect(a.count == c.numLayers && b.count == c.numLayers)
        for l in 0..<c.numLayers {
            #expect(a[l].inputs.map(\.count) == [128, 128, 44].map { $0 * c.hiddenSize } && b[l].inputs.map(\.count) == a[l].inputs.map(\.count))
            for (x, y) in zip(a[l].inputs + a[l].targets, b[l].inputs + b[l].targets) {
                let scale = x.map(abs).max()!
                #expect(zip(x, y).map { abs($0 - $1) }.max()! <= 1e-5 * scale, "layer \(l)")
            }
        }
        let candidate = SearchCandidate(label: "rope 32, uniform pairs, freqfold 4", options: CalibratedConversionTests.options, allocation: .uniform)
        let klOwn = try own.score(candidate), klCollected = try collected.score(candidate)
        #expect(klOwn > 0 && abs(klOwn - klCollected) <= 1e-5 * klOwn, "KL \(klOwn) own pass, \(klCollected) collected")
        #expect(try own.chosenRidges() == collected.chosenRidges())
    }
}
