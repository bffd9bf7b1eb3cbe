import Foundation
import MLACheckpoint
import MLATestSupport
import Testing

/// The converters' defaults on the real sample model, as a user runs them (nothing but the budget):
/// their perplexity on the docs/samples.md Hamlet excerpt stays under a ceiling tied to the measured result
/// (docs/results.md, docs/defaults.md), the automatic choice keeps the candidate its rule says, and
/// explicit flags fix what they name. Each default conversion runs once, with its own calibration, and
/// its result is shared by the tests that read it; the flag tests share one set of saved statistics.
@Suite(.serialized, .needsSampleData) struct DefaultsCLITests {
    /// Perplexity of the original sample on the excerpt's first 512 tokens (docs/samples.md).
    static let originalPerplexity = 50.02

    /// (converter, budget, ceiling on the perplexity ratio): the ratio measured with the defaults (the
    /// default calibration mix, 32 refinement steps, finalists scored refined; docs/results.md "Refinement
    /// through the softmax" and "Calibration text") × 1.05 (docs/defaults.md). Without the refinement the
    /// ratios are 1.19, 1.45, 2.04 and 2.15, above every ceiling. (At 18.75 % the plan the closed-form
    /// score kept, 1.88 refined, is below the ceiling: `chosenIsBestListed` checks that the refined
    /// finalists decide.)
    static let ceilings: [(String, String, Double)] = [
        ("gqa2mla", "0.5", 1.13 * 1.05),
        ("gqa2mla", "0.3125", 1.35 * 1.05),
        ("gqa2mla", "0.1875", 1.83 * 1.05),
        ("mha2mla", "0.3125", 1.74 * 1.05),
    ]

    /// One default conversion: its summary and its perplexity ratio on the excerpt.
    struct Converted {
        let summary: JSONValue
        let ratio: Double
    }

    /// Shared work, done on first use (the suite is serialized), in a directory removed when the test
    /// process exits.
    final class Shared: @unchecked Sendable {
        // @unchecked: used only by the serialized suite's tests, one at a time.
        let dir = CLI.temporaryDirectory()
        private var stats: String?
        private var conversions: [String: Converted] = [:]

        init() {
            atexit { try? FileManager.default.removeItem(atPath: DefaultsCLITests.shared.dir) }
        }

        /// Saved default statistics (the default calibration mix, default token count), once.
        func calibration(_ sample: String) throws -> String {
            if let stats { return stats }
            let path = dir + "/calib.safetensors"
            let r = try CLI.run("mla-convert", ["calibrate", sample, "-o", path])
            #expect(r.status == 0, "\(r.stderr)")
            stats = path
            return path
        }

