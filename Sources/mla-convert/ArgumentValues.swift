import ArgumentParser
import MLAConvert

// Every option value of mla-convert's own and MLAConvert's types, parsed once by ArgumentParser (the
// MLATensor and MLACheckpoint ones, shared with the other tools, are in MLACLI). A value that does not
// parse is refused in one line naming the values allowed, or their form for --freqfold.

extension RankAllocation: ExpressibleByArgument {}
extension LatentWeighting.Keys: ExpressibleByArgument {}
extension LatentWeighting.Values: ExpressibleByArgument {}
extension SigmaPlacement: ExpressibleByArgument {}
extension FactorizationMode: ExpressibleByArgument {}
extension PartialRopeStrategy: ExpressibleByArgument {}
extension NormCombination: ExpressibleByArgument {}
extension MLAOutputFormat: ExpressibleByArgument {}
extension RopeFrequencyChoice: ExpressibleByArgument {}
extension FactorInput: ExpressibleByArgument {}
extension CalibrationOrder: ExpressibleByArgument {}

/// `--dtype` of the converters: f32, bf16, f16 or q8_0, case-insensitive.
extension ConvertedDType: ExpressibleByArgument {
    init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

/// `--freqfold`: `auto` or a positive number of pairs.
extension FreqFold: ExpressibleByArgument {
    public init?(argument: String) {
        if argument == "auto" {
            self = .auto
        } else if let pairs = Int(argument), pairs >= 1 {
            self = .pairs(pairs)
        } else {
            return nil
        }
    }

    public var defaultValueDescription: String {
        switch self {
        case .auto: return "auto"
        case let .pairs(pairs): return "\(pairs)"
        }
    }

    /// How `--freqfold` names its form (and so the parse error does too).
    static let valueName = "n|auto"
}
