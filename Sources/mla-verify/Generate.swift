import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLARuntime

extension MLAVerifyCommand {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Greedy generation: show that a model (original or converted) still talks.",
            discussion: """
            The prompt is tokenized without BOS (unless --bos); each new token is the argmax of the next-token logits. \
            A converted MLA model decodes with its latent cache; a source model has no KV cache here and runs the \
            whole sequence through its layers for every new token, so long prompts and generations take long on it.
            """)

        @Argument(help: "The model.")
        var model: String

        @Option(help: "Prompt text.")
        var prompt: String

        @Option(help: "New tokens to generate, 1...4096.")
        var tokens: Int = 20

        @Flag(help: "Prepend the BOS token.")
        var bos = false

        @Flag(help: "Print JSON (prompt_ids, generated_ids, text).")
        var json = false

        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard (1...4096).contains(tokens) else { throw ValidationError("--tokens must be 1...4096") }
        }

        func run() throws {
            runtime.apply()
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
            let ids = tokenizer.encode(prompt, addBos: bos)
            guard !ids.isEmpty else { throw ValidationError("the prompt is empty") }
            noteBeyondContext(ids.count + tokens, of: checkpoint, what: "the prompt and the generated tokens, a sequence")
            let decoder = try DecoderModel.load(checkpoint)
            let generated = try decoder.generate(prompt: ids, maxNewTokens: tokens)
            let text = tokenizer.decode(generated)
            if json {
                print(try JSONValue.object([
                    ("prompt_ids", .array(ids.map { JSONValue($0) })), ("generated_ids", .array(generated.map { JSONValue($0) })),
                    ("text", .string(text)),
                ]).serialized(indent: 2))
            } else {
                print(prompt + text)
            }
        }
    }
}
