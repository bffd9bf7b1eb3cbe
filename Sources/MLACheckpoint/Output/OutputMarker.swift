import Foundation
import MLATensor

/// What an output of this toolkit holds. `--force` replaces an output only with one that holds the same,
/// so a mistyped `--report DIR` cannot replace a converted model with a report.
public enum OutputContents: String, Sendable {
    /// A checkpoint: a converted or exported model directory, a GGUF or HDF5 file, a synthetic model.
    case model
    /// Calibration statistics (`mla-convert calibrate`, `mla-bench synth-stats`).
    case statistics
    /// An `mla-verify --report` directory.
    case report

    var description: String {
        switch self {
        case .model: return "model"
        case .statistics: return "calibration statistics file"
        case .report: return "verification report"
        }
    }
}

/// The manifest every directory output carries: `.mla-convert-output.json`, holding the toolkit version,
/// what the output holds (`contents`; absent in manifests written before it was recorded, which were
/// models or reports) and the names of the files it wrote. `--force` replaces a directory only when it
/// holds nothing but those files (and the manifest), and then removes only them.
public enum OutputManifest {
    /// The manifest's name inside a directory output (hidden, so listings of a model stay as they were).
    public static let fileName = ".mla-convert-output.json"
    /// A manifest larger than this is not one of ours (a listing of thousands of shards is ~100 KB).
    static let maxBytes = 1 << 20

    /// Writes the manifest listing every file in `directory` (a finished output before placement).
    /// Directory outputs hold plain files only: a subdirectory is a bug in the writer.
    static func write(in directory: String, contents: OutputContents) throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        for file in files where !isRegularFile(directory + "/" + file) {
            throw CheckpointError.writeFailed(path: directory + "/" + file, reason: "an output directory may hold only plain files (writer bug)")
        }
        let manifest: JSONValue = .object([
            ("written_by", .string("mla-convert \(ToolkitVersion.string)")),
            ("contents", .string(contents.rawValue)),
            ("files", .array(files.map { .string($0) })),
        ])
        let path = directory + "/" + fileName
        guard FileManager.default.createFile(atPath: path, contents: Data((try manifest.serialized(indent: 2) + "\n").utf8)) else {
            throw CheckpointError.writeFailed(path: path, reason: "cannot create the output manifest; check free space")
        }
    }

    /// The files the manifest in `directory` lists, or nil when there is no valid manifest. Names are
    /// input-derived: only plain names (no `/`, not `.` or `..`) are accepted, so removal never leaves
    /// the directory.
    static func files(in directory: String) -> [String]? { read(in: directory)?.files }

    /// The manifest in `directory`: the files it lists and what they hold (`contents` nil in a manifest
    /// written before they were recorded), or nil when there is no valid manifest.
    static func read(in directory: String) -> (files: [String], contents: OutputContents?)? {
        let path = directory + "/" + fileName
        guard isRegularFile(path), let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: maxBytes + 1), data.count <= maxBytes,
              let json = try? JSONValue.parse(data),
              json["written_by"]?.string?.hasPrefix("mla-convert ") == true,
              let list = json["files"]?.array else { return nil }
        let contents = json["contents"]?.string.flatMap(OutputContents.init(rawValue:))
        var files: [String] = []
        for entry in list {
            guard let name = entry.string, !name.isEmpty, name != ".", name != "..", name != fileName,
                  !name.contains("/"), !name.contains("\0") else { return nil }
            files.append(name)
        }
        return (files, contents)
    }

    static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}

/// Recognizes previous outputs of this toolkit, the only things `--force` replaces.
enum OutputMarker {
    /// Why `path` is not a replaceable output of this toolkit holding `contents` (what is there), or nil
    /// when it is one: a directory with a valid manifest and nothing but its listed files; a safetensors
    /// file whose metadata has `mla_convert.kind` (calibration statistics); an HDF5 file with the root
    /// attribute `format` that `mla-convert export --format hdf5` writes; a GGUF file with the
    /// `mla_convert.kind` key. A directory whose manifest does not say what it holds may be replaced by a
    /// model or a report, the two directory outputs there were when it was written.
    static func problem(_ path: String, contents: OutputContents) -> String? {
        if FileIdentity.isDirectory(path) {
            guard let manifest = OutputManifest.read(in: path) else {
                return "is a directory that mla-convert did not write (it has no valid \(OutputManifest.fileName))"
            }
            if let found = manifest.contents, found != contents { return mismatch(found, contents) }
            let listed = Set(manifest.files)
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            for entry in entries where entry != OutputManifest.fileName {
                guard listed.contains(entry), OutputManifest.isRegularFile(path + "/" + entry) else {
                    return "is an output of mla-convert, but holds '\(entry)', which mla-convert did not write"
                }
            }
            return nil
        }
        guard let file = try? MappedFile(path: path) else { return "is a file mla-convert cannot read" }
        let found: OutputContents
        if file.size >= 4, file.bytes(offset: 0, count: 4) == [0x89, 0x48, 0x44, 0x46] {
            guard (try? HDF5Store(path: path)) != nil else { return "is an HDF5 file that mla-convert did not write" }
            found = .model
        } else if file.size >= 4, file.bytes(offset: 0, count: 4) == Array("GGUF".utf8) {
            guard (try? GGUFFile(path: path))?.value("mla_convert.kind") != nil else { return "is a GGUF file that mla-convert did not write" }
            found = .model
        } else {
            guard let kind = (try? SafetensorsFile(path: path))?.metadata["mla_convert.kind"] else { return "is a file that mla-convert did not write" }
            found = kind == "calibration-statistics" ? .statistics : .model
        }
        return found == contents ? nil : mismatch(found, contents)
    }

    private static func mismatch(_ found: OutputContents, _ writing: OutputContents) -> String {
        "is a \(found.description) of mla-convert, and this command writes a \(writing.description)"
    }

    static func isToolkitOutput(_ path: String, contents: OutputContents) -> Bool { problem(path, contents: contents) == nil }
}
