import ArgumentParser
import MLALinalg

/// Options every subcommand that does numeric work shares.
public struct RuntimeOptions: ParsableArguments {
    @Option(help: "BLAS threads (default: all cores).")
    public var threads: Int?

    public init() {}

    public func apply() {
        if let threads { BLASThreads.set(threads) }
    }
}
