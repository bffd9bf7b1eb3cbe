import Foundation
import MLACheckpoint
import MLALinalg
import MLATensor

/// Deterministic mutations of one base checkpoint: a seed always gives the same bytes, so a failing
/// seed is a reproducible regression case. What is mutated:
/// - gguf: the header (metadata and tensor infos, up to the data section) of the base file; the
///   mutated file keeps the base file's size, with the tensor data left as a sparse hole of zeros, so
///   every mutation is a structurally complete file but costs only its header on disk;
/// - hdf5: the whole (small) file;
/// - safetensors: `model.safetensors` of a model directory (header-heavy), config.json kept;
/// - config: `config.json` of a model directory, the weights kept.
struct FuzzMutator: Sendable {
    let target: FuzzTarget
    /// The bytes mutated.
    let region: [UInt8]
    /// Size of the written file before mutation (gguf: the base file's size; else `region.count`).
    let fullSize: Int
    /// safetensors: the directory's config.json; config: its model.safetensors.
    let companion: [UInt8]
    /// Byte offsets of the fields worth aiming at (GGUF counts, types, dims and offsets; the
    /// safetensors header), each with its width in bytes.
    let fields: [(offset: Int, width: Int)]

    init(target: FuzzTarget, base: String) throws {
        self.target = target
        switch target {
        case .gguf:
            let file = try GGUFFile(path: base)
            region = file.mapped.bytes(offset: 0, count: file.dataOffset)
            fullSize = file.mapped.size
            companion = []
            fields = GGUFFieldScanner.fields(region)
        case .hdf5:
            region = try InputFile.read(base, limit: 64 << 20)
            fullSize = region.count
            companion = []
            fields = (0..<min(region.count, 8192) / 8).map { ($0 * 8, 8) }
        case .safetensors, .config:
            let weights = try InputFile.read(base + "/model.safetensors", limit: 64 << 20)
            let config = try InputFile.read(base + "/config.json")
            region = target == .config ? config : weights
            companion = target == .config ? weights : config
            fullSize = region.count
            let headerEnd = target == .config ? config.count : min(weights.count, 8 + Int(weights.prefix(4).reversed().reduce(0) { $0 << 8 | Int($1) }))
            fields = [(0, 8)] + (0..<headerEnd).map { ($0, 1) }
        }
    }

