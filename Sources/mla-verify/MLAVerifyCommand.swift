import ArgumentParser
import MLACLI
import MLACheckpoint
import MLALinalg

@main
struct MLAVerifyCommand: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "mla-verify",
        abstract: "Run models and measure what a conversion changed.",
        version: ToolkitVersion.string,
        subcommands: [Compare.self, Perplexity.self, Generate.self],
        defaultSubcommand: Compare.self)
}
