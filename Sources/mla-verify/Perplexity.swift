import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLALinalg
import MLARuntime
import MLATensor

extension MLAVerifyCommand {
    struct Perplexity: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Perplexity, mean NLL and top-1 accuracy of a model on a text.",
            discussion: """
            The text is tokenized without BOS (unless --bos) and without special tokens. Its first N tokens \
            (--tokens; default all) are split into independent windows of W tokens (--window, default 512; no \
            context is carried across windows; the last window may be shorter). Every position of a window except \
            the last predicts the next token: perplexity = exp(mean NLL over all predicted positions of all \
            windows), top-1 = the fraction of those positions whose highest logit is the next token.

            The model is read one layer at a time (all windows pass a layer before the next is read) and the LM \
            head in vocabulary chunks, so memory stays near one layer's weights in F32 plus the windows' hidden \
            states.
            """)

        @Argument(help: "The model (HF directory, .safetensors, .gguf or .h5).")
        var model: String

        @Option(help: "UTF-8 text file to score.")
        var text: String?

        @Option(help: "Comma-separated token ids to score instead of a text.")
        var ids: String?

        @Option(help: "Use only the first N tokens.")
        var tokens: Int?

        @Option(help: "Window length in tokens.")
        var window: Int = 512

        @Flag(help: "Prepend the BOS token to the text.")
        var bos = false

        @Flag(help: "Print JSON (keys perplexity, nll, top1, tokens (predicted positions), input_tokens, window, seconds).")
        var json = false

        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard (text == nil) != (ids == nil) else { throw ValidationError("give exactly one of --text FILE or --ids LIST") }
            guard window >= 2 else { throw ValidationError("--window must be at least 2") }
            if let tokens, tokens < 2 { throw ValidationError("--tokens must be at least 2") }
            if bos, ids != nil { throw ValidationError("--bos applies to --text; with --ids give the BOS id in the list") }
        }

        func run() throws {
            runtime.apply()
            let start = MonotonicClock.now()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            var tokenIds: [Int]
            if let ids {
                tokenIds = try parseIndexList(ids, option: "--ids", what: "a token id", below: checkpoint.config.vocabSize)
            } else {
                let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
                let textPath = text ?? ""
                tokenIds = tokenizer.encode(try InputFile.readText(textPath), addBos: bos)
            }
            if let tokens { tokenIds = Array(tokenIds.prefix(tokens)) }
            try requireTwoTokens(tokenIds)
            noteBeyondContext(min(window, tokenIds.count), of: checkpoint, what: "a window")
            let progress = Progress(total: checkpoint.config.numLayers + 1, label: "perplexity")
            let result = try evaluatePerplexity(model: try StreamedModel(checkpoint), tokens: tokenIds, window: window) { done, _ in
                progress.advance(to: done)
            }
            progress.finish()
            let seconds = MonotonicClock.now() - start
            if json {
                print(try JSONValue.object([
                    ("perplexity", JSONValue(result.perplexity)), ("nll", JSONValue(result.nll)),
                    ("top1", JSONValue(result.top1)), ("tokens", JSONValue(result.tokens)),
                    ("input_tokens", JSONValue(tokenIds.count)), ("window", JSONValue(window)),
                    ("seconds", JSONValue(seconds)),
                ]).serialized(indent: 2))
            } else {
                print("perplexity \(String(format: "%.4f", result.perplexity))  nll \(String(format: "%.5f", result.nll))  top-1 \(String(format: "%.4f", result.top1))  (\(result.tokens) predicted position\(result.tokens == 1 ? "" : "s") of \(tokenIds.count) tokens, window \(window), \(String(format1: seconds)) s)")
                // A perplexity that is not a number fails here as it does with --json (which cannot hold it).
                if !result.perplexity.isFinite {
                    writeStandardError("perplexity: \(result.perplexity): the model's logits are not finite numbers\n")
                    throw ExitCode(1)
                }
            }
        }
    }
}
