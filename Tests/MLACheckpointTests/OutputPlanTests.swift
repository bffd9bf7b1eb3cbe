import Foundation
import Testing
@testable import MLACheckpoint

/// `OutputPlan`: the output is checked against the inputs before any work, only a previous output of
/// this toolkit is replaced (with force), and placement never destroys what appeared during the run.
@Suite struct OutputPlanTests {
    let fm = FileManager.default

    func write(_ text: String, _ path: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) }
    func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }
    func plan(_ path: String, force: Bool = false, inputs: [String] = []) throws -> OutputPlan {
        try OutputPlan(path, kind: .directory, force: force, inputs: inputs)
    }
    func writeDirectory(_ path: String, force: Bool = false, files: [String: String]) throws {
        try plan(path, force: force).write { dir in
            for (name, text) in files { try write(text, dir + "/" + name) }
        }
    }

    @Test func forceReplacesOnlyAToolkitOutputWithNothingButItsFiles() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let out = dir + "/out"
        try writeDirectory(out, files: ["a.txt": "1"])
        #expect(try fm.contentsOfDirectory(atPath: out).sorted() == [OutputManifest.fileName, "a.txt"])
        let exists = try #require(throws: CheckpointError.self) { try plan(out) }
        #expect(exists.description.contains("--force"))
        try writeDirectory(out, force: true, files: ["b.txt": "2"])
        #expect(try fm.contentsOfDirectory(atPath: out).sorted() == [OutputManifest.fileName, "b.txt"])
        try write("mine", out + "/notes.txt")
        let added = try #require(throws: CheckpointError.self) { try plan(out, force: true) }
        #expect(added.description.contains("'notes.txt'") && added.description.contains(out), "\(added)")
        #expect(try read(out + "/notes.txt") == "mine")
        #expect(try fm.contentsOfDirectory(atPath: dir) == ["out"], "no temporary left behind")
    }

    /// `--force` replaces an output only with one that holds the same: a report never replaces a model
    /// (or the reverse), statistics never replace a model file; a manifest without `contents` (written
    /// before it was recorded) is replaced by a model or a report.
    @Test func forceReplacesOnlyAnOutputOfTheSameContents() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let model = dir + "/model", report = dir + "/report"
        try writeDirectory(model, files: ["config.json": "{}"])
        try OutputPlan(report, kind: .directory, contents: .report, force: false, inputs: []).write { try write("<html>", $0 + "/index.html") }
        let refused = try #require(throws: CheckpointError.self) { try OutputPlan(model, kind: .directory, contents: .report, force: true, inputs: []) }
        #expect(refused.description.contains("is a model of mla-convert, and this command writes a verification report"), "\(refused)")
        #expect(throws: CheckpointError.self) { try OutputPlan(report, kind: .directory, force: true, inputs: []) }
        _ = try OutputPlan(report, kind: .directory, contents: .report, force: true, inputs: [])
        // A manifest of an earlier version, without `contents`.
        try write(#"{"written_by": "mla-convert 0.1.0", "files": ["config.json"]}"#, model + "/" + OutputManifest.fileName)
        _ = try OutputPlan(model, kind: .directory, contents: .report, force: true, inputs: [])
        _ = try plan(model, force: true)
        #expect(try read(model + "/config.json") == "{}")
    }

    @Test func forceNeverReplacesForeignDirectoriesFilesOrForgedManifests() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        try fm.createDirectory(atPath: dir + "/user", withIntermediateDirectories: false)
        try write("keep", dir + "/user/keep.txt")
        try write("keep", dir + "/user.safetensors")
        // A manifest that names a path outside its directory is not one of ours.
        try fm.createDirectory(atPath: dir + "/forged", withIntermediateDirectories: false)
        try write("{\"written_by\": \"mla-convert 0.1.0\", \"files\": [\"../user.safetensors\"]}", dir + "/forged/" + OutputManifest.fileName)
        for (path, kind) in [("user", OutputPlan.Kind.directory), ("user.safetensors", .file), ("forged", .directory)] {
            let error = try #require(throws: CheckpointError.self) { try OutputPlan(dir + "/" + path, kind: kind, force: true, inputs: []) }
            #expect(error.description.contains("did not write"), "\(error)")
        }
        #expect(try read(dir + "/user/keep.txt") == "keep" && read(dir + "/user.safetensors") == "keep")
    }

    /// Equal, containing and contained outputs are refused, through symlinks too, naming both paths.
    @Test func outputOverlappingAnInputIsRefused() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let real = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path
        try fm.createDirectory(atPath: dir + "/model", withIntermediateDirectories: false)
        try write("weights", dir + "/model/model.safetensors")
        try write("{}", dir + "/model/config.json")
        try fm.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/model")
        let cases: [(output: String, input: String, kind: OutputPlan.Kind, protected: String)] = [
            (dir + "/model", dir + "/model", .directory, real + "/model"),
            (dir + "/model", dir + "/link/model.safetensors", .directory, real + "/model/model.safetensors"),
            (dir + "/model/config.json", dir + "/model/model.safetensors", .file, real + "/model/config.json"),
            (dir + "/link/out", dir + "/model", .directory, real + "/model"),
            (dir + "/link", dir + "/model/model.safetensors", .directory, real + "/model/model.safetensors"),
            (dir, dir + "/link/model.safetensors", .directory, real + "/model/model.safetensors"),
        ]
        for c in cases {
            let error = try #require(throws: CheckpointError.self) { try OutputPlan(c.output, kind: c.kind, force: true, inputs: [c.input]) }
            #expect(error.description.hasPrefix(c.output + ":") && error.description.contains(c.protected), "\(error)")
        }
        #expect(try read(dir + "/model/model.safetensors") == "weights")
        let missing = try #require(throws: CheckpointError.self) { try plan(dir + "/no/such/out") }
        #expect(missing.description.contains("does not exist"))
    }

    /// Paths that name no output of their own are refused before anything is made: "" resolved to the
    /// current directory and was refused as a foreign directory, with an empty path in the message.
    @Test(arguments: ["", "/", ".", ".."]) func pathsThatNameNoOutputAreRefused(path: String) throws {
        let error = try #require(throws: CheckpointError.self) { try OutputPlan(path, kind: .directory, force: true, inputs: []) }
        #expect("\(error)".contains(path.isEmpty ? "the output path is empty" : "name the output itself"), "\(error)")
    }

    @Test func failureLeavesNothing() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        struct Boom: Error {}
        for kind in [OutputPlan.Kind.directory, .file] {
            #expect(throws: Boom.self) {
                try OutputPlan(dir + "/out", kind: kind, force: false, inputs: []).write { path in
                    try write("x", kind == .directory ? path + "/partial" : path)
                    throw Boom()
                }
            }
            #expect(try fm.contentsOfDirectory(atPath: dir).isEmpty)
        }
    }

    /// What appears at the output path during the run is never destroyed: the result is kept under
    /// a visible name that the error gives.
    @Test func somethingCreatedDuringTheRunIsKept() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let out = dir + "/out"
        func expectKept(_ plan: OutputPlan, during: () throws -> Void) throws {
            let error = try #require(throws: CheckpointError.self) {
                try plan.write { tmp in
                    try write("result", tmp + "/r.txt")
                    try during()
                }
            }
            guard case let .outputKept(_, kept, _) = error else { Issue.record("\(error)"); return }
            #expect(try read(kept + "/r.txt") == "result")
            try fm.removeItem(atPath: kept)
        }
        // Nothing there at start; a user directory appears.
        try expectKept(try plan(out)) {
            try fm.createDirectory(atPath: out, withIntermediateDirectories: false)
            try write("user", out + "/u.txt")
        }
        #expect(try read(out + "/u.txt") == "user")
        // An empty directory at start gains a file.
        try fm.removeItem(atPath: out + "/u.txt")
        try expectKept(try plan(out)) { try write("user", out + "/u.txt") }
        #expect(try read(out + "/u.txt") == "user")
        // A previous toolkit output (force) is replaced by a user directory during the run.
        try fm.removeItem(atPath: out)
        try writeDirectory(out, files: ["old.txt": "old"])
        try expectKept(try plan(out, force: true)) {
            try fm.removeItem(atPath: out)
            try fm.createDirectory(atPath: out, withIntermediateDirectories: false)
            try write("user", out + "/u.txt")
        }
        #expect(try fm.contentsOfDirectory(atPath: out) == ["u.txt"])
        // A previous toolkit output gains a user file during the run: swapped back, kept.
        try fm.removeItem(atPath: out)
        try writeDirectory(out, files: ["old.txt": "old"])
        try expectKept(try plan(out, force: true)) { try write("user", out + "/u.txt") }
        #expect(try fm.contentsOfDirectory(atPath: out).sorted() == [OutputManifest.fileName, "old.txt", "u.txt"])
        #expect(try fm.contentsOfDirectory(atPath: dir) == ["out"])
    }

    /// A `.NAME.partial-PID` of a process that no longer exists is removed when a plan is made; one of
    /// a live process is left alone.
    @Test func partialOutputsOfDeadProcessesAreReclaimed() throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let dead = "\(dir)/.out.partial-\(finished.processIdentifier)"
        let live = "\(dir)/.out.partial-\(getppid())"
        for path in [dead, dead + ".removing", live] {
            try fm.createDirectory(atPath: path, withIntermediateDirectories: false)
            try write("x", path + "/shard")
        }
        _ = try plan(dir + "/out")
        #expect(try fm.contentsOfDirectory(atPath: dir) == [".out.partial-\(getppid())"])
    }
}

/// `ByteSize`, the `--max-shard-size` value: decimal and binary units in any case, plain byte counts,
/// and nothing that is not a positive size fitting an `Int`.
@Suite struct ByteSizeTests {
    @Test(arguments: [("5GB", 5_000_000_000), ("500mb", 500_000_000), ("2GiB", 2 << 30), ("1048576", 1 << 20),
                      ("1.5 KiB", 1536), ("64B", 64), (" 3kb ", 3000)])
    func readsSizes(text: String, bytes: Int) {
        #expect(ByteSize(text)?.bytes == bytes)
        #expect(ByteSize(text)?.description == text)
    }

    @Test(arguments: ["", "0", "-1", "-1GB", "0.5B", "5XB", "GB", "1.5", "1e30GB", "infGB", "nanMB", "5 G B"])
    func refusesNonSizes(text: String) {
        #expect(ByteSize(text) == nil)
    }
}
