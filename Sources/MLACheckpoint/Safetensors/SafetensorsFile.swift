import MLATensor

/// One `.safetensors` file, memory-mapped, validated strictly at open (docs/formats.md: header
/// bounds, JSON shape, no duplicate keys, known dtypes, sizes with checked arithmetic, contiguous
/// non-overlapping data exactly filling the file). Only the header is read; tensors are returned as
/// slices of the mapping.
public final class SafetensorsFile: TensorStore, @unchecked Sendable {
    // Immutable after init (the mapping and the parsed header), hence @unchecked Sendable.
    /// Largest header accepted (the reference implementation's MAX_HEADER_SIZE).
    public static let maxHeaderBytes = 100_000_000

    public let path: String
    public let names: [String]
    /// The `__metadata__` object (string to string).
    public let metadata: [String: String]
    private let file: MappedFile
    private let entries: [String: Entry]

    struct Entry {
        let info: TensorInfo
        let offset: Int
    }

    /// safetensors dtype names with no `DType` counterpart: valid in the format, refused here by name.
    static let knownUnsupportedDTypes: Set<String> = ["F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2", "C64"]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let (members, bufferStart) = try Self.header(of: file, path: path)
        var metadata: [String: String] = [:]
        var names: [String] = []
        var entries: [String: Entry] = [:]
        var spans: [(begin: Int, end: Int, name: String)] = []
        let bufferSize = file.size - bufferStart
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try Self.metadataStrings(value, path: path)
                continue
            }
            let (info, begin, end) = try Self.tensorEntry(name, value, path: path, bufferSize: bufferSize)
            names.append(name)
            entries[name] = Entry(info: info, offset: bufferStart + begin)
            spans.append((begin, end, name))
        }
        try Self.checkDataIsTiled(spans, bufferSize: bufferSize, path: path)
        self.names = names
        self.metadata = metadata
        self.entries = entries
    }

    /// The header's members, in file order, and where the data buffer starts: an 8-byte length within
    /// the limit and the file, then a JSON object padded only with trailing spaces.
    static func header(of file: MappedFile, path: String) throws -> (members: [(String, JSONValue)], bufferStart: Int) {
        guard file.size >= 8 else {
            throw CheckpointError.truncated(file: path, reason: "\(file.size) bytes, shorter than the 8-byte header length")
        }
        let headerLength = file.withBytes(offset: 0, count: 8) { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw CheckpointError.malformed(file: path, reason: "header length \(headerLength) exceeds the 100 MB limit; not a safetensors file")
        }
        let n = Int(headerLength)
        guard 8 + n <= file.size else {
            throw CheckpointError.truncated(file: path, reason: "header claims \(n) bytes but only \(file.size - 8) follow")
        }
        let headerBytes = file.bytes(offset: 8, count: n)
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw CheckpointError.malformed(file: path, reason: "header does not start with '{'; not a safetensors file")
        }
        var end = headerBytes.count
        while end > 0 && headerBytes[end - 1] == 0x20 { end -= 1 }
        guard end > 0, headerBytes[end - 1] == UInt8(ascii: "}") else {
            throw CheckpointError.malformed(file: path, reason: "header JSON must end with '}' followed only by spaces")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(headerBytes[0..<end])
        } catch {
            throw CheckpointError.malformed(file: path, reason: "header is not valid JSON: \(error)")
        }
        guard let members = json.object else {
            throw CheckpointError.malformed(file: path, reason: "header is not a JSON object")
        }
        return (members, 8 + n)
    }

    /// `__metadata__`: an object of strings.
    static func metadataStrings(_ value: JSONValue, path: String) throws -> [String: String] {
        guard let object = value.object else {
            throw CheckpointError.malformed(file: path, reason: "__metadata__ is not an object")
        }
        var metadata: [String: String] = [:]
        for (k, v) in object {
            guard let s = v.string else {
                throw CheckpointError.malformed(file: path, reason: "__metadata__ value '\(k)' is not a string")
            }
            metadata[k] = s
        }
        return metadata
    }

    /// One tensor's header entry: a known dtype, a shape of non-negative integers, and data offsets
    /// [begin, end) within the buffer spanning exactly the shape's bytes.
    static func tensorEntry(_ name: String, _ value: JSONValue, path: String,
                            bufferSize: Int) throws -> (info: TensorInfo, begin: Int, end: Int) {
        func bad(_ reason: String) -> CheckpointError { .malformedTensor(file: path, tensor: name, reason: reason) }
        guard value.object != nil else { throw bad("entry is not an object") }
        guard let dtypeName = value["dtype"]?.string else { throw bad("missing or non-string 'dtype'") }
        guard let dtype = DType(rawValue: dtypeName) else {
            if Self.knownUnsupportedDTypes.contains(dtypeName) {
                throw CheckpointError.unsupportedDType(file: path, tensor: name, dtype: dtypeName)
            }
            throw bad("unknown dtype '\(dtypeName)'")
        }
        guard let shapeValues = value["shape"]?.array else { throw bad("missing or non-array 'shape'") }
        var shape: [Int] = []
        for dim in shapeValues {
            guard case let .number(text) = dim, let d = Int(text), d >= 0 else {
                throw bad("shape \(shapeValues.map { $0.description }) has a dimension that is not a non-negative integer")
            }
            shape.append(d)
        }
        guard let offsets = value["data_offsets"]?.array, offsets.count == 2,
              case let .number(b) = offsets[0], case let .number(e) = offsets[1],
              let begin = Int(b), let endOffset = Int(e), begin >= 0, begin <= endOffset else {
            throw bad("'data_offsets' must be two non-negative integers [begin, end] with begin <= end")
        }
        guard let bytes = Tensor.byteCount(dtype: dtype, shape: shape) else {
            throw bad("size of shape \(shape) overflows")
        }
        guard bytes == endOffset - begin else {
            throw bad("shape \(shape) of \(dtype.rawValue) needs \(bytes) bytes but data_offsets span \(endOffset - begin)")
        }
        guard endOffset <= bufferSize else {
            throw CheckpointError.truncated(file: path, reason: "tensor '\(name)' ends at byte \(endOffset) of a \(bufferSize)-byte data buffer")
        }
        let info = TensorInfo(name: name, shape: shape, dtype: dtype, storedType: dtype.rawValue, storedBytes: bytes, file: path)
        return (info, begin, endOffset)
    }

    /// The tensors' data spans fill the buffer exactly: no gap, no overlap, no trailing bytes.
    static func checkDataIsTiled(_ spans: [(begin: Int, end: Int, name: String)], bufferSize: Int, path: String) throws {
        var expected = 0
        for span in spans.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard span.begin == expected else {
                throw CheckpointError.malformedTensor(
                    file: path, tensor: span.name,
                    reason: span.begin < expected ? "data overlaps the previous tensor" : "gap of \(span.begin - expected) bytes before its data")
            }
            expected = span.end
        }
        guard expected == bufferSize else {
            throw CheckpointError.malformed(
                file: path, reason: "data buffer has \(bufferSize) bytes but the tensors cover \(expected); trailing bytes or a truncated header")
        }
    }

    public func info(_ name: String) -> TensorInfo? { entries[name]?.info }

    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(file: path, tensor: name) }
        return Tensor(dtype: e.info.dtype, shape: e.info.shape,
                      storage: .mapped(file, offset: e.offset, count: e.info.storedBytes))
    }
}
