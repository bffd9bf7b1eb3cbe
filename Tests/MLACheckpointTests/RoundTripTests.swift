import Foundation
import Testing
import MLATensor
import MLATestSupport
@testable import MLACheckpoint

/// Format round trips on the real sample model: every tensor comes back bit for bit.
@Suite(.serialized) struct RoundTripTests {
    func export(_ source: Checkpoint, to path: String, format: OutputFormat, dtype: DType? = nil, maxShard: Int? = nil) throws {
        let entries = source.store.names.map { name -> TensorWriteEntry in
            let info = source.store.info(name)!
            return TensorWriteEntry(name: name, dtype: dtype ?? info.dtype, shape: info.shape)
        }
        let writer = CheckpointWriter(format: format, maxShardBytes: maxShard)
        try writer.write(
            to: try writer.output(path, force: false, inputs: [source.path]), config: source.config.raw, entries: entries,
            metadata: [:], auxiliaryFiles: source.auxiliaryFiles) { name in
            let t = try source.store.tensor(name)
            return dtype.map { t.converted(to: $0) } ?? t
        }
    }

    func expectSameTensors(_ a: Checkpoint, _ b: Checkpoint, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(Set(a.store.names) == Set(b.store.names), sourceLocation: sourceLocation)
        #expect(a.config == b.config || a.config.raw == b.config.raw, sourceLocation: sourceLocation)
        for name in a.store.names {
            let x = try a.store.tensor(name), y = try b.store.tensor(name)
            #expect(x.dtype == y.dtype && x.shape == y.shape, "\(name)", sourceLocation: sourceLocation)
            #expect(bytes(of: x) == bytes(of: y), "\(name)", sourceLocation: sourceLocation)
        }
    }

    /// GGUF -> HF directory (sharded) -> the same tensors as the GGUF reader gives (dequantized,
    /// Q/K in rotate-half order), and the same normalized config.
    @Test(.needsSampleData) func ggufToHuggingFace() throws {
        let sample = SampleData.modelPath
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let gguf = try Checkpoint.open(sample)
        try export(gguf, to: dir + "/hf", format: .hf, maxShard: 200_000_000)
        let hf = try Checkpoint.open(dir + "/hf")
        #expect(hf.format == .huggingFace && hf.config.numLayers == 30)
        #expect(FileManager.default.fileExists(atPath: dir + "/hf/model.safetensors.index.json"))
        try expectSameTensors(gguf, hf)
    }

    /// safetensors -> HDF5 -> safetensors is bit-exact for every float dtype (and HDF5 with deflate).
    @Test(.needsSampleData, arguments: [DType.f32, .bf16, .f16])
    func safetensorsHDF5SafetensorsBitExact(dtype: DType) throws {
        let sample = SampleData.modelPath
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        try export(try Checkpoint.open(sample), to: dir + "/a", format: .hf, dtype: dtype)
        let a = try Checkpoint.open(dir + "/a")
        try export(a, to: dir + "/b.h5", format: .hdf5)
        let b = try Checkpoint.open(dir + "/b.h5")
        try export(b, to: dir + "/c", format: .hf)
        let c = try Checkpoint.open(dir + "/c")
        try expectSameTensors(a, b)
        try expectSameTensors(a, c)
        #expect(c.auxiliaryFiles == a.auxiliaryFiles)
    }
}
