import ArgumentParser
import MLACheckpoint
import MLATensor

// The option values every tool reads from MLATensor and MLACheckpoint types, parsed once by ArgumentParser.
// A value that does not parse is refused in one line naming the values allowed, or their form for sizes
// (`mainWithOneLineErrors`).

/// `--dtype`: the float types a checkpoint is written in (f32, bf16, f16), case-insensitive.
extension DType: ExpressibleByArgument {
    /// The dtypes `--dtype` accepts.
    public static let writtenFloats: [DType] = [.f32, .bf16, .f16]

    /// The dtype named `argument` (`f32`, `BF16`, …) if it is one of `writtenFloats`.
    public init?(argument: String) {
        guard let dtype = Self.writtenFloats.first(where: { $0.rawValue.lowercased() == argument.lowercased() }) else { return nil }
        self = dtype
    }

    /// `f32`, `bf16`, `f16`: listed by `--help` and by the error for a value that does not parse.
    public static var allValueStrings: [String] { writtenFloats.map { $0.rawValue.lowercased() } }
    /// None: the values need no description (and `--help` lists them on the option's line).
    public static var allValueDescriptions: [String: String] { [:] }
    /// The lower-case name, as the options are written.
    public var defaultValueDescription: String { rawValue.lowercased() }
}

/// `export --format`: hf or hdf5.
extension OutputFormat: ExpressibleByArgument {}

/// `--max-shard-size`: `5GB`, `500MB`, `2GiB`, a plain byte count.
extension ByteSize: ExpressibleByArgument {
    /// The size `argument` spells (`ByteSize.init(_:)`).
    public init?(argument: String) { self.init(argument) }

    /// How the options that take a size name its form (and so the parse error does too).
    public static let valueName = "n[KB|MB|GB|KiB|MiB|GiB]"
}
