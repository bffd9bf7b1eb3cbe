@testable import MLACLI
import Testing

/// The progress line's estimate: the time so far and the time left at the mean rate so far.
struct ProgressTests {
    @Test func estimatesTheTimeLeftFromTheMeanRate() {
        // A 32-layer conversion after 5 layers in 9 minutes: 27 layers at 108 s each.
        #expect(Progress.timing(elapsed: 540, done: 5, total: 32) == "9.0 min elapsed, about 48.6 min left")
        #expect(Progress.timing(elapsed: 3 * 3600, done: 30, total: 32) == "3.0 h elapsed, about 12.0 min left")
        // Nothing before the first step, after the last, or while it is too early to say.
        #expect(Progress.timing(elapsed: 540, done: 0, total: 32).isEmpty)
        #expect(Progress.timing(elapsed: 540, done: 32, total: 32).isEmpty)
        #expect(Progress.timing(elapsed: 9.9, done: 5, total: 32).isEmpty)
    }

    @Test func durationsInTheirUnit() {
        #expect(Progress.duration(42.4) == "42 s")
        #expect(Progress.duration(89.6) == "90 s")
        #expect(Progress.duration(90) == "1.5 min")
        #expect(Progress.duration(89 * 60) == "89.0 min")
        #expect(Progress.duration(90 * 60) == "1.5 h")
    }
}
