import Foundation
import Testing
import MLATestSupport
import MLATensor
@testable import MLACheckpoint

@Suite(.serialized) struct HDF5Tests {
    static let config = try! JSONValue.parse(#"{"model_type": "llama", "hidden_size": 8, "rms_norm_eps": 1e-05}"#)

    @Test(arguments: [nil, 4] as [Int?])
    func roundTripEveryDTypeBitExact(deflate: Int?) throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        var tensors: [(String, Tensor)] = []
        for (i, dt) in SafetensorsTests.roundTripDTypes.enumerated() {
            var t = randomTensor(dt, [9, 5], seed: UInt64(i))
            if dt == .bool { t = Tensor(dtype: .bool, shape: [9, 5], storage: .owned((0..<45).map { UInt8($0 % 2) })) }
            tensors.append(("model.layers.0.t_\(dt.rawValue).weight", t))
        }
        tensors.append(("scalar", randomTensor(.f32, [], seed: 77)))
        tensors.append(("empty", randomTensor(.f16, [0, 3], seed: 78)))
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        let path = dir + "/m.h5"
        let files = ["tokenizer.json": Array("{\"a\": 1}".utf8), "empty.txt": []]
        try HDF5Writer.write(path: path, config: { Self.config },
                             entries: tensors.map { TensorWriteEntry(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) },
                             deflateLevel: deflate, files: { files }) { byName[$0]! }
        let store = try HDF5Store(path: path)
        #expect(store.configJSON == Self.config)
        #expect(Set(store.names) == Set(byName.keys))
        for (name, t) in tensors {
            let back = try store.tensor(name)
            #expect(back.dtype == t.dtype && back.shape == t.shape, "\(name)")
            #expect(bytes(of: back) == bytes(of: t), "\(name)")
            if deflate == nil && t.byteCount > 0 {
                if case .mapped = back.storage {} else { Issue.record("\(name): contiguous dataset not memory-mapped") }
            }
        }
        #expect(try store.auxiliaryFiles() == files)
    }

    /// A file written by h5py (script beside the fixture) reads with the documented meaning.
    @Test func readsFileWrittenByH5py() throws {
        let store = try HDF5Store(path: Fixtures.path("hdf5/reference.h5"))
        #expect(store.configJSON["hidden_size"]?.int == 8)
        #expect(try store.tensor("w.f32").floats() == [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
        #expect(try store.tensor("w.f16").dtype == .f16)
        #expect(try store.tensor("w.f16").floats() == [0.5, -1, 65504, 0x1p-24])
        #expect(try store.tensor("w.bf16").dtype == .bf16)
        #expect(try store.tensor("w.bf16").floats() == [1, -2, .infinity])
        #expect(try bytes(of: store.tensor("w.i32")) == [1, -2, 3, -4].flatMap { (v: Int32) in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
        let deflated = try store.tensor("w.deflated")
        #expect(deflated.shape == [8, 8])
        #expect(zip(deflated.doubles(), (0..<64).map { Double($0) / 63 }).allSatisfy { abs($0 - $1) < 1e-15 })
        #expect(try store.auxiliaryFiles() == ["tokenizer.json": Array(#"{"x": 1}"#.utf8)])
    }

    @Test func rejectsBadFiles() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let reference = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("hdf5/reference.h5")))
        let cases: [(String, Data, String)] = [
            ("garbage.h5", Data("this is not hdf5 at all".utf8), "not an HDF5 file"),
            ("truncated.h5", reference.prefix(reference.count / 3), "truncated"),
            ("empty.h5", Data(), "truncated"),
        ]
        for (name, data, mention) in cases {
            let path = dir + "/" + name
            _ = FileManager.default.createFile(atPath: path, contents: data)
            let error = try #require(throws: CheckpointError.self) {
                let store = try HDF5Store(path: path)
                for n in store.names { _ = try store.tensor(n).floats() }
            }
            #expect(error.description.hasPrefix(path), "\(error)")
            #expect(error.description.contains(mention), "\(error)")
        }
        // A valid HDF5 file that is not in our layout: h5py's reference file with another format name.
        // (h5py leaves the root object header without a checksum, so the file stays valid; the same edit
        // in a file of HDF5Writer breaks the header's checksum, and libhdf5 1.10.8 then leaks the failed
        // cache entry, which `H5close` at exit reports as "HDF5: infinite loop closing library". Damaged
        // files are read in fresh processes instead: InputFuzzTests, InputValidationCLITests.)
        let foreign = dir + "/foreign.h5"
        var bytes = reference
        let format = try #require(bytes.range(of: Data("mla-convert-hdf5".utf8)))
        bytes.replaceSubrange(format, with: Data("xxx-convert-hdf5".utf8))
        try bytes.write(to: URL(fileURLWithPath: foreign))
        let error = try #require(throws: CheckpointError.self) { try HDF5Store(path: foreign) }
        #expect(error.description.contains("root attribute format is not"), "\(error)")
    }

    @Test func failedWriteLeavesNoFile() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let path = dir + "/partial.h5"
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try HDF5Writer.write(path: path, config: { Self.config }, entries: [TensorWriteEntry(name: "a", dtype: .f32, shape: [1])],
                                 deflateLevel: nil, files: { [:] }) { _ in throw Boom() }
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