    /// Writes the mutation of `seed` into the new directory `dir`; returns the path to give
    /// `mla-convert` and a short description of the mutation.
    func write(seed: UInt64, into dir: String) throws -> (input: String, what: String) {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: seed)
        var bytes = region
        var size = fullSize
        let what = mutate(&bytes, size: &size, rng: &rng)
        func put(_ name: String, _ data: [UInt8]) throws {
            guard FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(data)) else {
                throw CheckpointError.writeFailed(path: dir + "/" + name, reason: "cannot create the mutated file")
            }
        }
        switch target {
        case .gguf:
            try put("model.gguf", bytes)
            // The data section is a hole: the file has the base's length without its bytes on disk.
            guard truncate(dir + "/model.gguf", off_t(max(size, 0))) == 0 else {
                throw CheckpointError.writeFailed(path: dir + "/model.gguf", reason: "cannot extend the mutated file")
            }
            return (dir + "/model.gguf", what)
        case .hdf5:
            try put("model.h5", bytes)
            return (dir + "/model.h5", what)
        case .safetensors:
            try put("config.json", companion)
            try put("model.safetensors", bytes)
            return (dir, what)
        case .config:
            try put("config.json", bytes)
            try put("model.safetensors", companion)
            return (dir, what)
        }
    }

    /// Applies one mutation chosen by `rng`; `size` is the written file size (gguf may differ from
    /// `bytes.count`). Returns what was done, for the failure line.
    func mutate(_ bytes: inout [UInt8], size: inout Int, rng: inout SplitMix64) -> String {
        let isJSON = target == .config || target == .safetensors
        let kinds = isJSON ? 8 : 6
        switch Int(rng.next() % UInt64(kinds)) {
        case 0:
            let n = Int(rng.next() % 8) + 1
            for _ in 0..<n { let p = position(bytes, &rng); bytes[p] ^= UInt8(1) << (rng.next() % 8) }
            return "\(n) bit flips"
        case 1:
            let values: [UInt8] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x20, 0x22, 0x7B]
            let n = Int(rng.next() % 4) + 1
            for _ in 0..<n { bytes[position(bytes, &rng)] = values[Int(rng.next() % UInt64(values.count))] }
            return "\(n) bytes set"
        case 2:
            let huge: [UInt64] = [.max, UInt64(Int64.max), 1 << 63, 1 << 62, 1 << 40, 1 << 32, 0xFFFF_FFFF, 0x8000_0000, 0, 1, 2, 7]
            let value = huge[Int(rng.next() % UInt64(huge.count))]
            let field = fields.isEmpty ? (position(bytes, &rng), 8) : fields[Int(rng.next() % UInt64(fields.count))]
            let width = field.1 == 1 ? [1, 2, 4, 8][Int(rng.next() % 4)] : field.1
            for i in 0..<width where field.0 + i < bytes.count { bytes[field.0 + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            return "\(width)-byte value \(value) at byte \(field.0)"
        case 3:
            let cut = rng.next() % 2 == 0 ? position(bytes, &rng) : Int(rng.next() % UInt64(max(size, 1)))
            bytes = Array(bytes.prefix(cut))
            size = cut
            return "truncated to \(cut) bytes"
        case 4:
            let p = position(bytes, &rng), n = Int(rng.next() % 16) + 1
            bytes.insert(contentsOf: (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: p)
            size += n
            return "\(n) bytes inserted at \(p)"
        case 5:
            let p = position(bytes, &rng), n = min(Int(rng.next() % 16) + 1, bytes.count - p)
            bytes.removeSubrange(p..<(p + n))
            size -= n
            return "\(n) bytes deleted at \(p)"
        default:
            return mutateJSON(&bytes, size: &size, rng: &rng)
        }
    }

    /// A byte offset: half the time one of `fields`, else anywhere (always inside `bytes`).
    private func position(_ bytes: [UInt8], _ rng: inout SplitMix64) -> Int {
        guard !bytes.isEmpty else { return 0 }
        if !fields.isEmpty, rng.next() % 2 == 0 {
            let f = fields[Int(rng.next() % UInt64(fields.count))]
            return min(f.offset + Int(rng.next() % UInt64(f.width)), bytes.count - 1)
        }
        return Int(rng.next() % UInt64(bytes.count))
    }

    /// A structural change of the JSON (config.json, or the safetensors header rewritten with a
    /// consistent length so the change reaches the entry checks): a value replaced by another type
    /// or an extreme number, a key deleted or duplicated, or a value nested deeply.
    private func mutateJSON(_ bytes: inout [UInt8], size: inout Int, rng: inout SplitMix64) -> String {
        let headerRange: Range<Int>
        if target == .safetensors {
            guard bytes.count >= 8 else { return "no header" }
            let n = Int(bytes.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } & 0xFFFF_FFFF)
            headerRange = 8..<min(bytes.count, 8 + n)
        } else {
            headerRange = 0..<bytes.count
        }
        guard let json = try? JSONValue.parse(bytes[headerRange]) else { return "unparsable JSON left as is" }
        let paths = JSONPaths.all(json)
        let path = paths[Int(rng.next() % UInt64(paths.count))]
        let replacements: [JSONValue] = [
            .null, .bool(true), .string("x"), .array([]), .object([]), .number("-1"), .number("0"), .number("1.5"),
            .number("9223372036854775807"), .number("-9223372036854775808"), .number("18446744073709551616"),
            .number("1e999"), .number("-1e999"), .number("1e300"), .number("-1e300"), .number("4294967296"),
            .number("1099511627776"), .number("1e-320"), .array([.number("0"), .number("1099511627776"), .number("1099511627776")]),
        ]
        let action: JSONPaths.Action
        let what: String
        switch rng.next() % 4 {
        case 0:
            action = .delete
            what = "deleted"
        case 1:
            action = .duplicate
            what = "duplicated"
        case 2:
            action = .nest(depth: Int(rng.next() % 100) + 1)
            what = "nested"
        default:
            let r = replacements[Int(rng.next() % UInt64(replacements.count))]
            action = .replace(r)
            what = "set to \(r.description)"
        }
        // Every replacement is a JSON number token, so the mutated value always serializes.
        guard let serialized = try? JSONPaths.apply(action, at: path[...], in: json).serialized(indent: rng.next() % 2 == 0 ? 0 : 2) else {
            return "unserializable JSON left as is"
        }
        let text = Array(serialized.utf8)
        let description = "JSON \(path.map(\.description).joined(separator: "/")) \(what)"
        if target == .safetensors {
            var header = text
            while (8 + header.count) % 8 != 0 { header.append(0x20) }
            let length = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
            bytes = length + header + Array(bytes[headerRange.upperBound...])
        } else {
            bytes = text
        }
        size = bytes.count
        return description
    }
}

