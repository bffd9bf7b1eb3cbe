import Foundation
import Testing
import MLATestSupport
import MLATensor
@testable import MLACheckpoint

@Suite struct SafetensorsTests {
    static let roundTripDTypes: [DType] = [.f64, .f32, .f16, .bf16, .bool, .u8, .i8, .u16, .i16, .u32, .i32, .u64, .i64,
                                           .f8e4m3, .f8e5m2]

    @Test func roundTripEveryDTypeBitExact() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        var tensors: [(String, Tensor)] = []
        for (i, dt) in Self.roundTripDTypes.enumerated() {
            tensors.append(("t.\(dt.rawValue)", finiteRandomTensor(dt, [3, 5], seed: UInt64(i))))
        }
        tensors.append(("scalar", finiteRandomTensor(.f32, [], seed: 99)))
        tensors.append(("empty", randomTensor(.bf16, [0, 7], seed: 100)))
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        let path = dir + "/x.safetensors"
        try SafetensorsWriter.writeFile(path, entries: tensors.map { TensorWriteEntry(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) },
                                        metadata: ["note": "hello"]) { byName[$0]! }
        let file = try SafetensorsFile(path: path)
        #expect(Set(file.names) == Set(byName.keys))
        #expect(file.metadata == ["format": "pt", "note": "hello"])
        for (name, t) in tensors {
            let back = try file.tensor(name)
            #expect(back.dtype == t.dtype && back.shape == t.shape)
            #expect(bytes(of: back) == bytes(of: t), "\(name)")
            if case .mapped = back.storage {} else { Issue.record("\(name) is not memory-mapped") }
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        let headerLength = Int(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        #expect((8 + headerLength) % 8 == 0, "header padded to a multiple of 8")
        #expect(size == 8 + headerLength + tensors.reduce(0) { $0 + $1.1.byteCount })
    }

    /// The reference implementation (pip `safetensors`, script beside the fixture) wrote this file:
    /// our reader gets its values, and our writer produces the identical bytes.
    @Test func matchesReferenceImplementation() throws {
        let refPath = Fixtures.path("safetensors/reference.safetensors")
        let ref = try SafetensorsFile(path: refPath)
        #expect(try ref.tensor("a.f32").floats() == [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
        #expect(try ref.tensor("b.f16").floats() == [0, 0.5, 1, 1.5])
        #expect(try ref.tensor("e.f64").doubles() == [3.25])
        #expect(try ref.tensor("f.empty").shape == [0, 4])
        #expect(try bytes(of: ref.tensor("c.i64")) == [1, -2, 3].flatMap { (v: Int64) in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let ours = dir + "/ours.safetensors"
        let entries = ref.names.shuffled().map { name in
            TensorWriteEntry(name: name, dtype: ref.info(name)!.dtype, shape: ref.info(name)!.shape)
        }
        try SafetensorsWriter.writeFile(ours, entries: entries, metadata: [:]) { try ref.tensor($0) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: ours)) == Data(contentsOf: URL(fileURLWithPath: refPath)))
    }

    @Test func shardedDirectoryRoundTrip() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let tensors = (0..<7).map { ("layer.\($0).weight", finiteRandomTensor(.bf16, [16, 32], seed: UInt64($0))) }
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        let written = try SafetensorsWriter.writeDirectory(
            dir, entries: tensors.map { TensorWriteEntry(name: $0.0, dtype: .bf16, shape: [16, 32]) }, metadata: [:],
            maxShardBytes: 2500) { byName[$0]! }
        #expect(written.contains("model.safetensors.index.json"))
        #expect(written.filter { $0.hasSuffix(".safetensors") }.count == 4, "1024-byte tensors in 2500-byte shards: 2 per shard")
        #expect(written.first == "model-00001-of-00004.safetensors")
        let store = try SafetensorsDirectoryStore(directory: dir)
        #expect(store.warnings.isEmpty)
        #expect(Set(store.names) == Set(byName.keys))
        for (name, t) in tensors { #expect(try bytes(of: store.tensor(name)) == bytes(of: t)) }
        let index = try JSONValue.parse(Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors.index.json")))
        #expect(index["metadata"]?["total_size"]?.int == 7 * 1024)
        #expect(index["metadata"]?["total_parameters"]?.int == 7 * 512)
        #expect(index["weight_map"]?.object?.count == 7)
    }

    /// Tensors written in pieces of uneven sizes give the same files as whole tensors; a tensor given
    /// too few or too many bytes fails naming the file and the tensor, and leaves no file.
    @Test func piecewiseWritingMatchesWholeTensors() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let tensors = (0..<5).map { ("layer.\($0).weight", finiteRandomTensor(.bf16, [16, 32], seed: UInt64($0))) }
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        let entries = tensors.map { TensorWriteEntry(name: $0.0, dtype: .bf16, shape: [16, 32]) }
        try FileManager.default.createDirectory(atPath: dir + "/whole", withIntermediateDirectories: false)
        try FileManager.default.createDirectory(atPath: dir + "/pieces", withIntermediateDirectories: false)
        let whole = try SafetensorsWriter.writeDirectory(dir + "/whole", entries: entries, metadata: [:], maxShardBytes: 2500) { byName[$0]! }
        let pieces = try SafetensorsWriter.writeDirectoryInPieces(dir + "/pieces", entries: entries, metadata: [:], maxShardBytes: 2500) { sink in
            let all = bytes(of: byName[sink.entry.name]!)
            for range in [0..<1, 1..<100, 100..<100, 100..<1024] { try all[range].withUnsafeBytes { try sink.write($0) } }
        }
        #expect(whole == pieces && whole.count == 4)
        for name in whole {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/whole/" + name)) == Data(contentsOf: URL(fileURLWithPath: dir + "/pieces/" + name)))
        }
        let path = dir + "/short.safetensors"
        for extra in [-1, 1] {
            let error = try #require(throws: CheckpointError.self) {
                try SafetensorsWriter.writeFileInPieces(path, entries: Array(entries.prefix(1)), metadata: [:]) { sink in
                    try [UInt8](repeating: 0, count: 1024 + extra).withUnsafeBytes { try sink.write($0) }
                }
            }
            #expect(error.description.contains(path) && error.description.contains("layer.0.weight") && error.description.contains("1024"))
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    @Test func lazyOpenOfLargeFile() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let big = Tensor(dtype: .f32, shape: [4096, 4096], storage: .owned([UInt8](repeating: 1, count: 4096 * 4096 * 4)))
        try SafetensorsWriter.writeFile(dir + "/big.safetensors", entries: [TensorWriteEntry(name: "w", dtype: .f32, shape: [4096, 4096])],
                                        metadata: [:]) { _ in big }
        let file = try SafetensorsFile(path: dir + "/big.safetensors")
        let t = try file.tensor("w")
        guard case let .mapped(_, offset, count) = t.storage else { Issue.record("not mapped"); return }
        #expect(count == 64 << 20 && offset % 8 == 0)
    }
}

