import COutputCleanup
import Foundation

/// One command's output, checked before any work and then written through `write` (docs/output-safety.md).
///
/// Made once at command start, it
/// - resolves the real paths (symlinks followed) of the output and of every input, and refuses an output
///   that is an input, contains one or lies inside one;
/// - checks that the output's parent is a writable directory;
/// - decides what is there now: nothing, an empty directory (replaced without `force`), a previous output
///   of this toolkit (replaced only with `force`), or anything else (never replaced), and records its
///   identity (device, inode);
/// - removes `.NAME.partial-PID` siblings left by processes that no longer exist (SIGKILL, power loss).
///
/// `write` runs the writer into the hidden sibling `.NAME.partial-PID` (registered for removal if a
/// signal ends the process), adds the directory manifest, flushes, and places the result without ever
/// destroying what appeared at the output path during the run.
public struct OutputPlan: Sendable {
    /// What the writer produces.
    public enum Kind: Sendable {
        /// A directory of plain files; it gets the manifest `OutputManifest.fileName`.
        case directory
        /// One file that carries its own marker (safetensors `mla_convert.kind`, the HDF5 `format` attribute).
        case file
    }

    /// What was at the output path when the plan was made.
    enum Start: Sendable, Equatable {
        case absent
        /// Replaced by a plain rename(2), which replaces only a directory that is still empty.
        case emptyDirectory(FileIdentity)
        /// A previous output of this toolkit, replaced (with `force`) only while it is still this object.
        case toolkitOutput(FileIdentity)
    }

    /// The output path as the user gave it (used in messages).
    public let path: String
    public let kind: Kind
    /// What the output holds; `--force` replaces only a previous output that holds the same.
    public let contents: OutputContents
    /// Real path of the parent directory.
    let parent: String
    /// Last path component.
    let name: String
    let start: Start

    /// The output's absolute path: real parent plus the last component.
    var target: String { parent + "/" + name }

    /// The real path of the directory the output is written in.
    public var directory: String { parent.isEmpty ? "/" : parent }

