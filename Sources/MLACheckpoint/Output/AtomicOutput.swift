import Foundation

/// Writes an output file or directory so that a failure leaves nothing behind: the body writes to a
/// temporary sibling (`.NAME.partial-PID`), which is flushed and renamed into place only when the body
/// returns. An existing non-empty output is replaced only with `force`. An interrupt (SIGINT, SIGTERM,
/// SIGHUP) during the body removes the temporary output before the process ends.
public enum AtomicOutput {
    /// Runs `body(temporaryPath)` and moves the result to `finalPath`.
    /// - `directory`: the temporary path is created as an empty directory before `body` runs;
    ///   otherwise `body` creates the file itself.
    /// - `inputs`: paths that must never be overwritten (the output may not resolve to one of them).
    public static func write(to finalPath: String, directory: Bool, force: Bool, inputs: [String] = [],
                             _ body: (String) throws -> Void) throws {
        let fm = FileManager.default
        let finalURL = URL(fileURLWithPath: finalPath).standardizedFileURL
        for input in inputs {
            let inputURL = URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath()
            if finalURL.resolvingSymlinksInPath().path == inputURL.path {
                throw CheckpointError.writeFailed(path: finalPath, reason: "the output would overwrite the input")
            }
        }
        try checkReplaceable(finalPath, force: force)
        let parent = finalURL.deletingLastPathComponent().path
        guard isDirectory(parent) else {
            throw CheckpointError.writeFailed(path: finalPath, reason: "parent directory \(parent) does not exist")
        }
        let temp = parent + "/." + finalURL.lastPathComponent + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: temp)
        InterruptCleanup.shared.register(temp)
        defer { InterruptCleanup.shared.unregister(temp) }
        /// Removes the temporary output after a failure. When the failure is an interrupt having
        /// removed it, the signal ends the process instead of a misleading write error.
        func discard() {
            InterruptCleanup.shared.waitIfInterrupted()
            try? fm.removeItem(atPath: temp)
        }
        do {
            if directory { try fm.createDirectory(atPath: temp, withIntermediateDirectories: false) }
            try body(temp)
            try syncTree(temp)
        } catch {
            discard()
            throw error
        }
        if exists(finalURL.path) {
            let trash = parent + "/." + finalURL.lastPathComponent + ".replaced-\(ProcessInfo.processInfo.processIdentifier)"
            do {
                try fm.moveItem(atPath: finalURL.path, toPath: trash)
                try fm.moveItem(atPath: temp, toPath: finalURL.path)
            } catch {
                discard()
                throw CheckpointError.writeFailed(path: finalPath, reason: "cannot move the finished output into place (\(error))")
            }
            try? fm.removeItem(atPath: trash)
        } else {
            do {
                try fm.moveItem(atPath: temp, toPath: finalURL.path)
            } catch {
                discard()
                throw CheckpointError.writeFailed(path: finalPath, reason: "cannot move the finished output into place (\(error))")
            }
        }
    }

    /// Throws `CheckpointError.outputExists` when `finalPath` exists, is not an empty directory and
    /// `force` is false: the check `write` makes, for callers that should fail before long work.
    public static func checkReplaceable(_ finalPath: String, force: Bool) throws {
        let path = URL(fileURLWithPath: finalPath).standardizedFileURL.path
        if exists(path) && !isEmptyDirectory(path) && !force {
            throw CheckpointError.outputExists(path: finalPath)
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard isDirectory(parent) else {
            throw CheckpointError.writeFailed(path: finalPath, reason: "parent directory \(parent) does not exist")
        }
    }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    static func isEmptyDirectory(_ path: String) -> Bool {
        isDirectory(path) && ((try? FileManager.default.contentsOfDirectory(atPath: path))?.isEmpty ?? false)
    }

    /// fsync every regular file under `path` (and `path` itself when it is a file).
    private static func syncTree(_ path: String) throws {
        var files = [path]
        if isDirectory(path) {
            files = (try FileManager.default.contentsOfDirectory(atPath: path)).map { path + "/" + $0 }
        }
        for file in files where !isDirectory(file) {
            let fd = open(file, O_RDONLY)
            if fd >= 0 { fsync(fd); close(fd) }
        }
    }
}

/// Removes registered temporary outputs when the process is interrupted, then ends it by the same
/// signal (so the exit status still says what happened).
private final class InterruptCleanup: @unchecked Sendable {
    // @unchecked: `paths` is guarded by `lock`; the sources are only touched in init.
    static let shared = InterruptCleanup()
    private let lock = NSLock()
    private var paths = Set<String>()
    private var interrupted = false
    private var sources: [any DispatchSourceSignal] = []

    private init() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [unowned self] in
                lock.lock()
                interrupted = true
                for path in paths { try? FileManager.default.removeItem(atPath: path) }
                lock.unlock()
                // libdispatch blocks the signal in every thread (it reads it from a signalfd):
                // unblock it here and re-raise it with the default action to end the process.
                var set = sigset_t()
                sigemptyset(&set)
                sigaddset(&set, sig)
                pthread_sigmask(SIG_UNBLOCK, &set, nil)
                signal(sig, SIG_DFL)
                raise(sig)
            }
            source.resume()
            sources.append(source)
        }
    }

    /// Blocks for good once an interrupt is being handled (its handler is about to end the process).
    func waitIfInterrupted() {
        lock.lock()
        let wait = interrupted
        lock.unlock()
        while wait { pause() }
    }

    func register(_ path: String) {
        lock.lock()
        paths.insert(path)
        lock.unlock()
    }

    func unregister(_ path: String) {
        lock.lock()
        paths.remove(path)
        lock.unlock()
    }
}