/// One crafted file per rejection rule for safetensors (docs/input-validation.md); each error names the file (and tensor).
@Suite struct SafetensorsRejectionTests {
    func expectRejected(header: String, data: [UInt8] = [], claimedLength: UInt64? = nil, rawFile: [UInt8]? = nil,
                        mentions: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let path = dir + "/bad.safetensors"
        if let rawFile {
            _ = FileManager.default.createFile(atPath: path, contents: Data(rawFile))
        } else {
            writeRawSafetensors(path, header: header, data: data, claimedLength: claimedLength)
        }
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted a bad file", sourceLocation: sourceLocation)
        } catch let error as CheckpointError {
            #expect(error.description.hasPrefix(path), "\(error)", sourceLocation: sourceLocation)
            for m in mentions { #expect(error.description.contains(m), "\(error) should mention \(m)", sourceLocation: sourceLocation) }
            #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error type \(error)", sourceLocation: sourceLocation)
        }
    }

    let good = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
    let eight = [UInt8](repeating: 0, count: 8)

    @Test func rule1Sizes() {
        expectRejected(header: "", rawFile: [1, 2, 3], mentions: ["shorter"])
        expectRejected(header: good, data: eight, claimedLength: 200_000_000, mentions: ["100 MB"])
        expectRejected(header: good, data: eight, claimedLength: 10_000, mentions: ["header claims"])
    }

