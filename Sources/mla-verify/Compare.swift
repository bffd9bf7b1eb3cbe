import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLARuntime
import MLAVerify
import MLATensor

extension MLAVerifyCommand {
    struct Compare: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "compare",
            abstract: "Measure how much CONVERTED drifted from ORIGINAL (the default: mla-verify ORIGINAL CONVERTED).",
            discussion: """
            Per layer, teacher-forced: the converted attention receives the original model's attention input and its \
            output is compared with the original attention output (relative error, cosine). End to end, each model \
            runs on its own over the same windows: perplexity of both, KL(original ‖ converted) of the next-token \
            distributions (mean, p95, max), top-1 agreement. Also the KV cache per token of both.

            Per-head values are compared where the head counts and value widths match (MLA: W_UV,h ĉ; source: the \
            v of the head's KV group); keys are not (MLA splits them into a latent part and RoPE key heads). When \
            CONVERTED has MLA attention, its first window also runs in the other MLA form (absorbed vs naive).

            Text: --text files (default: Hamlet from the sample corpus, the evaluation text), tokenized without BOS \
            with ORIGINAL's tokenizer, or --ids (token ids, e.g. for a model without a tokenizer); first --tokens \
            tokens, independent windows of --window tokens.

            Both models are read one layer at a time: every window passes layer l of ORIGINAL, then layer l of \
            CONVERTED, before layer l + 1 is read, and the LM heads are applied in vocabulary chunks. Memory stays \
            near one layer's weights in F32 plus the windows' hidden states, whatever the model size.

            JSON keys: tokens, original.{perplexity,nll,top1}, converted.{...}, perplexity_ratio, kl.{mean,p95,max}, \
            top1_agreement, kv_cache.{original_values_per_token,converted_values_per_token,...}, \
            mla_core.{tokens,absorbed_vs_naive_max_rel,layers_absorbed_vs_naive_max_rel} (null without MLA), \
            layers[{layer,rel_error,cosine,values_rel_error,values_cosine,keys_comparable}], seconds.

            --report DIR writes DIR/index.html, a self-contained page (no scripts or external files) with these \
            numbers, plots of per-layer drift, of the KV rank and energy retained per layer (from CONVERTED's \
            mla_convert.layers in config.json or mla_convert.json) and of the KL distribution.
            """)

        @Argument(help: "The source model.") var original: String
        @Argument(help: "The converted (MLA) model.") var converted: String
        @Option(parsing: .upToNextOption,
                help: ArgumentHelp("Evaluation text files (default: the sample corpus's Hamlet).",
                                   discussion: """
                                   The default is corpus/hamlet_gut.txt in $MLA_CACHE, $XDG_CACHE_HOME/mla-convert \
                                   (default ~/.cache/mla-convert) or ./.cache, first found (docs/samples.md).
                                   """))
        var text: [String] = []
        @Option(help: "Comma-separated token ids to evaluate instead of a text.") var ids: String?
        @Option(help: "Tokens to evaluate.") var tokens: Int = 2048
        @Option(help: "Window length.") var window: Int = 512
        @Option(help: "Comma-separated layer indices for the per-layer part (default all).") var layers: String?
        @Option(help: "Exit with status 1 when converted/original perplexity exceeds this ratio (finite, above 0; a NaN perplexity fails too).") var maxPplIncrease: Double?
        @Flag(help: "Accept a CONVERTED model without MLA attention (e.g. to compare an export round trip).") var allowNonMla = false
        @Flag(help: "Print JSON.") var json = false
        @Option(help: "Write an HTML report to this directory (DIR/index.html).") var report: String?
        @Flag(help: "Replace a previous output of this toolkit at the --report path (nothing else is ever replaced).") var force = false
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard tokens >= 2, window >= 2 else { throw ValidationError("--tokens and --window must be at least 2") }
            guard text.isEmpty || ids == nil else { throw ValidationError("give --text FILES or --ids LIST, not both") }
            if let maxPplIncrease, !(maxPplIncrease.isFinite && maxPplIncrease > 0) {
                throw ValidationError("--max-ppl-increase must be a finite ratio above 0, such as 1.05 for at most 5 % more perplexity; got \(maxPplIncrease)")
            }
        }

        func run() throws {
            runtime.apply()
            // Before any work: a report directory that overlaps an input, exists or cannot be written fails now.
            let reportPlan = try report.map { try OutputPlan($0, kind: .directory, contents: .report, force: force, inputs: [original, converted] + text) }
            let source = try Checkpoint.openPrintingWarnings(original), target = try Checkpoint.openPrintingWarnings(converted)
            guard target.config.family.isMLA || allowNonMla else {
                throw ValidationError("\(converted) is a \(target.config.family.rawValue) model without MLA attention, not a conversion; pass --allow-non-mla to compare it anyway (e.g. an export round trip)")
            }
            let metadata = report == nil ? nil : try ConversionMetadata.load(target)
            var ids: [Int] = []
            if let list = self.ids {
                ids = try parseIndexList(list, option: "--ids", what: "a token id", below: source.config.vocabSize)
            } else {
                let tokenizer = try BPETokenizer.forCheckpoint(source)
                for file in text.isEmpty ? [try defaultText()] : text {
                    ids += tokenizer.encode(try InputFile.readText(file))
                    if ids.count >= tokens { break }
                }
            }
            ids = Array(ids.prefix(tokens))
            try requireTwoTokens(ids)
            let selected = try layers.map { Set(try parseIndexList($0, option: "--layers", what: "a layer index", below: source.config.numLayers)) }
            noteBeyondContext(min(window, ids.count), of: source, what: "a window")
            let progress = Progress(total: source.config.numLayers + 1, label: "verify")
            let result = try verify(original: try StreamedModel(source), converted: try StreamedModel(target),
                                    tokens: ids, window: window, layers: selected) { done, _ in progress.advance(to: done) }
            progress.finish()
            if let report, let reportPlan {
                try HTMLReport(report: result, metadata: metadata, originalPath: original, convertedPath: converted)
                    .write(to: reportPlan)
                writeStandardError("report: \(report)/index.html\n")
            }
            print(json ? try result.json.serialized(indent: 2) : summary(result))
            // Written so that a NaN ratio fails the gate.
            let ratio = result.converted.perplexity / result.original.perplexity
            if let limit = maxPplIncrease, !(ratio <= limit) {
                writeStandardError("verify: perplexity ratio x\(String(format: "%.3f", ratio)) is above --max-ppl-increase \(limit)\n")
                throw ExitCode(1)
            }
        }

        /// The sample corpus's Hamlet, in the first sample-data cache that has it (`SampleDataCache`).
        func defaultText() throws -> String {
            guard let path = SampleDataCache.locate(SampleDataCache.evaluationText) else {
                throw ValidationError("no evaluation text in \(SampleDataCache.searched(SampleDataCache.evaluationText)): "
                                      + "pass --text FILES, or fetch the sample corpus (docs/samples.md)")
            }
            return path
        }

        func summary(_ r: VerificationReport) -> String {
            func f(_ x: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", x) }
            var lines = [
                "tokens scored    \(r.tokens)",
                "perplexity       \(f(r.original.perplexity)) -> \(f(r.converted.perplexity))  (x\(f(r.converted.perplexity / r.original.perplexity, 3)))",
                "top-1            \(f(r.original.top1)) -> \(f(r.converted.top1)), agreement \(f(r.top1Agreement))",
                "KL (nats)        mean \(f(r.klMean, 5)), p95 \(f(r.klP95, 5)), max \(f(r.klMax, 5))",
                "KV cache/token   \(r.originalCacheValuesPerToken) -> \(r.convertedCacheValuesPerToken) values (\(r.originalCacheValuesPerToken * 2) -> \(r.convertedCacheValuesPerToken * 2) bytes at BF16, \(f(100 * r.cacheReduction, 1)) % saved)",
                "MLA core         " + (r.mlaCore.map {
                    String(format: "absorbed vs naive: logits max rel diff %.2e (first %d tokens), worst layer %.2e",
                           $0.logitsMaxRelative, $0.tokens, $0.layerMaxRelative.max() ?? 0)
                } ?? "not checked (CONVERTED has no MLA attention)"),
                "",
                "layer  rel_error   cosine    v_rel_err  v_cosine",
            ]
            func optional(_ x: Double?, _ format: String) -> String { x.map { String(format: format, $0) } ?? "-" }
            lines += r.layers.map {
                String(format: "%5d  %9.2e  %.6f", $0.layer, $0.relativeError, $0.cosine)
                    + "  " + optional($0.valuesRelativeError, "%9.2e").padding(toLength: 9, withPad: " ", startingAt: 0)
                    + "  " + optional($0.valuesCosine, "%.6f")
            }
            lines.append("")
            lines.append(r.verdict)
            return lines.joined(separator: "\n")
        }
    }
}
