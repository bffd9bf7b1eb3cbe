import MLATensor

/// Everything that can be wrong with a checkpoint or its configuration. Each case carries the file
/// (and tensor) it concerns; `description` is one line: what, where, and how to fix when known.
public enum CheckpointError: Error, CustomStringConvertible, Sendable {
    /// The file is not what it claims to be, or breaks a format rule (`reason` says which).
    case malformed(file: String, reason: String)
    /// The same, for one tensor.
    case malformedTensor(file: String, tensor: String, reason: String)
    case truncated(file: String, reason: String)
    case missingTensor(file: String, tensor: String)
    case duplicateTensor(file: String, tensor: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case missingFile(path: String, reason: String)
    case missingConfigKey(file: String, key: String)
    case invalidConfig(file: String, key: String, reason: String)
    /// A model this toolkit cannot convert or does not read yet; `reason` says why.
    case unsupportedModel(file: String, reason: String)
    /// A previous output of this toolkit is at the path and `--force` was not given.
    case outputExists(path: String)
    /// The output path would overwrite or hold an input (both as real paths).
    case outputOverlapsInput(output: String, input: String, relation: OutputOverlap)
    /// Something that is not a replaceable output of this toolkit is at the path; `reason` says what.
    case outputNotReplaceable(path: String, reason: String)
    /// The output path was taken during the run; the finished result is at `kept`.
    case outputKept(path: String, kept: String, reason: String)
    case writeFailed(path: String, reason: String)
    /// A tensor about to be written holds an infinity or NaN (`value`) at flat index `element`.
    case nonFiniteOutput(file: String, tensor: String, element: Int, value: String)

    /// One line: control characters quoted from a damaged file (a newline in a GGUF key or a
    /// tensor name) are escaped.
    public var description: String { text.escapingControlCharacters }

    private var text: String {
        switch self {
        case let .malformed(file, reason):
            return "\(file): \(reason)"
        case let .malformedTensor(file, tensor, reason):
            return "\(file): tensor '\(tensor)': \(reason)"
        case let .truncated(file, reason):
            return "\(file): truncated: \(reason); the file is incomplete, download or write it again"
        case let .missingTensor(file, tensor):
            return "\(file): tensor '\(tensor)' not found"
        case let .duplicateTensor(file, tensor):
            return "\(file): tensor '\(tensor)' appears more than once"
        case let .shapeMismatch(file, tensor, expected, found):
            return "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        case let .unsupportedDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)' has unsupported type \(dtype)"
        case let .missingFile(path, reason):
            return "\(path): \(reason)"
        case let .missingConfigKey(file, key):
            return "\(file): required key '\(key)' is missing"
        case let .invalidConfig(file, key, reason):
            return "\(file): key '\(key)': \(reason)"
        case let .unsupportedModel(file, reason):
            return "\(file): unsupported model: \(reason)"
        case let .outputExists(path):
            return "\(path): output exists (a previous output of mla-convert); pass --force to replace it"
        case let .outputOverlapsInput(output, input, .equal):
            return "\(output): the output is the input \(input); choose another output path"
        case let .outputOverlapsInput(output, input, .containsInput):
            return "\(output): the output would contain the input \(input), and writing it replaces what is there; choose an output path outside it"
        case let .outputOverlapsInput(output, input, .insideInput):
            return "\(output): the output lies inside the input \(input); choose an output path outside it"
        case let .outputNotReplaceable(path, reason):
            return "\(path): \(reason)"
        case let .outputKept(path, kept, reason):
            return "\(path): not replaced: \(reason); the finished output is kept at \(kept)"
        case let .writeFailed(path, reason):
            return "\(path): cannot write: \(reason)"
        case let .nonFiniteOutput(file, tensor, element, value):
            return "\(file): tensor '\(tensor)' would hold \(value) at element \(element), so nothing was written; a value overflowed the output dtype (--dtype f32 holds more) or the source holds non-finite values"
        }
    }
}

/// How an output path meets an input path.
public enum OutputOverlap: Sendable {
    /// The output path is the input.
    case equal
    /// The input lies inside the output (a directory the write would replace).
    case containsInput
    /// The output lies inside the input directory.
    case insideInput
}