    @Test func rule2HeaderText() {
        expectRejected(header: #"[{"w":1}]"#, mentions: ["'{'"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}xx"#, data: eight, mentions: ["'}'"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, data: eight)
        expectRejected(header: "{\"w\u{FFFF}\":\u{1}}", mentions: ["JSON"])
    }

    @Test func rule3DuplicateKeys() {
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                       data: eight, mentions: ["duplicate"])
        expectRejected(header: #"{"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}"#, data: eight, mentions: ["duplicate"])
    }

    @Test func rule4Fields() {
        expectRejected(header: #"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, data: eight, mentions: ["'w'", "dtype"])
        expectRejected(header: #"{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, data: eight, mentions: ["'w'", "F33"])
        expectRejected(header: #"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, data: [0], mentions: ["'w'", "F4"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: eight, mentions: ["'w'"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, data: eight, mentions: ["'w'"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: eight, mentions: ["'w'", "data_offsets"])
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: eight, mentions: ["'w'"])
    }

    @Test func rule5SizeMismatchAndOverflow() {
        expectRejected(header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eight, mentions: ["'w'", "12 bytes"])
        expectRejected(header: #"{"w":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, data: eight,
                       mentions: ["'w'", "overflow"])
    }

    @Test func rule6GapsAndOverlaps() {
        expectRejected(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                       data: [UInt8](repeating: 0, count: 12), mentions: ["'b'", "overlap"])
        expectRejected(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight, mentions: ["'a'", "gap"])
    }

    @Test func rule7TruncatedOrTrailing() {
        expectRejected(header: good, data: [0, 0, 0, 0], mentions: ["truncated"])
        expectRejected(header: good, data: eight + [1], mentions: ["trailing"])
    }

    @Test func rule8MetadataValues() {
        expectRejected(header: #"{"__metadata__":{"format":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eight,
                       mentions: ["__metadata__"])
    }

    @Test func directoryProblems() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let none = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(none.description.contains(dir) && none.description.contains("no model weights"))
        let t = randomTensor(.f32, [2], seed: 1)
        let e = TensorWriteEntry(name: "w", dtype: .f32, shape: [2])
        try SafetensorsWriter.writeFile(dir + "/a.safetensors", entries: [e], metadata: [:]) { _ in t }
        try SafetensorsWriter.writeFile(dir + "/b.safetensors", entries: [TensorWriteEntry(name: "v", dtype: .f32, shape: [2])],
                                        metadata: [:]) { _ in t }
        let several = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(several.description.contains("a.safetensors, b.safetensors"))

        func index(_ map: String) throws {
            try Data(#"{"metadata":{"total_size":16},"weight_map":{\#(map)}}"#.utf8)
                .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        }
        try index(#""w":"a.safetensors","v":"b.safetensors","x":"b.safetensors""#)
        let missingTensor = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(missingTensor.description.contains("'x'") && missingTensor.description.contains("b.safetensors"))
        try SafetensorsWriter.writeFile(dir + "/b.safetensors", entries: [TensorWriteEntry(name: "v", dtype: .f32, shape: [2]),
                                                                          TensorWriteEntry(name: "u", dtype: .f32, shape: [2])],
                                        metadata: [:]) { _ in t }
        try index(#""w":"a.safetensors","v":"b.safetensors""#)
        let unlisted = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(unlisted.description.contains("'u'") && unlisted.description.contains("not listed"))
        try index(#""w":"a.safetensors","v":"c.safetensors""#)
        let missingShard = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(missingShard.description.contains("c.safetensors") && missingShard.description.contains("missing"))
        try SafetensorsWriter.writeFile(dir + "/b.safetensors", entries: [e, TensorWriteEntry(name: "v", dtype: .f32, shape: [2])],
                                        metadata: [:]) { _ in t }
        try index(#""w":"a.safetensors","v":"b.safetensors""#)
        let twice = try #require(throws: CheckpointError.self) { try SafetensorsDirectoryStore(directory: dir) }
        #expect(twice.description.contains("'w'") && twice.description.contains("one shard"))
        try SafetensorsWriter.writeFile(dir + "/b.safetensors", entries: [TensorWriteEntry(name: "v", dtype: .f32, shape: [2])],
                                        metadata: [:]) { _ in t }
        try index(#""w":"a.safetensors","v":"b.safetensors""#)
        let ok = try SafetensorsDirectoryStore(directory: dir)
        #expect(ok.warnings.count == 0 && ok.names.count == 2)
        try Data(#"{"metadata":{"total_size":99},"weight_map":{"w":"a.safetensors","v":"b.safetensors"}}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        #expect(try SafetensorsDirectoryStore(directory: dir).warnings.first?.contains("total_size") == true)
    }
}
