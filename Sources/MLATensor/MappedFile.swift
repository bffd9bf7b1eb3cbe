#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COutputCleanup

/// Errors from opening and mapping files.
public enum FileError: Error, CustomStringConvertible, Sendable {
    case cannotOpen(path: String, errno: Int32)
    case cannotMap(path: String, errno: Int32)
    case notARegularFile(path: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, code):
            return "\(path): cannot open (\(String(cString: strerror(code))))"
        case let .cannotMap(path, code):
            return "\(path): cannot memory-map (\(String(cString: strerror(code))))"
        case let .notARegularFile(path):
            return "\(path): not a regular file"
        }
    }
}

/// A whole file mapped read-only (`PROT_READ`, `MAP_PRIVATE`). Pages are read on first touch, so
/// opening a multi-gigabyte checkpoint costs almost no memory and no I/O.
///
/// The mapping is immutable after `init` and unmapped in `deinit`, so sharing it across threads is
/// safe: that is why it is `@unchecked Sendable`. Nothing ever writes through it.
public final class MappedFile: @unchecked Sendable {
    /// Path as given by the caller (used in error messages).
    public let path: String
    /// File size in bytes.
    public let size: Int
    private let base: UnsafeRawPointer?
    /// The mapping's entry in the SIGBUS report table (a file that shrinks while mapped is named in one line).
    private let reportSlot: Int32

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError.cannotOpen(path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError.cannotOpen(path: path, errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileError.notARegularFile(path: path) }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            reportSlot = -1
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw FileError.cannotMap(path: path, errno: errno) }
        base = UnsafeRawPointer(p)
        reportSlot = oc_register_mapping(p, size, path)
    }

    deinit {
        oc_unregister_mapping(reportSlot)
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// Calls `body` with the bytes `[offset, offset + count)`. The range must lie inside the file:
    /// callers validate ranges derived from file contents before calling (checked here again).
    public func withBytes<R>(offset: Int, count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(offset >= 0 && count >= 0 && offset <= size && count <= size - offset,
                     "MappedFile.withBytes: range \(offset)+\(count) outside \(path) (\(size) bytes); caller must validate")
        guard let base else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: base + offset, count: count))
    }

    /// Drops the pages wholly inside `[offset, offset + count)` from this process's resident set
    /// (`madvise(MADV_DONTNEED)`). The mapping is read-only and private, so nothing is lost: a later
    /// access reads the bytes again from the page cache. Streaming readers call it once they have
    /// consumed a tensor, so peak RSS follows what is held, not every page ever touched (a 15 GB
    /// checkpoint read once through counted 14.8 GiB of RSS before).
    public func release(offset: Int, count: Int) {
        guard let base, count > 0, offset >= 0, offset <= size - count else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (offset + page - 1) / page * page, last = (offset + count) / page * page
        guard last > first else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + first), last - first, Int32(MADV_DONTNEED))
    }

    /// Copies `count` bytes at `offset` (bounds as in `withBytes`).
    public func bytes(offset: Int, count: Int) -> [UInt8] {
        withBytes(offset: offset, count: count) { Array($0) }
    }
}