/// Paths to the values of a JSON document and edits at a path.
enum JSONPaths {
    /// One step: a member of an object (by index, since keys may repeat) or an array element.
    enum Step: CustomStringConvertible {
        case member(Int, String), element(Int)
        var description: String {
            switch self {
            case let .member(_, key): return key
            case let .element(i): return "[\(i)]"
            }
        }
    }

    enum Action {
        case delete, duplicate, nest(depth: Int), replace(JSONValue)
    }

    /// Every path in the document, the root (empty path) first.
    static func all(_ value: JSONValue) -> [[Step]] {
        var out: [[Step]] = [[]]
        switch value {
        case let .object(members):
            for (i, m) in members.enumerated() { out += all(m.1).map { [.member(i, m.0)] + $0 } }
        case let .array(items):
            for (i, item) in items.enumerated() { out += all(item).map { [.element(i)] + $0 } }
        default: break
        }
        return out
    }

    /// `value` with `action` applied at `path`. Deleting or duplicating the root replaces it by null.
    static func apply(_ action: Action, at path: ArraySlice<Step>, in value: JSONValue) -> JSONValue {
        guard let step = path.first else {
            switch action {
            case .delete, .duplicate: return .null
            case let .nest(depth): return (0..<depth).reduce(value) { v, _ in .array([v]) }
            case let .replace(r): return r
            }
        }
        let rest = path.dropFirst()
        switch (step, value) {
        case let (.member(i, _), .object(members)):
            var members = members
            if rest.isEmpty, case .delete = action { members.remove(at: i); return .object(members) }
            if rest.isEmpty, case .duplicate = action { members.insert(members[i], at: i + 1); return .object(members) }
            members[i].1 = apply(action, at: rest, in: members[i].1)
            return .object(members)
        case let (.element(i), .array(items)):
            var items = items
            if rest.isEmpty, case .delete = action { items.remove(at: i); return .array(items) }
            if rest.isEmpty, case .duplicate = action { items.insert(items[i], at: i + 1); return .array(items) }
            items[i] = apply(action, at: rest, in: items[i])
            return .array(items)
        default:
            return value
        }
    }
}

/// Offsets of the binary fields of a GGUF header (version, counts, key lengths, value types, array
/// counts, tensor dims, types and offsets), so mutations hit the fields that drive sizes.
enum GGUFFieldScanner {
    static func fields(_ b: [UInt8]) -> [(offset: Int, width: Int)] {
        var out: [(Int, Int)] = [(4, 4), (8, 8), (16, 8)]
        var pos = 24
        func u64(_ p: Int) -> Int? {
            guard p + 8 <= b.count else { return nil }
            return Int(exactly: (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[p + $1]) << (8 * UInt64($1)) })
        }
        func u32(_ p: Int) -> Int? {
            guard p + 4 <= b.count else { return nil }
            return (0..<4).reduce(0) { $0 | Int(b[p + $1]) << (8 * $1) }
        }
        let sizes: [Int: Int] = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8]
        /// Skips one value of `type` at `pos`, recording its count fields; false when lost.
        func skip(_ type: Int) -> Bool {
            if let s = sizes[type] {
                out.append((pos, s)); pos += s; return true
            }
            if type == 8 {
                guard let n = u64(pos), n <= b.count else { return false }
                pos += 8 + n; return true
            }
            guard type == 9, let t = u32(pos), let n = u64(pos + 4), n <= b.count else { return false }
            out.append((pos, 4)); out.append((pos + 4, 8))
            pos += 12
            if let s = sizes[t] { pos += s * n; return pos <= b.count }
            for _ in 0..<n { guard skip(t) else { return false } }
            return true
        }
        guard let tensors = u64(8), let kvs = u64(16) else { return out }
        for _ in 0..<kvs {
            guard let keyLength = u64(pos), keyLength <= b.count else { return out }
            out.append((pos, 8))
            pos += 8 + keyLength
            guard let type = u32(pos) else { return out }
            out.append((pos, 4))
            pos += 4
            guard skip(type) else { return out }
        }
        for _ in 0..<tensors {
            guard let nameLength = u64(pos), nameLength <= b.count else { return out }
            out.append((pos, 8))
            pos += 8 + nameLength
            guard let dims = u32(pos), dims <= 4 else { return out }
            out.append((pos, 4))
            pos += 4
            for _ in 0..<dims { out.append((pos, 8)); pos += 8 }
            out.append((pos, 4)); out.append((pos + 4, 8))
            pos += 12
        }
        return out.filter { $0.0 + $0.1 <= b.count }
    }
}
