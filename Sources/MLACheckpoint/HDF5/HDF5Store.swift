import CHDF5
import Foundation
import MLATensor

/// A checkpoint in this toolkit's HDF5 layout (docs/formats.md): one dataset per tensor at the root
/// named by its Hugging Face name, root attributes `format`, `format_version` and `config_json`, side
/// files as uint8 datasets under `/files`. Contiguous datasets are memory-mapped at their file offset
/// (lazy, no copy); chunked or compressed ones are read through HDF5 on demand.
public final class HDF5Store: TensorStore, @unchecked Sendable {
    // Immutable after init; HDF5 calls in `tensor(_:)` are serialized by HDF5Library.lock.
    public let path: String
    public let names: [String]
    /// The model's config.json object.
    public let configJSON: JSONValue
    private let entries: [String: Entry]
    private let mapped: MappedFile

    struct Entry {
        let info: TensorInfo
        /// File offset of contiguous, unfiltered data; nil when the data must be read through HDF5.
        let offset: Int?
    }

    public init(path: String) throws {
        self.path = path
        let mapped = try MappedFile(path: path)
        self.mapped = mapped
        try Self.requireChecksummedFormat(mapped, path: path)
        let result: (JSONValue, [String], [String: Entry]) = try HDF5Library.withLock {
            guard H5Fis_hdf5(path) > 0 else {
                throw CheckpointError.malformed(file: path, reason: "not an HDF5 file (or truncated)")
            }
            let file = H5Fopen(path, mla_h5f_acc_rdonly(), mla_h5p_default())
            guard file >= 0 else { throw CheckpointError.malformed(file: path, reason: "HDF5 cannot open it (truncated or damaged)") }
            defer { H5Fclose(file) }
            guard HDF5Library.readStringAttribute(file, "format") == HDF5Library.formatName else {
                throw CheckpointError.malformed(
                    file: path, reason: "root attribute format is not \"\(HDF5Library.formatName)\"; not written by mla-convert export --format hdf5")
            }
            guard let text = HDF5Library.readStringAttribute(file, "config_json") else {
                throw CheckpointError.missingConfigKey(file: path, key: "config_json (root attribute)")
            }
            let config: JSONValue
            do { config = try JSONValue.parse(text) } catch {
                throw CheckpointError.malformed(file: path, reason: "config_json attribute is not valid JSON: \(error)")
            }
            var names: [String] = []
            var entries: [String: Entry] = [:]
            for name in try Self.childNames(file, path: path) {
                guard H5Oexists_by_name(file, name, mla_h5p_default()) > 0 else { continue }
                var objectInfo = H5O_info_t()
                guard H5Oget_info_by_name2(file, name, &objectInfo, UInt32(H5O_INFO_BASIC), mla_h5p_default()) >= 0 else {
                    throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "cannot read object info")
                }
                guard objectInfo.type == H5O_TYPE_DATASET else { continue }
                entries[name] = try Self.describe(file: file, name: name, path: path, fileSize: mapped.size)
                names.append(name)
            }
            return (config, names, entries)
        }
        (configJSON, names, entries) = result
    }

    /// Largest ratio of a dataset's data to its stored bytes (deflate's limit is 1032:1).
    static let maxExpansion = 1032

    /// Refuses files whose metadata has no checksums (superblock version 0 or 1, the HDF5 1.6
    /// format that h5py and libhdf5 write by default): libhdf5 1.10 follows their addresses and
    /// counts unchecked and crashes or loops forever on a damaged file (the input fuzz test found
    /// both). From superblock version 2 on, every superblock, object header, B-tree and heap but the
    /// global heap carries a checksum that libhdf5 verifies before use.
    private static func requireChecksummedFormat(_ mapped: MappedFile, path: String) throws {
        let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
        guard mapped.size > signature.count, mapped.bytes(offset: 0, count: signature.count) == signature else {
            throw CheckpointError.malformed(file: path, reason: "not an HDF5 file (no signature at byte 0) or truncated")
        }
        let version = mapped.bytes(offset: signature.count, count: 1)[0]
        guard version >= 2 else {
            throw CheckpointError.malformed(
                file: path,
                reason: "HDF5 superblock version \(version) has no checksums, so a damaged file could crash libhdf5; write it in the HDF5 1.10 format (mla-convert export --format hdf5 does; h5py: libver=('v110', 'latest'))")
        }
    }

    private static func childNames(_ group: hid_t, path: String) throws -> [String] {
        var info = H5G_info_t()
        guard H5Gget_info(group, &info) >= 0 else { throw CheckpointError.malformed(file: path, reason: "cannot list the root group") }
        var names: [String] = []
        for i in 0..<info.nlinks {
            let length = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, mla_h5p_default())
            guard length >= 0, length < 1 << 16 else { throw CheckpointError.malformed(file: path, reason: "unreadable link name") }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buffer, buffer.count, mla_h5p_default())
            names.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return names
    }

    private static func describe(file: hid_t, name: String, path: String, fileSize: Int) throws -> Entry {
        let ds = H5Dopen2(file, name, mla_h5p_default())
        guard ds >= 0 else { throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "cannot open dataset") }
        defer { H5Dclose(ds) }
        let type = H5Dget_type(ds)
        defer { H5Tclose(type) }
        let attribute = HDF5Library.readStringAttribute(ds, HDF5Library.dtypeAttribute)
        guard let dtype = HDF5Library.dtype(of: type, attribute: attribute) else {
            throw CheckpointError.unsupportedDType(file: path, tensor: name,
                                                   dtype: "HDF5 class \(H5Tget_class(type).rawValue) size \(H5Tget_size(type))\(attribute.map { " (\($0))" } ?? "")")
        }
        let space = H5Dget_space(ds)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        guard rank >= 0, rank <= 8 else { throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "rank \(rank)") }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        H5Sget_simple_extent_dims(space, &dims, nil)
        var shape: [Int] = []
        for d in dims.prefix(rank) {
            guard d < hsize_t(Int.max) else { throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "dimension too large") }
            shape.append(Int(d))
        }
        guard let bytes = Tensor.byteCount(dtype: dtype, shape: shape) else {
            throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "size of shape \(shape) overflows")
        }
        let dcpl = H5Dget_create_plist(ds)
        defer { H5Pclose(dcpl) }
        var offset: Int?
        if H5Pget_layout(dcpl) == H5D_CONTIGUOUS, H5Pget_nfilters(dcpl) == 0, bytes > 0 {
            let address = H5Dget_offset(ds)
            if address != mla_haddr_undef() {
                guard address < haddr_t(fileSize), Int(address) <= fileSize - bytes else {
                    throw CheckpointError.truncated(file: path, reason: "dataset '\(name)' data lies past the end of the file")
                }
                offset = Int(address)
            }
        }
        // Data read through HDF5 (chunked, filtered, or never written and so all fill value) is
        // allocated at its full size: its claimed size must be one the stored bytes can produce
        // (deflate expands at most 1032-fold), not a few bytes of metadata asking for terabytes.
        let stored = Int(exactly: H5Dget_storage_size(ds)) ?? Int.max
        if offset == nil, bytes > 0, bytes / Self.maxExpansion > stored {
            throw CheckpointError.malformedTensor(
                file: path, tensor: name, reason: "claims \(bytes) bytes of data from \(stored) stored; the file is damaged")
        }
        return Entry(info: TensorInfo(name: name, shape: shape, dtype: dtype, storedType: dtype.rawValue,
                                      storedBytes: bytes, file: path), offset: offset)
    }

    public func info(_ name: String) -> TensorInfo? { entries[name]?.info }

    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(file: path, tensor: name) }
        if let offset = e.offset {
            return Tensor(dtype: e.info.dtype, shape: e.info.shape, storage: .mapped(mapped, offset: offset, count: e.info.storedBytes))
        }
        let bytes = try readDataset(name, expectedBytes: e.info.storedBytes)
        return Tensor(dtype: e.info.dtype, shape: e.info.shape, storage: .owned(bytes))
    }

    /// The raw bytes of dataset `name` (relative to the root) read through HDF5.
    private func readDataset(_ name: String, expectedBytes: Int) throws -> [UInt8] {
        if expectedBytes == 0 { return [] }
        return try HDF5Library.withLock {
            let file = H5Fopen(path, mla_h5f_acc_rdonly(), mla_h5p_default())
            guard file >= 0 else { throw CheckpointError.malformed(file: path, reason: "HDF5 cannot reopen it") }
            defer { H5Fclose(file) }
            let ds = H5Dopen2(file, name, mla_h5p_default())
            guard ds >= 0 else { throw CheckpointError.missingTensor(file: path, tensor: name) }
            defer { H5Dclose(ds) }
            let type = H5Dget_type(ds)
            defer { H5Tclose(type) }
            guard H5Dget_storage_size(ds) <= hsize_t(mapped.size) else {
                throw CheckpointError.truncated(file: path, reason: "dataset '\(name)' claims more storage than the file holds")
            }
            var buffer = [UInt8](repeating: 0, count: expectedBytes)
            // Reading with the file type as the memory type returns the stored bits unchanged.
            guard H5Dread(ds, type, mla_h5s_all(), mla_h5s_all(), mla_h5p_default(), &buffer) >= 0 else {
                throw CheckpointError.malformedTensor(file: path, tensor: name, reason: "HDF5 could not read the data (damaged or truncated)")
            }
            return buffer
        }
    }

    /// Side files stored under `/files` (tokenizer.json, ...): name -> bytes.
    public func auxiliaryFiles() throws -> [String: [UInt8]] {
        try HDF5Library.withLock {
            let file = H5Fopen(path, mla_h5f_acc_rdonly(), mla_h5p_default())
            guard file >= 0 else { throw CheckpointError.malformed(file: path, reason: "HDF5 cannot reopen it") }
            defer { H5Fclose(file) }
            guard H5Lexists(file, "files", mla_h5p_default()) > 0 else { return [:] }
            let group = H5Gopen2(file, "files", mla_h5p_default())
            guard group >= 0 else { throw CheckpointError.malformed(file: path, reason: "cannot open group /files") }
            defer { H5Gclose(group) }
            var out: [String: [UInt8]] = [:]
            for name in try Self.childNames(group, path: path) {
                let ds = H5Dopen2(group, name, mla_h5p_default())
                guard ds >= 0 else { throw CheckpointError.malformed(file: path, reason: "cannot open /files/\(name)") }
                defer { H5Dclose(ds) }
                let space = H5Dget_space(ds)
                defer { H5Sclose(space) }
                let count = H5Sget_simple_extent_npoints(space)
                guard count >= 0, count < Int64(mapped.size) + 1 else {
                    throw CheckpointError.malformed(file: path, reason: "/files/\(name) has an impossible size")
                }
                var buffer = [UInt8](repeating: 0, count: Int(count))
                if count > 0 {
                    guard H5Dread(ds, mla_h5t_std_u8le(), mla_h5s_all(), mla_h5s_all(), mla_h5p_default(), &buffer) >= 0 else {
                        throw CheckpointError.malformed(file: path, reason: "cannot read /files/\(name)")
                    }
                }
                out[name] = buffer
            }
            return out
        }
    }
}
