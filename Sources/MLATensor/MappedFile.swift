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
    /// The path is a FIFO, device, socket or directory where a file's bytes were expected.
    case notARegularFile(path: String, kind: String)
    case cannotRead(path: String, errno: Int32)
    /// A regular file larger than the reader accepts (`InputFile.read(_:limit:)`).
    case tooLarge(path: String, size: Int, limit: Int)
    case notUTF8Text(path: String)

    /// One line: control characters in the path are escaped.
    public var description: String { text.escapingControlCharacters }

    private var text: String {
        switch self {
        case let .cannotOpen(path, code):
            return "\(path): cannot open (\(String(cString: strerror(code))))"
        case let .cannotMap(path, code):
            return "\(path): cannot memory-map (\(String(cString: strerror(code))))"
        case let .notARegularFile(path, kind):
            return "\(path): is a \(kind), not a regular file; give the file itself"
        case let .cannotRead(path, code):
            return "\(path): cannot read (\(String(cString: strerror(code))))"
        case let .tooLarge(path, size, limit):
            return "\(path): \(size) bytes, more than the \(limit) this reader accepts for such a file"
        case let .notUTF8Text(path):
            return "\(path): not valid UTF-8 text"
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
        let (fd, size) = try InputFile.openRegular(path)
        defer { close(fd) }
        self.size = size
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

/// Opening input files so that a FIFO, device or socket given where a file belongs is refused at
/// once instead of blocking: `open(2)` of a FIFO without a writer waits forever, and a read of a
/// terminal or `/dev/zero` never ends. Every reader of user-named input files goes through here.
public enum InputFile {
    /// Largest side file (config.json, tokenizer files, shard index, calibration text) read whole.
    public static let defaultReadLimit = 1 << 30

    /// Opens `path` read-only and checks that it is a regular file. The path is `stat`ed first (no
    /// open of a device at all), then opened with `O_NONBLOCK` (a FIFO swapped in meanwhile does not
    /// block) and checked again with `fstat` on the descriptor actually opened. Returns the
    /// descriptor, which the caller closes, and the file size.
    public static func openRegular(_ path: String) throws -> (fd: Int32, size: Int) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FileError.cannotOpen(path: path, errno: errno) }
        try requireRegular(st, path: path)
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw FileError.cannotOpen(path: path, errno: errno) }
        do {
            guard fstat(fd, &st) == 0 else { throw FileError.cannotOpen(path: path, errno: errno) }
            try requireRegular(st, path: path)
            guard let size = Int(exactly: st.st_size), size >= 0 else { throw FileError.cannotOpen(path: path, errno: EOVERFLOW) }
            return (fd, size)
        } catch {
            close(fd)
            throw error
        }
    }

    /// The whole regular file at `path`. Refuses non-regular files without blocking (`openRegular`)
    /// and files over `limit` bytes; reads until end of file, so a file that shrinks meanwhile
    /// yields what is left and one that grows is cut at the size it had when opened.
    public static func read(_ path: String, limit: Int = defaultReadLimit) throws -> [UInt8] {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        guard size <= limit else { throw FileError.tooLarge(path: path, size: size, limit: limit) }
        var bytes = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let n = bytes.withUnsafeMutableBytes { buffer in
                buffer.baseAddress.map { systemRead(fd, $0 + filled, size - filled) } ?? 0
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError.cannotRead(path: path, errno: errno)
            }
            if n == 0 { break }
            filled += n
        }
        return Array(bytes.prefix(filled))
    }

    /// The regular file at `path` as UTF-8 text (`read`'s checks, then UTF-8 validation).
    public static func readText(_ path: String, limit: Int = defaultReadLimit) throws -> String {
        guard let text = String(validating: try read(path, limit: limit), as: UTF8.self) else {
            throw FileError.notUTF8Text(path: path)
        }
        return text
    }

    private static func requireRegular(_ st: stat, path: String) throws {
        let kind: String
        switch st.st_mode & S_IFMT {
        case S_IFREG: return
        case S_IFIFO: kind = "FIFO (named pipe)"
        case S_IFCHR: kind = "character device"
        case S_IFBLK: kind = "block device"
        case S_IFSOCK: kind = "socket"
        case S_IFDIR: kind = "directory"
        default: kind = "special file"
        }
        throw FileError.notARegularFile(path: path, kind: kind)
    }
}

/// `read(2)`, named apart from `InputFile.read`.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
