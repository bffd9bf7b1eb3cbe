import MLATensor

/// A GGUF metadata value (GGUF v3 value types; docs/formats.md "GGUF"). Arrays may nest.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double)
    case bool(Bool), string(String), array([GGUFValue])

    /// The value of any integer type as `Int`, or nil (not an integer, or out of `Int` range).
    public var int: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(exactly: v)
        default: return nil
        }
    }

    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [GGUFValue]? { if case let .array(a) = self { return a }; return nil }

    /// Type name as in the GGUF spec (`u32`, `f32`, `string`, `array`, ...), for messages.
    public var typeName: String {
        switch self {
        case .uint8: return "u8"
        case .int8: return "i8"
        case .uint16: return "u16"
        case .int16: return "i16"
        case .uint32: return "u32"
        case .int32: return "i32"
        case .uint64: return "u64"
        case .int64: return "i64"
        case .float32: return "f32"
        case .float64: return "f64"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        }
    }
}

/// One metadata entry, in file order.
public struct GGUFMetadataEntry: Sendable, Equatable {
    public let key: String
    public let value: GGUFValue
}

/// One tensor info as stored: GGUF name, ggml dims, type and placement.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// The GGUF name, such as `blk.0.attn_q.weight`.
    public let name: String
    /// ggml dims, fastest-varying first (`ne[0]` = row length). PyTorch shape is `ne.reversed()`.
    public let ne: [Int]
    public let type: GGMLType
    /// Bytes from the start of the data section (a multiple of the file's alignment).
    public let offset: Int
    /// Bytes from the start of the file.
    public let fileOffset: Int
    /// Bytes of data (whole blocks along `ne[0]`).
    public let byteCount: Int

    /// PyTorch-order shape (`ne` reversed).
    public var shape: [Int] { ne.reversed() }
}

/// A GGUF v2/v3 file (docs/formats.md "GGUF"), memory-mapped. `init` parses and validates the header, the
/// metadata and the tensor infos; it never touches tensor data, so opening is cheap whatever the
/// model size. Immutable after `init`.
public final class GGUFFile: Sendable {
    /// Path as given (used in every error message).
    public let path: String
    /// The mapping of the whole file.
    public let mapped: MappedFile
    /// GGUF version (2 or 3).
    public let version: UInt32
    /// Metadata entries in file order.
    public let metadata: [GGUFMetadataEntry]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// Data alignment in bytes: `general.alignment`, or 32 when absent.
    public let alignment: Int
    /// File offset of the tensor data section.
    public let dataOffset: Int
    private let metadataIndex: [String: Int]
    private let tensorIndex: [String: Int]

    /// Largest nesting of metadata arrays accepted (real files use 1).
    static let maxArrayDepth = 8
    /// Longest metadata key (the GGUF specification's limit).
    static let maxKeyBytes = 65535
    /// Longest tensor name: ggml's GGML_MAX_NAME is 64 including the terminating NUL.
    static let maxTensorNameBytes = 63

    /// Maps and validates `path`. Throws `FileError` when the file cannot be mapped and
    /// `CheckpointError` (naming the file, and the tensor when there is one) for every format violation.
    public init(path: String) throws {
        self.path = path
        let mapped = try MappedFile(path: path)
        self.mapped = mapped
        let parsed = try mapped.withBytes(offset: 0, count: mapped.size) { raw in
            var parser = GGUFParser(raw: raw, path: path)
            return try parser.parse()
        }
        version = parsed.version
        metadata = parsed.metadata
        tensors = parsed.tensors
        alignment = parsed.alignment
        dataOffset = parsed.dataOffset
        metadataIndex = parsed.metadataIndex
        tensorIndex = parsed.tensorIndex
    }

    /// The metadata value of `key`, or nil.
    public func value(_ key: String) -> GGUFValue? {
        metadataIndex[key].map { metadata[$0].value }
    }

    /// The tensor info of GGUF name `name`, or nil.
    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// `general.architecture`, or nil.
    public var architecture: String? { value("general.architecture")?.string }

    /// Calls `body` with the stored bytes of `info` (validated to lie inside the file at `init`).
    public func withTensorBytes<R>(_ info: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try mapped.withBytes(offset: info.fileOffset, count: info.byteCount, body)
    }
}