    /// Checks the output against `inputs` (files or directories the command reads) and decides what
    /// `write` may replace; throws before any work when the output cannot or must not be written.
    /// With `force`, a previous output of this toolkit that holds the same `contents` is replaced;
    /// nothing else ever is.
    public init(_ path: String, kind: Kind, contents: OutputContents = .model, force: Bool, inputs: [String]) throws {
        self.path = path
        self.kind = kind
        self.contents = contents
        // "" would resolve to the current directory, and "x/." or ".." to a directory that is not the output's own.
        guard !path.isEmpty else { throw CheckpointError.writeFailed(path: "\"\"", reason: "the output path is empty; give -o a path") }
        let absolute = URL(fileURLWithPath: path).standardizedFileURL
        name = absolute.lastPathComponent
        let given = path.split(separator: "/").last.map(String.init) ?? ""
        guard !name.isEmpty, name != "/", given != ".", given != ".." else {
            throw CheckpointError.writeFailed(path: path, reason: "not a path a file or directory can be written to; name the output itself")
        }
        let parentPath = absolute.deletingLastPathComponent().path
        guard FileIdentity.isDirectory(parentPath), let realParent = Self.realPath(parentPath) else {
            throw CheckpointError.writeFailed(path: path, reason: "parent directory \(parentPath) does not exist; create it first")
        }
        parent = realParent == "/" ? "" : realParent
        guard access(realParent, W_OK | X_OK) == 0 else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create files in \(parentPath) (\(String(cString: strerror(errno)))); choose a writable directory")
        }
        let target = parent + "/" + name
        // The output as written to, and what it resolves to when it is a symlink (refused below, but
        // the overlap names both paths first).
        for output in Set([target, Self.realPath(target) ?? target]) {
            for input in inputs {
                for protected in Self.protectedPaths(of: input) {
                    if output == protected {
                        throw CheckpointError.outputOverlapsInput(output: path, input: protected, relation: .equal)
                    } else if protected.hasPrefix(output + "/") {
                        throw CheckpointError.outputOverlapsInput(output: path, input: protected, relation: .containsInput)
                    } else if output.hasPrefix(protected + "/") {
                        throw CheckpointError.outputOverlapsInput(output: path, input: protected, relation: .insideInput)
                    }
                }
            }
        }
        start = try Self.start(at: target, path: path, kind: kind, contents: contents, force: force)
        Self.reclaimPartials(in: realParent, name: name)
    }

    /// Runs `body(temporaryPath)` and moves the finished result to the output path. Everything is
    /// written inside the hidden directory `.NAME.partial-PID`, registered for removal if a signal ends
    /// the process: for `.directory` it is the output itself (empty when `body` starts); for `.file`,
    /// `body` creates `.NAME.partial-PID/NAME`. A failure removes it. Placement: see `place`.
    public func write(_ body: (String) throws -> Void) throws {
        let work = parent + "/." + name + ".partial-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        let slot = oc_create_output(work)
        guard slot >= 0 else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create the temporary output \(work) (\(String(cString: strerror(errno))))")
        }
        defer { oc_unregister_output(slot) }
        let result = kind == .directory ? work : work + "/" + name
        do {
            try body(result)
            if kind == .directory { try OutputManifest.write(in: result, contents: contents) }
            try Self.syncTree(result)
        } catch {
            Self.discard(work)
            throw error
        }
        try place(result, work: work, slot: slot)
        if kind == .file { rmdir(work) }
    }

    /// Moves the finished `result` (in `work`) to the output path without destroying anything that
    /// appeared there during the run:
    /// - nothing is there now: `renameat2(RENAME_NOREPLACE)`;
    /// - an empty directory was there: rename(2), which replaces a directory only while it is empty;
    /// - a previous toolkit output was there (`force`): if it is still the same object, `RENAME_EXCHANGE`,
    ///   then the swapped-out object is checked again (same identity, still only its listed files) and
    ///   removed file by file; otherwise it is swapped back.
    /// When the path is taken, the result is kept under `NAME.mla-convert-PID` and the error names it.
    private func place(_ result: String, work: String, slot: Int32) throws {
        func moved(_ status: Int32) -> Bool {
            if status == 0 { Self.syncDirectory(parent.isEmpty ? "/" : parent) }
            return status == 0
        }
        let now = FileIdentity(lstat: target)
        if now == nil {
            if moved(oc_rename(result, target, OC_RENAME_NOREPLACE)) { return }
            guard errno == EEXIST || errno == ENOTEMPTY else { throw placementFailed(work) }
            throw keep(result, work: work, reason: "something was created at the output path during the run")
        }
        switch start {
        case .absent:
            throw keep(result, work: work, reason: "something was created at the output path during the run")
        case let .emptyDirectory(identity):
            guard now == identity else { throw keep(result, work: work, reason: "the empty directory at the output path was replaced during the run") }
            if moved(rename(result, target)) { return }
            guard [ENOTEMPTY, EEXIST, ENOTDIR, EISDIR].contains(errno) else { throw placementFailed(work) }
            throw keep(result, work: work, reason: "files were added to the empty output directory during the run")
        case let .toolkitOutput(identity):
            guard now == identity else { throw keep(result, work: work, reason: "the previous output was replaced by something else during the run") }
            // From here `result` may hold the previous output, which a signal must not remove unchecked.
            oc_unregister_output(slot)
            guard moved(oc_rename(result, target, OC_RENAME_EXCHANGE)) else { throw placementFailed(work) }
            let swapped = FileIdentity(lstat: result)
            if swapped != identity || !OutputMarker.isToolkitOutput(result, contents: contents) {
                guard moved(oc_rename(result, target, OC_RENAME_EXCHANGE)) else {
                    throw CheckpointError.writeFailed(path: path, reason: "the previous output changed during the run and could not be swapped back; it is at \(result), the new output at \(target)")
                }
                throw keep(result, work: work, reason: "the previous output changed during the run, so --force left it in place")
            }
            removePrevious(result)
        }
    }

    /// Removes a swapped-out previous output: a file, or a directory's listed files, its manifest and
    /// the directory itself. Anything else found there is kept under a visible name.
    private func removePrevious(_ previous: String) {
        if !FileIdentity.isDirectory(previous) {
            unlink(previous)
            return
        }
        if let files = OutputManifest.files(in: previous) {
            for file in files + [OutputManifest.fileName] { unlink(previous + "/" + file) }
        }
        if rmdir(previous) != 0 {
            let kept = target + ".replaced-\(getpid())"
            let location = oc_rename(previous, kept, OC_RENAME_NOREPLACE) == 0 ? kept : previous
            Self.report("\(path): the replaced output held files added during the run; they are kept in \(location)")
        }
    }

    /// Renames the finished `result` to the visible `NAME.mla-convert-PID` and returns the error that
    /// names it.
    private func keep(_ result: String, work: String, reason: String) -> CheckpointError {
        let kept = target + ".mla-convert-\(getpid())"
        let at = oc_rename(result, kept, OC_RENAME_NOREPLACE) == 0 ? kept : result
        if at == kept, kind == .file { rmdir(work) }
        return .outputKept(path: path, kept: at, reason: reason)
    }

    private func placementFailed(_ work: String) -> CheckpointError {
        let reason = "cannot move the finished output from \(work) into place (\(String(cString: strerror(errno))))"
        Self.discard(work)
        return .writeFailed(path: path, reason: reason)
    }

    /// Removes a temporary output after a failure. When the failure is a signal's doing (its handler
    /// removes the outputs and ends the process), waits for the end instead of reporting a write error.
    private static func discard(_ work: String) {
        while oc_signal_in_progress() != 0 { pause() }
        try? FileManager.default.removeItem(atPath: work)
    }

    /// What is at `target` now, and whether a write may replace it.
    private static func start(at target: String, path: String, kind: Kind, contents: OutputContents, force: Bool) throws -> Start {
        var st = stat()
        guard lstat(target, &st) == 0 else { return .absent }
        let identity = FileIdentity(st)
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            throw CheckpointError.outputNotReplaceable(path: path, reason: "is a symbolic link; give the path it points to or another output path")
        case S_IFDIR:
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
            if entries.isEmpty {
                guard kind == .directory else {
                    throw CheckpointError.outputNotReplaceable(path: path, reason: "is a directory, and this output is a file; give a file path")
                }
                return .emptyDirectory(identity)
            }
        case S_IFREG:
            break
        default:
            throw CheckpointError.outputNotReplaceable(path: path, reason: "is neither a regular file nor a directory; choose another output path")
        }
        if let problem = OutputMarker.problem(target, contents: contents) {
            let forced = force ? "--force replaces only a previous \(contents.description) of mla-convert" : "--force would not replace it either"
            throw CheckpointError.outputNotReplaceable(path: path, reason: "\(problem) (\(forced)); move it away or choose another output path")
        }
        guard force else { throw CheckpointError.outputExists(path: path) }
        return .toolkitOutput(identity)
    }

    /// Removes `.NAME.partial-PID` (and `.NAME.partial-PID.removing`) siblings whose process no longer
    /// exists, saying so on standard error. A live process's partial output is left alone.
    static func reclaimPartials(in parent: String, name: String) {
        let prefix = "." + name + ".partial-"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(prefix) {
            var digits = entry.dropFirst(prefix.count)
            if digits.hasSuffix(".removing") { digits = digits.dropLast(".removing".count) }
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let pid = Int32(digits) else { continue }
            guard pid == getpid() || (kill(pid, 0) == -1 && errno == ESRCH) else { continue }
            let partial = (parent == "/" ? "" : parent) + "/" + entry
            guard (try? FileManager.default.removeItem(atPath: partial)) != nil else { continue }
            if pid != getpid() {
                report("removed the partial output \(partial) left by process \(pid)")
            }
        }
    }

    /// The real paths an input protects: the input itself (the path as given, parent resolved, and its
    /// target when it is a symlink) and, for a `.safetensors` file, the config and tokenizer files the
    /// checkpoint reader takes from beside it.
    static func protectedPaths(of input: String) -> [String] {
        let url = URL(fileURLWithPath: input).standardizedFileURL
        var paths: [String] = []
        let parentURL = url.deletingLastPathComponent()
        if let parent = realPath(parentURL.path) { paths.append((parent == "/" ? "" : parent) + "/" + url.lastPathComponent) }
        if let real = realPath(url.path) { paths.append(real) }
        if input.hasSuffix(".safetensors") {
            var directories = [parentURL.path]
            if let real = realPath(url.path) { directories.append(URL(fileURLWithPath: real).deletingLastPathComponent().path) }
            for directory in directories {
                for side in ["config.json", SafetensorsDirectoryStore.indexName] + Checkpoint.auxiliaryFileNames {
                    if let real = realPath(directory + "/" + side) { paths.append(real) }
                }
            }
        }
        return paths
    }

    /// Writes "PROGRAM: line" to standard error (a notice; the command goes on).
    private static func report(_ line: String) {
        try? FileHandle.standardError.write(contentsOf: Data("\(ProcessInfo.processInfo.processName): \(line)\n".utf8))
    }

    /// realpath(3), nil when the path does not exist.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// fsync every regular file in `path` (and `path` itself when it is a file), then the directory.
    private static func syncTree(_ path: String) throws {
        var files = [path]
        if FileIdentity.isDirectory(path) {
            files = (try FileManager.default.contentsOfDirectory(atPath: path)).map { path + "/" + $0 }
        }
        for file in files where !FileIdentity.isDirectory(file) {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { fsync(fd); close(fd) }
        }
        if FileIdentity.isDirectory(path) { syncDirectory(path) }
    }

    private static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}

/// A file system object's identity: device and inode (from lstat, symlinks not followed).
struct FileIdentity: Sendable, Equatable {
    let device: UInt64
    let inode: UInt64

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// The identity of what is at `path`, nil when nothing is.
    init?(lstat path: String) {
        var st = stat()
        guard Glibc.lstat(path, &st) == 0 else { return nil }
        self.init(st)
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }
}
