import CHDF5
import Foundation
import MLATensor

/// Shared pieces of the HDF5 reader and writer. Debian's libhdf5 is the serial build, which is not
/// thread-safe, so every call into the library happens under `HDF5Library.lock`.
enum HDF5Library {
    static let lock = NSLock()
    static let formatName = "mla-convert-hdf5"
    /// "2": the HDF5 1.10 file format with fixed-length string attributes ("1" was superblock 0
    /// with variable-length strings, which `HDF5Store` no longer reads).
    static let formatVersion = "2"
    /// Dataset attribute naming the logical dtype when the stored HDF5 type does not say it (BF16 is
    /// stored as uint16 bit patterns, the 8-bit floats and bool as uint8).
    static let dtypeAttribute = "dtype"

    static func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        mla_h5_silence_errors()
        return try body()
    }

    /// The IEEE binary16 type: a copy of F32LE narrowed to fields (15, 10, 5, 0, 10), size 2, bias 15.
    static func halfType() -> hid_t {
        let t = H5Tcopy(mla_h5t_ieee_f32le())
        H5Tset_fields(t, 15, 10, 5, 0, 10)
        H5Tset_size(t, 2)
        H5Tset_ebias(t, 15)
        return t
    }

    /// (HDF5 file type to create, whether the caller must close it, logical-dtype attribute).
    static func storageType(for dtype: DType) -> (type: hid_t, owned: Bool, attribute: String?) {
        switch dtype {
        case .f32: return (mla_h5t_ieee_f32le(), false, nil)
        case .f64: return (mla_h5t_ieee_f64le(), false, nil)
        case .f16: return (halfType(), true, nil)
        case .bf16: return (mla_h5t_std_u16le(), false, "bfloat16")
        case .bool: return (mla_h5t_std_u8le(), false, "bool")
        case .f8e4m3: return (mla_h5t_std_u8le(), false, "float8_e4m3fn")
        case .f8e5m2: return (mla_h5t_std_u8le(), false, "float8_e5m2")
        case .u8: return (mla_h5t_std_u8le(), false, nil)
        case .i8: return (mla_h5t_std_i8le(), false, nil)
        case .u16: return (mla_h5t_std_u16le(), false, nil)
        case .i16: return (mla_h5t_std_i16le(), false, nil)
        case .u32: return (mla_h5t_std_u32le(), false, nil)
        case .i32: return (mla_h5t_std_i32le(), false, nil)
        case .u64: return (mla_h5t_std_u64le(), false, nil)
        case .i64: return (mla_h5t_std_i64le(), false, nil)
        }
    }

    /// The logical dtype of a stored HDF5 type plus its dtype attribute, or nil when unsupported.
    static func dtype(of type: hid_t, attribute: String?) -> DType? {
        guard H5Tget_order(type) == H5T_ORDER_LE || H5Tget_size(type) == 1 else { return nil }
        let size = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_FLOAT:
            if size == 4 { return .f32 }
            if size == 8 { return .f64 }
            if size == 2 {
                var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
                H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize)
                if spos == 15, epos == 10, esize == 5, mpos == 0, msize == 10, H5Tget_ebias(type) == 15 { return .f16 }
            }
            return nil
        case H5T_INTEGER:
            let signed = H5Tget_sign(type) == H5T_SGN_2
            switch (size, signed, attribute) {
            case (2, false, "bfloat16"): return .bf16
            case (1, false, "bool"): return .bool
            case (1, false, "float8_e4m3fn"): return .f8e4m3
            case (1, false, "float8_e5m2"): return .f8e5m2
            case (_, _, .some): return nil
            case (1, false, nil): return .u8
            case (1, true, nil): return .i8
            case (2, false, nil): return .u16
            case (2, true, nil): return .i16
            case (4, false, nil): return .u32
            case (4, true, nil): return .i32
            case (8, false, nil): return .u64
            case (8, true, nil): return .i64
            default: return nil
            }
        default:
            return nil
        }
    }

    /// Writes a fixed-length, NUL-terminated UTF-8 string attribute on `object`. Fixed length keeps
    /// the text inside the (checksummed) object header; a variable-length string would live in the
    /// global heap, which has no checksum, and libhdf5 1.10 crashes on a damaged one.
    static func writeStringAttribute(_ object: hid_t, _ name: String, _ value: String) -> Bool {
        let bytes = Array(value.utf8) + [0]
        let type = H5Tcopy(mla_h5t_c_s1())
        defer { H5Tclose(type) }
        H5Tset_size(type, bytes.count)
        H5Tset_cset(type, H5T_CSET_UTF8)
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let attr = H5Acreate2(object, name, type, space, mla_h5p_default(), mla_h5p_default())
        guard attr >= 0 else { return false }
        defer { H5Aclose(attr) }
        return H5Awrite(attr, type, bytes) >= 0
    }

    /// Reads a string attribute (variable- or fixed-length) of `object`, nil when absent or not a string.
    static func readStringAttribute(_ object: hid_t, _ name: String) -> String? {
        guard H5Aexists(object, name) > 0 else { return nil }
        let attr = H5Aopen(object, name, mla_h5p_default())
        guard attr >= 0 else { return nil }
        defer { H5Aclose(attr) }
        let fileType = H5Aget_type(attr)
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_STRING else { return nil }
        if H5Tis_variable_str(fileType) > 0 {
            let memType = H5Tcopy(mla_h5t_c_s1())
            defer { H5Tclose(memType) }
            H5Tset_size(memType, mla_h5t_variable())
            H5Tset_cset(memType, H5T_CSET_UTF8)
            var pointer: UnsafeMutablePointer<CChar>?
            guard H5Aread(attr, memType, &pointer) >= 0, let pointer else { return nil }
            defer { H5free_memory(pointer) }
            return String(cString: pointer)
        }
        let size = H5Tget_size(fileType)
        guard size > 0, size < 1 << 30 else { return nil }
        var buffer = [CChar](repeating: 0, count: size + 1)
        guard H5Aread(attr, fileType, &buffer) >= 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
