@testable import MLAConvert
import Testing

/// The rope plan gqa2mla keeps when nothing can be measured (docs/defaults.md, "Without calibration"):
/// the widest rope key within a share of the layer's cache, so that a small budget keeps a latent; on the
/// sample it is the width the search keeps, refined or in closed form, at each budget.
@Suite struct FixedRopeRuleTests {
    /// The fixed rule's plan for a head of `headDim` dims, `kvHeads` KV heads and `budget`.
    func rule(headDim: Int, kvHeads: Int, budget: CacheBudget, refined: Bool = true, dims: Int? = nil) -> RopePlan? {
        let space = SharedRopeSpace(headDim: headDim, dims: dims, frequencies: nil, fold: nil)
        return space.fixedRule(ropeLimit: space.ropeLimit(budget: budget, sourceCacheValues: 2 * kvHeads * headDim, refined: refined))?.plan
    }

    @Test("on the sample's shape, refined layers get a third of the cache: rope 64, 32 and 16")
    func sampleShapeRefined() {
        // 3 KV heads of 64 dims: 384 cache values per token and layer.
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.5)) == .shared(dims: 64, stride: 1, fold: 1))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.3125)) == .shared(dims: 32, stride: 2, fold: 4))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.1875)) == .shared(dims: 16, stride: 4, fold: 4))
    }

    @Test("on the sample's shape, the closed form keeps head_dim/2 (32) at every budget of the tables")
    func sampleShapeClosedForm() {
        for beta in [0.5, 0.3125, 0.1875] {
            #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(beta), refined: false) == .shared(dims: 32, stride: 2, fold: 4))
        }
        // 10 %: 38 values, half of them 19: the narrowest width.
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.1), refined: false) == .shared(dims: 16, stride: 4, fold: 4))
    }

    @Test("few KV heads of 128 dims keep a latent at small budgets; large budgets keep head_dim/2")
    func fewWideKVHeads() {
        // 2 KV heads of 128 dims: 512 values; 18.75 % leaves 96, so 32 rope dims and a latent of 64
        // (head_dim/2 would leave 32).
        #expect(rule(headDim: 128, kvHeads: 2, budget: .fraction(0.1875)) == .shared(dims: 32, stride: 4, fold: 4))
        #expect(rule(headDim: 128, kvHeads: 2, budget: .fraction(0.1875), refined: false) == .shared(dims: 32, stride: 4, fold: 4))
        #expect(rule(headDim: 128, kvHeads: 2, budget: .fraction(0.5)) == .shared(dims: 64, stride: 2, fold: 4))
        #expect(rule(headDim: 128, kvHeads: 8, budget: .fraction(0.1875)) == .shared(dims: 64, stride: 2, fold: 4))
    }

    @Test("head_dim/2 is a width when 32 and 64 do not divide the pairs; below every width the narrowest")
    func otherHeads() {
        // 80 dims (40 pairs): 16 and 40 fit.
        #expect(rule(headDim: 80, kvHeads: 8, budget: .fraction(0.5)) == .shared(dims: 40, stride: 2, fold: 4))
        #expect(rule(headDim: 80, kvHeads: 1, budget: .fraction(0.5)) == .shared(dims: 16, stride: 5, fold: 5))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.1)) == .shared(dims: 16, stride: 4, fold: 4))
    }

    @Test("a given latent rank r allows rope dims up to r/2 refined, r in closed form; given dims always win")
    func rankAndGivenDims() {
        #expect(rule(headDim: 64, kvHeads: 3, budget: .rank(64)) == .shared(dims: 32, stride: 2, fold: 4))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .rank(128)) == .shared(dims: 64, stride: 1, fold: 1))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .rank(24), refined: false) == .shared(dims: 16, stride: 4, fold: 4))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .rank(128), refined: false) == .shared(dims: 32, stride: 2, fold: 4))
        #expect(rule(headDim: 64, kvHeads: 3, budget: .fraction(0.1875), dims: 64) == .shared(dims: 64, stride: 1, fold: 1))
    }
}