/// Everything `GGUFParser.parse` extracts.
struct GGUFParsed {
    var version: UInt32
    var metadata: [GGUFMetadataEntry]
    var metadataIndex: [String: Int]
    var tensors: [GGUFTensorInfo]
    var tensorIndex: [String: Int]
    var alignment: Int
    var dataOffset: Int
}

/// A bounds-checked little-endian cursor over the mapped header. Every count read from the file is
/// checked against the remaining bytes before anything is allocated for it.
struct GGUFParser {
    let raw: UnsafeRawBufferPointer
    let path: String
    var pos = 0

    init(raw: UnsafeRawBufferPointer, path: String) {
        self.raw = raw
        self.path = path
    }

    var remaining: Int { raw.count - pos }

    /// `what` names the field for the message; it is an autoclosure so that the hot path (98k token
    /// strings in a real file) builds no message strings.
    func truncated(_ what: @autoclosure () -> String) -> CheckpointError {
        .truncated(file: path, reason: "\(what()) at byte \(pos) runs past the end of the \(raw.count)-byte file")
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw truncated(what()) }
        let v = raw.loadUnaligned(fromByteOffset: pos, as: T.self)
        pos += n
        return T(littleEndian: v)
    }

    /// A u64 that must fit in `Int`.
    mutating func count(_ what: @autoclosure () -> String) throws -> Int {
        let v = try load(UInt64.self, what())
        guard let n = Int(exactly: v) else {
            throw CheckpointError.malformed(file: path, reason: "\(what()) \(v) is too large; the file is corrupt")
        }
        return n
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let n = try count("length of \(what())")
        guard n <= remaining else { throw truncated("\(what()) of \(n) bytes") }
        let bytes = UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + n)])
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw CheckpointError.malformed(file: path, reason: "\(what()) at byte \(pos) is not valid UTF-8")
        }
        pos += n
        return s
    }

    /// Smallest encoded size of a value of GGUF type `id`, used to bound counts before allocating.
    static func minimumSize(ofType id: UInt32) -> Int? {
        switch id {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 10, 11, 12: return 8
        case 8: return 8
        case 9: return 12
        default: return nil
        }
    }

    mutating func value(type id: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch id {
        case 0: return .uint8(try load(UInt8.self, "value of '\(key)'"))
        case 1: return .int8(try load(Int8.self, "value of '\(key)'"))
        case 2: return .uint16(try load(UInt16.self, "value of '\(key)'"))
        case 3: return .int16(try load(Int16.self, "value of '\(key)'"))
        case 4: return .uint32(try load(UInt32.self, "value of '\(key)'"))
        case 5: return .int32(try load(Int32.self, "value of '\(key)'"))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, "value of '\(key)'")))
        case 7:
            let b = try load(UInt8.self, "value of '\(key)'")
            guard b <= 1 else {
                throw CheckpointError.malformed(file: path, reason: "metadata '\(key)': bool byte is \(b), must be 0 or 1")
            }
            return .bool(b == 1)
        case 8: return .string(try string("value of '\(key)'"))
        case 9:
            guard depth < GGUFFile.maxArrayDepth else {
                throw CheckpointError.malformed(file: path, reason: "metadata '\(key)': arrays nested deeper than \(GGUFFile.maxArrayDepth)")
            }
            let elementType = try load(UInt32.self, "array type of '\(key)'")
            guard let minSize = GGUFParser.minimumSize(ofType: elementType) else {
                throw CheckpointError.malformed(file: path, reason: "metadata '\(key)': unknown array element type \(elementType)")
            }
            let n = try count("array length of '\(key)'")
            guard n <= remaining / minSize else {
                throw truncated("array '\(key)' of \(n) elements")
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try load(UInt64.self, "value of '\(key)'"))
        case 11: return .int64(try load(Int64.self, "value of '\(key)'"))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, "value of '\(key)'")))
        default:
            throw CheckpointError.malformed(file: path, reason: "metadata '\(key)': unknown value type \(id); the file is corrupt or newer than this reader")
        }
    }

    /// The whole header, in file order: magic and version, metadata, tensor infos, then where each
    /// tensor's data lies (inside the file, not overlapping another's).
    mutating func parse() throws -> GGUFParsed {
        let version = try readVersion()
        let tensorCount = try count("tensor count")
        let kvCount = try count("metadata count")
        let (metadata, metadataIndex) = try readMetadata(count: kvCount)
        let alignment = try self.alignment(metadata, metadataIndex)
        let (infos, tensorIndex) = try readTensorInfos(count: tensorCount, alignment: alignment)
        let (tensors, dataOffset) = try placeTensorData(infos, alignment: alignment)
        return GGUFParsed(version: version, metadata: metadata, metadataIndex: metadataIndex, tensors: tensors,
                          tensorIndex: tensorIndex, alignment: alignment, dataOffset: dataOffset)
    }

    /// The magic and a supported version (2 or 3, little-endian).
    mutating func readVersion() throws -> UInt32 {
        guard raw.count >= 4, raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self) == UInt32(littleEndian: 0x4655_4747) else {
            throw CheckpointError.malformed(file: path, reason: "bad magic: not a GGUF file (expected the bytes 'GGUF')")
        }
        pos = 4
        let version = try load(UInt32.self, "version")
        switch version {
        case 2, 3: return version
        case 1:
            throw CheckpointError.malformed(file: path, reason: "GGUF version 1 is not supported (32-bit counts); convert the model again with a current llama.cpp")
        case 0x0200_0000, 0x0300_0000:
            throw CheckpointError.malformed(file: path, reason: "big-endian GGUF file is not supported; use a little-endian conversion")
        default:
            throw CheckpointError.malformed(file: path, reason: "unknown GGUF version \(version) (this reader handles 2 and 3)")
        }
    }

    /// `count` key-value pairs with keys of legal length, each key once.
    mutating func readMetadata(count kvCount: Int) throws -> ([GGUFMetadataEntry], [String: Int]) {
        // A KV pair takes at least 8 (key length) + 4 (type) + 1 bytes.
        guard kvCount <= remaining / 13 else { throw truncated("\(kvCount) metadata entries") }
        var metadata: [GGUFMetadataEntry] = []
        metadata.reserveCapacity(kvCount)
        var metadataIndex: [String: Int] = [:]
        for _ in 0..<kvCount {
            let key = try string("metadata key")
            guard key.utf8.count <= GGUFFile.maxKeyBytes else {
                throw CheckpointError.malformed(file: path, reason: "metadata key of \(key.utf8.count) bytes before byte \(pos) is longer than the \(GGUFFile.maxKeyBytes) GGUF allows; the file is corrupt")
            }
            let type = try load(UInt32.self, "type of '\(key)'")
            let v = try value(type: type, key: key, depth: 0)
            guard metadataIndex[key] == nil else {
                throw CheckpointError.malformed(file: path, reason: "metadata key '\(key)' appears more than once")
            }
            metadataIndex[key] = metadata.count
            metadata.append(GGUFMetadataEntry(key: key, value: v))
        }
        return (metadata, metadataIndex)
    }

    /// `general.alignment` (a positive multiple of 8), 32 when absent.
    func alignment(_ metadata: [GGUFMetadataEntry], _ metadataIndex: [String: Int]) throws -> Int {
        guard let i = metadataIndex["general.alignment"] else { return 32 }
        let v = metadata[i].value
        guard let a = v.int, a > 0, a % 8 == 0 else {
            throw CheckpointError.malformed(file: path, reason: "general.alignment is \(v), must be a positive multiple of 8")
        }
        return a
    }

    /// One tensor info as read: name, dims (ne), type, data offset relative to the data section, bytes.
    typealias TensorInfoRecord = (name: String, ne: [Int], type: GGMLType, offset: Int, bytes: Int)

    /// `count` tensor infos, each name once.
    mutating func readTensorInfos(count tensorCount: Int, alignment: Int) throws -> ([TensorInfoRecord], [String: Int]) {
        // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
        guard tensorCount <= remaining / 32 else { throw truncated("\(tensorCount) tensor infos") }
        var infos: [TensorInfoRecord] = []
        infos.reserveCapacity(tensorCount)
        var tensorIndex: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let info = try readTensorInfo(alignment: alignment)
            guard tensorIndex[info.name] == nil else {
                throw CheckpointError.duplicateTensor(file: path, tensor: info.name)
            }
            tensorIndex[info.name] = infos.count
            infos.append(info)
        }
        return (infos, tensorIndex)
    }

    /// One tensor info: a name of legal length, 1-4 dims, a known type whose blocks tile the rows, an
    /// aligned offset, and a byte size that does not overflow.
    mutating func readTensorInfo(alignment: Int) throws -> TensorInfoRecord {
        let name = try string("tensor name")
        guard name.utf8.count <= GGUFFile.maxTensorNameBytes else {
            throw CheckpointError.malformed(file: path, reason: "tensor name of \(name.utf8.count) bytes before byte \(pos) is longer than the \(GGUFFile.maxTensorNameBytes) ggml allows; the file is corrupt")
        }
        let nDims = try load(UInt32.self, "dimension count of '\(name)'")
        guard (1...4).contains(nDims) else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "has \(nDims) dimensions, must be 1 to 4")
        }
        var ne: [Int] = []
        for _ in 0..<nDims {
            let d = try load(UInt64.self, "dimensions of '\(name)'")
            guard let di = Int(exactly: d) else {
                throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "dimension \(d) is too large (size overflow)")
            }
            ne.append(di)
        }
        let typeId = try load(UInt32.self, "type of '\(name)'")
        guard let type = GGMLType(rawValue: typeId) else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "unknown ggml type id \(typeId)")
        }
        let offset = try load(UInt64.self, "offset of '\(name)'")
        guard let off = Int(exactly: offset), off % alignment == 0 else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "data offset \(offset) is not a multiple of the alignment \(alignment)")
        }
        guard ne[0] % type.blockLayout.elements == 0 else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "row length ne[0] = \(ne[0]) is not a multiple of the \(type.name) block size \(type.blockLayout.elements)")
        }
        var bytes = type.rowBytes(elements: ne[0])
        for d in ne.dropFirst() {
            guard let b = bytes else { break }
            let (p, o) = b.multipliedReportingOverflow(by: d)
            bytes = o ? nil : p
        }
        guard let byteCount = bytes, Tensor.validatedElementCount(ne) != nil else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "size of dims \(ne) of \(type.name) overflows")
        }
        return (name, ne, type, off, byteCount)
    }

    /// The data section (after the header, aligned) and each tensor's place in the file: inside it,
    /// and not overlapping another tensor's data.
    func placeTensorData(_ infos: [TensorInfoRecord], alignment: Int) throws -> ([GGUFTensorInfo], dataOffset: Int) {
        let (padded, o1) = pos.addingReportingOverflow(alignment - 1)
        guard !o1 else { throw truncated("tensor data") }
        let dataOffset = padded / alignment * alignment
        // A file without tensors (a vocabulary-only GGUF) may end right after its metadata, unpadded.
        guard infos.isEmpty || dataOffset <= raw.count else { throw truncated("tensor data section (starting at \(dataOffset))") }

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(infos.count)
        for t in infos {
            let (start, o2) = dataOffset.addingReportingOverflow(t.offset)
            let (end, o3) = start.addingReportingOverflow(t.bytes)
            guard !o2, !o3, end <= raw.count else {
                throw CheckpointError.malformedTensor(file: path, tensor: t.name, reason: "data [\(t.offset), +\(t.bytes)) runs past the end of the file (\(raw.count) bytes, data at \(dataOffset)); the file is truncated")
            }
            tensors.append(GGUFTensorInfo(name: t.name, ne: t.ne, type: t.type, offset: t.offset, fileOffset: start, byteCount: t.bytes))
        }
        let byStart = tensors.sorted { ($0.offset, $0.byteCount) < ($1.offset, $1.byteCount) }
        for (a, b) in zip(byStart, byStart.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw CheckpointError.malformedTensor(file: path, tensor: b.name, reason: "data overlaps tensor '\(a.name)' (offsets \(a.offset) and \(b.offset))")
        }
        return (tensors, dataOffset)
    }
}
