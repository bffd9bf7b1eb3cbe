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
    case outputExists(path: String)
    case writeFailed(path: String, reason: String)
    /// A tensor about to be written holds an infinity or NaN (`value`) at flat index `element`.
    case nonFiniteOutput(file: String, tensor: String, element: Int, value: String)

    public var description: String {
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
            return "\(path): output exists and is not empty; pass --force to replace it"
        case let .writeFailed(path, reason):
            return "\(path): cannot write: \(reason)"
        case let .nonFiniteOutput(file, tensor, element, value):
            return "\(file): tensor '\(tensor)' would hold \(value) at element \(element), so nothing was written; a value overflowed the output dtype (--dtype f32 holds more) or the source holds non-finite values"
        }
    }
}
