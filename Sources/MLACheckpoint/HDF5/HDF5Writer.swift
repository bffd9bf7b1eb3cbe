import CHDF5
import Foundation
import MLATensor

/// Writes the HDF5 layout read by `HDF5Store`, streaming: each tensor is requested, written to its
/// dataset and released before the next.
public enum HDF5Writer {
    /// Writes `path` (a new file). `deflateLevel` 1-9 stores datasets in chunks of whole rows (about
    /// 1 MiB) with shuffle + deflate; nil keeps them contiguous so readers can memory-map them.
    /// A failed write removes the file. `config()` and `files()` are asked for after the tensors (a
    /// streaming converter knows them only then).
    public static func write(path: String, config: () throws -> JSONValue, entries: [TensorWriteEntry], deflateLevel: Int?,
                             files: () throws -> [String: [UInt8]], tensor: (String) throws -> Tensor) throws {
        do {
            try writeUnchecked(path: path, config: config, entries: entries, deflateLevel: deflateLevel, files: files, tensor: tensor)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    private static func writeUnchecked(path: String, config: () throws -> JSONValue, entries: [TensorWriteEntry], deflateLevel: Int?,
                                       files: () throws -> [String: [UInt8]], tensor: (String) throws -> Tensor) throws {
        func fail(_ what: String) -> CheckpointError { .writeFailed(path: path, reason: what) }
        // The HDF5 1.10 file format (superblock 3, version-2 object headers, fixed-array chunk
        // indexes) checksums every piece of metadata, so libhdf5 detects a damaged file instead of
        // following garbage addresses (HDF5Store refuses the unchecksummed older formats).
        let file = HDF5Library.withLock {
            let access = H5Pcreate(mla_h5p_file_access())
            defer { H5Pclose(access) }
            H5Pset_libver_bounds(access, H5F_LIBVER_V110, H5F_LIBVER_V110)
            let create = H5Pcreate(mla_h5p_file_create())
            defer { H5Pclose(create) }
            H5Pset_obj_track_times(create, false)
            return H5Fcreate(path, mla_h5f_acc_trunc(), create, access)
        }
        guard file >= 0 else { throw fail("HDF5 cannot create the file") }
        var closed = false
        defer { if !closed { _ = HDF5Library.withLock { H5Fclose(file) } } }
        for entry in entries {
            guard !entry.name.contains("/"), !entry.name.isEmpty, entry.name != "files" else {
                throw CheckpointError.malformedTensor(file: path, tensor: entry.name, reason: "name cannot be an HDF5 root dataset name")
            }
            let t = try tensor(entry.name)
            guard t.dtype == entry.dtype, t.shape == entry.shape else {
                throw CheckpointError.malformedTensor(file: path, tensor: entry.name,
                                                      reason: "writer expected \(entry.dtype.rawValue) \(entry.shape) but got \(t.dtype.rawValue) \(t.shape)")
            }
            try HDF5Library.withLock {
                try writeDataset(file, name: entry.name, tensor: t, deflateLevel: deflateLevel, path: path)
            }
        }
        let configText = try config().serialized()
        let files = try files()
        try HDF5Library.withLock {
            guard HDF5Library.writeStringAttribute(file, "format", HDF5Library.formatName),
                  HDF5Library.writeStringAttribute(file, "format_version", HDF5Library.formatVersion),
                  HDF5Library.writeStringAttribute(file, "config_json", configText) else {
                throw fail("cannot write the root attributes")
            }
        }
        if !files.isEmpty {
            try HDF5Library.withLock {
                let create = H5Pcreate(mla_h5p_group_create())
                defer { H5Pclose(create) }
                H5Pset_obj_track_times(create, false)
                let group = H5Gcreate2(file, "files", mla_h5p_default(), create, mla_h5p_default())
                guard group >= 0 else { throw fail("cannot create group /files") }
                defer { H5Gclose(group) }
                for (name, bytes) in files.sorted(by: { $0.key < $1.key }) {
                    let t = Tensor(dtype: .u8, shape: [bytes.count], storage: .owned(bytes))
                    try writeDataset(group, name: name, tensor: t, deflateLevel: nil, path: path)
                }
            }
        }
        closed = true
        guard HDF5Library.withLock({ H5Fclose(file) }) >= 0 else { throw fail("HDF5 could not finish the file") }
    }

    /// Creates and fills one dataset; called with the library lock held.
    private static func writeDataset(_ parent: hid_t, name: String, tensor t: Tensor, deflateLevel: Int?, path: String) throws {
        func fail(_ what: String) -> CheckpointError { .malformedTensor(file: path, tensor: name, reason: what) }
        let (type, ownsType, attribute) = HDF5Library.storageType(for: t.dtype)
        defer { if ownsType { H5Tclose(type) } }
        let dims = t.shape.map { hsize_t($0) }
        let space = dims.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), dims, nil)
        guard space >= 0 else { throw fail("cannot create dataspace") }
        defer { H5Sclose(space) }
        let dcpl = H5Pcreate(mla_h5p_dataset_create())
        defer { H5Pclose(dcpl) }
        // No modification times: the same model always gives the same bytes.
        H5Pset_obj_track_times(dcpl, false)
        if let level = deflateLevel, !dims.isEmpty, t.elementCount > 0 {
            let rowBytes = max(1, t.byteCount / t.shape[0])
            var chunk = dims
            chunk[0] = hsize_t(max(1, min(t.shape[0], (1 << 20) / rowBytes)))
            H5Pset_chunk(dcpl, Int32(chunk.count), chunk)
            H5Pset_shuffle(dcpl)
            H5Pset_deflate(dcpl, UInt32(level))
        }
        let ds = H5Dcreate2(parent, name, type, space, mla_h5p_default(), dcpl, mla_h5p_default())
        guard ds >= 0 else { throw fail("cannot create dataset") }
        defer { H5Dclose(ds) }
        if let attribute, !HDF5Library.writeStringAttribute(ds, HDF5Library.dtypeAttribute, attribute) {
            throw fail("cannot write its dtype attribute")
        }
        if t.byteCount > 0 {
            let status = t.withRawBytes { H5Dwrite(ds, type, mla_h5s_all(), mla_h5s_all(), mla_h5p_default(), $0.baseAddress) }
            guard status >= 0 else { throw fail("HDF5 write failed") }
        }
    }
}