        /// `converter SAMPLE -o OUT --kv-budget budget`, exactly as a user runs it (its own calibration,
        /// the layer-by-layer pass included), once per pair.
        func converted(_ converter: String, _ budget: String, sample: String) throws -> Converted {
            if let done = conversions[converter + budget] { return done }
            let out = dir + "/\(converter)-\(budget)"
            let r = try CLI.run("mla-convert", [converter, sample, "-o", out, "--kv-budget", budget, "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let summary = try JSONValue.parse(r.stdout)
            let excerpt = dir + "/hamlet.txt"
            if !FileManager.default.fileExists(atPath: excerpt) {
                let text = try #require(FileManager.default.contents(atPath: CLI.cache + "/corpus/hamlet_gut.txt"))
                try text[3000..<6000].write(to: URL(fileURLWithPath: excerpt))
            }
            let p = try CLI.run("mla-verify", ["perplexity", out, "--text", excerpt, "--tokens", "512", "--json"])
            #expect(p.status == 0, "\(p.stderr)")
            let ppl = try #require(try JSONValue.parse(p.stdout)["perplexity"]?.double)
            try? FileManager.default.removeItem(atPath: out)
            let done = Converted(summary: summary, ratio: ppl / DefaultsCLITests.originalPerplexity)
            conversions[converter + budget] = done
            return done
        }
    }

    static let shared = Shared()

    @Test("the default conversion stays under its perplexity ceiling", arguments: ceilings)
    func defaultsUnderCeiling(converter: String, budget: String, ceiling: Double) throws {
        let sample = SampleData.modelPath
        let converted = try Self.shared.converted(converter, budget, sample: sample)
        #expect(converted.ratio < ceiling, "\(converter) --kv-budget \(budget): x\(converted.ratio), ceiling x\(ceiling)")
    }

    /// The summary lists every candidate with its score, and the chosen one is the rule's: of the
    /// candidates that refine nothing, the best of each rope/latent split (equal summed latent ranks)
    /// within 2x of the best closed form, at most 2, were refined (the default conversion refines); the
    /// refined best is kept, and a refinement of it replaces it only when that lowers the closed-form KL
    /// by more than the margin.
    @Test("the automatic choice keeps the best-scoring candidate it lists", arguments: ceilings)
    func chosenIsBestListed(converter: String, budget: String, ceiling: Double) throws {
        let sample = SampleData.modelPath
        let search = try #require(try Self.shared.converted(converter, budget, sample: sample).summary["search"])
        let candidates = try #require(search["candidates"]?.array)
        let margin = try #require(search["refinement_margin"]?.double)
        #expect(search["finalist_refinement_steps"]?.int == 8)
        #expect(candidates.count >= 3)
        let scores = candidates.compactMap { c in
            c["label"]?.string.flatMap { l in c["kl"]?.double.flatMap { kl in c["latent_ranks"]?.int.map { ranks in
                (label: l, kl: kl, ranks: ranks, refined: c["refined_kl"]?.double, refines: c["refines"]?.string)
            } } }
        }
        #expect(scores.count == candidates.count)
        // The finalists, computed from the listed scores, are exactly the candidates with a refined score.
        let base = scores.filter { $0.refines == nil }
        let best = try #require(base.map(\.kl).min())
        let bestOfSplit = Dictionary(grouping: base, by: \.ranks).values.compactMap { $0.min { $0.kl < $1.kl } }
        let finalists = bestOfSplit.filter { $0.kl <= 2 * best }.sorted { $0.kl < $1.kl }.prefix(2)
        #expect(finalists.count == 2, "\(scores)")
        #expect(Set(finalists.map(\.label)) == Set(scores.filter { $0.refined != nil }.map(\.label)), "\(scores)")
        var kept = try #require(finalists.min { ($0.refined ?? .infinity) < ($1.refined ?? .infinity) })
        for s in scores where s.refines == kept.label && s.kl < kept.kl * (1 - margin) { kept = s }
        #expect(search["chosen"]?.string == kept.label)
    }

    /// The default conversion refines every layer through the softmax (`AttentionRefinement.defaultSteps`,
    /// docs/defaults.md), keeps a layer's closed form wherever the steps did not lower its held-out error,
    /// and lowers that error for most layers.
    @Test("the default conversion refines its layers and never leaves one worse on held-out windows", arguments: ceilings)
    func defaultRefinement(converter: String, budget: String, ceiling: Double) throws {
        let summary = try Self.shared.converted(converter, budget, sample: SampleData.modelPath).summary
        #expect(summary["calibration"]?.string?.hasSuffix(", 32 refinement steps") == true, "\(summary["calibration"] ?? .null)")
        let layers = try #require(summary["layers"]?.array)
        let refined = layers.compactMap { layer in
            layer["errors"]?["held_out_output_error"]?.double.flatMap { before in
                layer["errors"]?["held_out_output_error_refined"]?.double.flatMap { after in layer["errors"]?["refinement_step_kept"]?.int.map { (before, after, $0) } }
            }
        }
        #expect(refined.count == layers.count && layers.count == 30)
        #expect(refined.allSatisfy { $0.1 <= $0.0 && ($0.2 == 0) == ($0.1 == $0.0) }, "\(refined)")
        #expect(refined.filter { $0.1 < $0.0 }.count > layers.count / 2, "\(refined)")
    }

    /// An explicit --rope-dim fixes that dimension of the search; fixing every rope flag in the
    /// DeepSeek-V3 format (uniform ranks only) leaves nothing to search; where nothing can be measured
    /// (no calibration, or no held-out text) the documented fixed rule applies.
    @Test func explicitFlagsOverrideTheSearch() throws {
        let sample = SampleData.modelPath
        let stats = try Self.shared.calibration(sample), dir = Self.shared.dir
        var r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", dir + "/rope64", "--kv-budget", "0.5", "--rope-dim", "64",
                                            "--calib-stats", stats, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        var summary = try JSONValue.parse(r.stdout)
        let labels = summary["search"]?["candidates"]?.array?.compactMap { $0["label"]?.string } ?? []
        #expect(!labels.isEmpty && labels.allSatisfy { $0.hasPrefix("rope 64,") }, "\(labels)")
        #expect(summary["settings"]?["rope"]?.string?.hasPrefix("one shared key of 64 dims") == true)
        #expect(summary["layers"]?.array?.allSatisfy { $0["kv_rank"]?.int == 128 } == true)

        r = try CLI.run("mla-convert", ["gqa2mla", sample, "-o", dir + "/fixed", "--kv-budget", "0.5", "--rope-dim", "32",
                                        "--rope-frequencies", "high", "--freqfold", "1", "--calib-stats", stats, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        summary = try JSONValue.parse(r.stdout)
        #expect(summary["search"] == nil)
        #expect(summary["settings"]?["rope"]?.string?.contains("high pairs, stride 1, freqfold 1 (as given)") == true)

        // gqa2mla's fixed rule: when the layers are refined, the widest rope key within a third of the
        // layer's cache (16 of 72 values at 18.75 %); in closed form head_dim/2 (32) within half of it.
        // Refined without a search: a calibration text too short for a held-out window but long enough
        // for the refinement's 4 windows (10,000 bytes, 5-7 windows; 2 steps, as the rule is the same for
        // any). In closed form: a text of 2-3 windows (the summary says why it did not refine), weights
        // only, and the sample exported without its tokenizer, from the saved statistics.
        let text = try #require(FileManager.default.contents(atPath: CLI.cache + "/corpus/hamlet_gut.txt"))
        let short = dir + "/short.txt", medium = dir + "/medium.txt"
        try text[1000..<5000].write(to: URL(fileURLWithPath: short))
        try text[1000..<11000].write(to: URL(fileURLWithPath: medium))
        r = try CLI.run("mla-convert", ["export", sample, "-o", dir + "/untokenized"])
        #expect(r.status == 0, "\(r.stderr)")
        for file in ["tokenizer.json", "tokenizer_config.json"] { try? FileManager.default.removeItem(atPath: dir + "/untokenized/" + file) }
        for (model, budget, calibration, rope, rank, reason) in [
            (sample, "0.1875", ["--calib", medium, "--calib-tokens", "4096", "--refine-steps", "2"], 16, 56, "no held-out calibration text"),
            (sample, "0.1875", ["--calib", short, "--calib-tokens", "4096"], 32, 40, "no held-out calibration text"),
            (sample, "0.1875", ["--no-calib"], 32, 40, "without calibration"),
            (dir + "/untokenized", "0.1875", ["--calib-stats", stats], 32, 40, "no held-out calibration text"),
        ] {
            r = try CLI.run("mla-convert", ["gqa2mla", model, "-o", dir + "/nocalib", "--kv-budget", budget, "--force", "--json"] + calibration)
            #expect(r.status == 0, "\(r.stderr)")
            summary = try JSONValue.parse(r.stdout)
            #expect(summary["search"] == nil)
            let ropeSetting = summary["settings"]?["rope"]?.string ?? ""
            #expect(ropeSetting.hasPrefix("one shared key of \(rope) dims") && ropeSetting.contains("(fixed rule: \(reason)"), "\(ropeSetting)")
            #expect(summary["layers"]?.array?.allSatisfy { $0["kv_rank"]?.int == rank } == true)
            if calibration.contains(short) { #expect(summary["calibration"]?.string?.contains("no refinement") == true) }
        }

        r = try CLI.run("mla-convert", ["mha2mla", sample, "-o", dir + "/nocalib", "--kv-budget", "0.3125", "--no-calib", "--force", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        summary = try JSONValue.parse(r.stdout)
        #expect(summary["search"] == nil)
        #expect(summary["settings"]?["rope"]?.string?.hasPrefix("high: each of the 3 KV heads keeps 4 pairs") == true)
        for name in ["rope64", "fixed", "nocalib", "untokenized", "short.txt", "medium.txt"] { try? FileManager.default.removeItem(atPath: dir + "/" + name) }
    }
}
