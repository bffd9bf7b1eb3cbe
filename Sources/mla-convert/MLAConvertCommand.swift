import ArgumentParser
import MLACLI
import MLACheckpoint

@main
struct MLAConvertCommand: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "mla-convert",
        abstract: "Convert the attention of an LLM checkpoint (MHA or GQA with RoPE) to Multi-head Latent Attention.",
        discussion: """
        MODEL is a Hugging Face directory (config.json + safetensors), a .safetensors file with a config.json \
        beside it, a GGUF file, or an HDF5 file written by this toolkit. Inputs are only ever read; outputs are \
        written to a temporary path and moved into place when complete.
        """,
        version: ToolkitVersion.string,
        subcommands: [Inspect.self, Export.self, Calibrate.self, GQA2MLA.self, MHA2MLA.self])
}

