import Foundation
import Testing
import MLACheckpoint
import MLATestSupport

/// Output safety through the built executables (issue 19, docs/output-safety.md): --force never
/// touches an input, replaces only a previous output of the toolkit, placement never destroys what
/// appeared during the run, and interrupts, SIGKILL and a truncated input leave no partial output.
@Suite(.serialized) struct OutputSafetyCLITests {
    let fm = FileManager.default

    /// A running tool whose standard error goes to a file (a pipe nobody reads could fill and block it).
    struct Running {
        let process: Process
        let stderrPath: String
        var pid: Int32 { process.processIdentifier }
        var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

        func wait() -> Int32 {
            process.waitUntilExit()
            return process.terminationStatus
        }

        /// Waits for the run to end after a crash signal. Swift's crash reporter (`swift-backtrace`, which
        /// the crashing process spawns) can outlive it, blocked for good on a read from the dead process
        /// (seen once in a full suite run on 2 busy cores), and it holds the descriptor Foundation's
        /// `Process` watches for the child's exit, so `waitUntilExit` would wait forever: once the child
        /// has ended, a reporter still writing into the child's standard error file is stopped.
        func waitAfterCrash() {
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline, let state = Self.state(of: pid), state != "Z" { usleep(10_000) }
            for reporter in Self.processes(writingTo: stderrPath) where reporter != pid { kill(reporter, SIGKILL) }
            process.waitUntilExit()
        }

        /// The state letter of process `pid` (proc(5): R, S, Z, …), nil when there is none.
        static func state(of pid: Int32) -> Character? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            return stat[close...].dropFirst().first { $0 != " " }
        }

        /// The processes whose standard error is the file at `path`.
        static func processes(writingTo path: String) -> [Int32] {
            let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).filter { pid in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")) == target
            }
        }
    }

    /// Starts `tool`; its standard error goes to a file in `logs`. Foundation's Process starts it with
    /// SIGINT and SIGTERM blocked (inherited from a libdispatch thread): the tools unblock them.
    func start(_ tool: String, _ arguments: [String], logs: String) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binDirectory + "/" + tool)
        process.arguments = arguments
        let stderrPath = logs + "/stderr-\(UUID().uuidString.prefix(8)).txt"
        _ = fm.createFile(atPath: stderrPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return Running(process: process, stderrPath: stderrPath)
    }

    /// The lines of `stderr` that are not progress lines ("export: 3/272").
    func messages(_ stderr: String) -> [String] {
        stderr.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map(String.init).filter { line in
            !["export:", "convert:", "calibrate:", "verify:", "synth:", "spectra:"].contains { line.hasPrefix($0) }
        }
    }

    /// A small synthetic Llama checkpoint (2 layers, 168 MiB) at `path`.
    func synth(_ path: String) throws {
        let r = try CLI.run("mla-bench", ["synth", "--shape", "small", "--layers", "2", "-o", path])
        try #require(r.status == 0, "\(r.stderr)")
    }

    /// Every file under `dir` (relative path) with its bytes, to prove nothing changed.
    func snapshot(_ dir: String) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for relative in try fm.subpathsOfDirectory(atPath: dir) {
            var isDir: ObjCBool = false
            let path = dir + "/" + relative
            if fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
                files[relative] = try Data(contentsOf: URL(fileURLWithPath: path))
            }
        }
        return files
    }

    func realPath(_ path: String) -> String { URL(fileURLWithPath: path).resolvingSymlinksInPath().path }

    /// Polls until `condition` holds or the process ends; true when it holds with the process running.
    func wait(for running: Running, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, running.process.isRunning {
            if condition() { return true }
            usleep(5_000)
        }
        return false
    }

    /// Starts exporting the sample model to `dir/out` in 4 MB shards (about 125) and waits until
    /// `shards` files are in its temporary directory; returns the run and that directory.
    func startShardedExport(_ sample: String, to dir: String, logs: String, shards: Int) throws -> (Running, String) {
        let run = try start("mla-convert", ["export", sample, "-o", dir + "/out", "--max-shard-size", "4MB"], logs: logs)
        let partial = "\(dir)/.out.partial-\(run.pid)"
        let writing = wait(for: run) {
            ((try? fm.contentsOfDirectory(atPath: partial)) ?? []).filter { $0.hasSuffix(".safetensors") }.count >= shards
        }
        #expect(writing, "the export ended before \(shards) shards were written")
        return (run, partial)
    }

    /// Runs `body(root, work)` with a new temporary `root` (standard error logs) holding an empty `work`
    /// directory (outputs); removes both afterwards.
    func inWorkDirectory(_ body: (_ root: String, _ work: String) throws -> Void) throws {
        let root = CLI.temporaryDirectory()
        defer { try? fm.removeItem(atPath: root) }
        try fm.createDirectory(atPath: root + "/work", withIntermediateDirectories: false)
        try body(root, root + "/work")
    }

    /// The issue's cases of `--force` deleting or rewriting an input, plus symlinked variants: each
    /// fails before any work with one line naming the output and the input, and leaves every file as it was.
    @Test(.needsSampleData) func forceNeverDeletesOrRewritesAnInput() throws {
        let sample = SampleData.modelPath
        let root = CLI.temporaryDirectory()
        defer { try? fm.removeItem(atPath: root) }
        let x = root + "/X", d = root + "/D", c = root + "/C"
        try fm.createDirectory(atPath: x, withIntermediateDirectories: false)
        try Data(contentsOf: URL(fileURLWithPath: sample)).write(to: URL(fileURLWithPath: x + "/model.gguf"))
        try Data("the user's notes".utf8).write(to: URL(fileURLWithPath: x + "/notes.txt"))
        try fm.createDirectory(atPath: d, withIntermediateDirectories: false)
        try synth(d + "/model")
        try fm.createDirectory(atPath: c, withIntermediateDirectories: false)
        let converted = try CLI.run("mla-convert", ["gqa2mla", d + "/model", "-o", c + "/conv", "--no-calib"])
        try #require(converted.status == 0, "\(converted.stderr)")
        try fm.createSymbolicLink(atPath: root + "/LX", withDestinationPath: x)
        try fm.createSymbolicLink(atPath: root + "/LD", withDestinationPath: d)
        try fm.createSymbolicLink(atPath: root + "/LC", withDestinationPath: c)
        let before = try snapshot(root)
        let calib = ["--calib-tokens", "64", "--calib-window", "32"]
        let ids = ["--ids", "1,2,3,4,5,6,7,8"]
        let cases: [(tool: String, arguments: [String], output: String, input: String)] = [
            ("mla-convert", ["gqa2mla", d + "/model", "-o", d, "--force", "--no-calib"], d, d + "/model"),
            ("mla-convert", ["gqa2mla", d + "/model", "-o", d + "/model", "--force", "--no-calib"], d + "/model", d + "/model"),
            ("mla-convert", ["export", x + "/model.gguf", "-o", x, "--force"], x, x + "/model.gguf"),
            ("mla-convert", ["export", d + "/model/model.safetensors", "-o", d + "/model", "--force"], d + "/model", d + "/model/model.safetensors"),
            ("mla-convert", ["calibrate", x + "/model.gguf", "-o", x + "/model.gguf", "--force"] + calib, x + "/model.gguf", x + "/model.gguf"),
            ("mla-verify", [d + "/model", c + "/conv", "--report", c, "--force"] + ids, c, c + "/conv"),
            // Symlinks: through the input, through the output, and an output inside the model directory.
            ("mla-convert", ["export", root + "/LX/model.gguf", "-o", x, "--force"], x, x + "/model.gguf"),
            ("mla-convert", ["export", x + "/model.gguf", "-o", root + "/LX", "--force"], root + "/LX", x + "/model.gguf"),
            ("mla-convert", ["gqa2mla", root + "/LD/model", "-o", d, "--force", "--no-calib"], d, d + "/model"),
            ("mla-convert", ["calibrate", x + "/model.gguf", "-o", root + "/LX/model.gguf", "--force"] + calib, root + "/LX/model.gguf", x + "/model.gguf"),
            ("mla-verify", [d + "/model", root + "/LC/conv", "--report", root + "/LC/conv/report", "--force"] + ids, root + "/LC/conv/report", c + "/conv"),
        ]
        for run in cases {
            let r = try CLI.run(run.tool, run.arguments)
            let lines = messages(r.stderr)
            #expect(r.status != 0, "\(run.arguments)")
            #expect(lines.count == 1 && lines[0].contains(run.output + ":") && lines[0].contains(realPath(run.input)),
                    "\(run.arguments): \(r.stderr)")
        }
        #expect(try snapshot(root) == before, "every input and file is as it was, and nothing was left behind")
    }

    /// --force replaces a previous output of the toolkit (directory or file), and nothing else: not a
    /// directory or file the toolkit did not write, not a toolkit directory the user added a file to.
    @Test func forceReplacesOnlyAPreviousToolkitOutput() throws {
        let root = CLI.temporaryDirectory()
        defer { try? fm.removeItem(atPath: root) }
        let model = root + "/model", out = root + "/out"
        try synth(model)
        let first = try CLI.run("mla-convert", ["export", model, "-o", out])
        #expect(first.status == 0, "\(first.stderr)")
        let again = try CLI.run("mla-convert", ["export", model, "-o", out])
        #expect(again.status != 0 && messages(again.stderr) == ["Error: \(out): output exists (a previous output of mla-convert); pass --force to replace it"],
                "\(again.stderr)")
        let forced = try CLI.run("mla-convert", ["export", model, "-o", out, "--force", "--max-shard-size", "50MB"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try fm.contentsOfDirectory(atPath: out).contains { $0.hasPrefix("model-00002-of-") }, "sharded this time")
        try Data("mine".utf8).write(to: URL(fileURLWithPath: out + "/notes.txt"))
        try fm.createDirectory(atPath: root + "/foreign", withIntermediateDirectories: false)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: root + "/foreign/keep.txt"))
        try Data("mine".utf8).write(to: URL(fileURLWithPath: root + "/foreign.safetensors"))
        let before = try snapshot(root)
        for (output, extra, mention) in [(out, [String](), "'notes.txt'"), (root + "/foreign", [], "did not write"),
                                         (root + "/foreign.safetensors", ["--format", "hdf5"], "did not write")] {
            let r = try CLI.run("mla-convert", ["export", model, "-o", output, "--force"] + extra)
            #expect(r.status != 0 && messages(r.stderr).count == 1 && r.stderr.contains(mention) && r.stderr.contains(output), "\(r.stderr)")
        }
        let stats = try CLI.run("mla-bench", ["synth-stats", model, "-o", root + "/foreign.safetensors", "--tokens", "16", "--force"])
        #expect(stats.status != 0 && stats.stderr.contains("did not write"), "\(stats.stderr)")
        #expect(try snapshot(root) == before)
        // Single-file outputs carry their marker inside: statistics (safetensors metadata), HDF5 (root attribute).
        for (tool, arguments) in [("mla-bench", ["synth-stats", model, "-o", root + "/stats.safetensors", "--tokens", "16"]),
                                  ("mla-convert", ["export", model, "-o", root + "/model.h5", "--format", "hdf5"])] {
            #expect(try CLI.run(tool, arguments).status == 0)
            let r = try CLI.run(tool, arguments + ["--force"])
            #expect(r.status == 0, "\(r.stderr)")
        }
    }

    /// Two conversions to one output: exactly one wins; the other fails, saying where its result is.
    @Test func concurrentRunsToOneOutputKeepBothResults() throws {
        let root = CLI.temporaryDirectory()
        defer { try? fm.removeItem(atPath: root) }
        let model = root + "/model", out = root + "/out"
        try synth(model)
        let runs = try (0..<2).map { _ in try start("mla-convert", ["gqa2mla", model, "-o", out, "--no-calib"], logs: root) }
        let statuses = runs.map { $0.wait() }
        #expect(statuses.filter { $0 == 0 }.count == 1, "\(statuses) \(runs.map(\.stderr))")
        let loser = try #require(runs.first { $0.process.terminationStatus != 0 })
        let line = try #require(messages(loser.stderr).first { $0.contains("kept at ") }, "\(loser.stderr)")
        let kept = String(line[line.range(of: "kept at ")!.upperBound...])
        #expect(kept == realPath(root) + "/out.mla-convert-\(loser.pid)")
        _ = try Checkpoint.open(kept)
        _ = try Checkpoint.open(out)
    }

    /// A directory a user creates at the output path during the run is left as it is.
    @Test(.needsSampleData) func directoryCreatedDuringTheRunIsNotDeleted() throws {
        let sample = SampleData.modelPath
        let root = CLI.temporaryDirectory()
        defer { try? fm.removeItem(atPath: root) }
        let out = root + "/out"
        let run = try start("mla-convert", ["export", sample, "-o", out, "--dtype", "f32"], logs: root)
        let partial = "\(root)/.out.partial-\(run.pid)"
        #expect(wait(for: run) { fm.fileExists(atPath: partial) }, "the export ended before the directory could be made")
        try fm.createDirectory(atPath: out, withIntermediateDirectories: false)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: out + "/notes.txt"))
        #expect(run.wait() != 0)
        #expect(try fm.contentsOfDirectory(atPath: out) == ["notes.txt"])
        #expect(run.stderr.contains("kept at \(realPath(root))/out.mla-convert-\(run.pid)"), "\(run.stderr)")
    }

    /// Ctrl-C during a sharded export, repeated: the shard writer can no longer create files in the
    /// temporary directory once the handler has renamed it, so nothing is left (2-3 of 12 before).
    @Test(.needsSampleData) func interruptDuringShardedExportLeavesNothing() throws {
        let sample = SampleData.modelPath
        try inWorkDirectory { root, dir in
            for attempt in 0..<6 {
                let (run, _) = try startShardedExport(sample, to: dir, logs: root, shards: 1 + attempt * 3)
                run.process.interrupt()
                run.process.waitUntilExit()
                #expect(run.process.terminationReason == .uncaughtSignal && run.process.terminationStatus == SIGINT)
                #expect(try fm.contentsOfDirectory(atPath: dir) == [], "attempt \(attempt)")
            }
        }
    }

    /// A reader of the progress lines that goes away (`| head`) ends the run by SIGPIPE, and the
    /// temporary output goes too: SIGPIPE ended the process without the handler and left `.out.partial-PID`.
    @Test(.needsSampleData) func closedPipeLeavesNothing() throws {
        try inWorkDirectory { root, dir in
            let bash = Process()
            bash.executableURL = URL(fileURLWithPath: "/bin/bash")
            bash.arguments = ["-c", #""$0" export "$1" -o "$2" --max-shard-size 4MB 2>&1 | head -c 1 > /dev/null; echo "${PIPESTATUS[0]}" > "$3""#,
                              CLI.binDirectory + "/mla-convert", SampleData.modelPath, dir + "/out", root + "/status"]
            try bash.run()
            bash.waitUntilExit()
            #expect(try String(contentsOfFile: root + "/status", encoding: .utf8) == "\(128 + SIGPIPE)\n")
            #expect(try fm.contentsOfDirectory(atPath: dir) == [])
        }
    }

    /// A crash signal (abort, or a fault's signal sent from outside, standing in for a trap) removes the
    /// partial output before the crash reporter runs, and the process still ends by the signal.
    @Test(.needsSampleData) func crashSignalsLeaveNoPartialOutput() throws {
        let sample = SampleData.modelPath
        try inWorkDirectory { root, dir in
            for sig in [SIGABRT, SIGSEGV] {
                let (run, _) = try startShardedExport(sample, to: dir, logs: root, shards: 2)
                kill(run.pid, sig)
                run.waitAfterCrash()
                #expect(run.process.terminationReason == .uncaughtSignal, "signal \(sig): \(run.stderr)")
                #expect(try fm.contentsOfDirectory(atPath: dir) == [], "signal \(sig)")
            }
        }
    }

    /// SIGKILL (the OOM killer) leaves the partial output; the next run removes it, says so, and succeeds.
    @Test(.needsSampleData) func rerunAfterSIGKILLReclaimsThePartialOutput() throws {
        let sample = SampleData.modelPath
        try inWorkDirectory { root, dir in
            let (run, partial) = try startShardedExport(sample, to: dir, logs: root, shards: 3)
            kill(run.pid, SIGKILL)
            run.process.waitUntilExit()
            #expect(fm.fileExists(atPath: partial), "SIGKILL cannot be handled: the partial output stays")
            let rerun = try CLI.run("mla-convert", ["export", sample, "-o", dir + "/out"])
            #expect(rerun.status == 0, "\(rerun.stderr)")
            #expect(rerun.stderr.contains("mla-convert: removed the partial output \(realPath(dir))/.out.partial-\(run.pid) left by process \(run.pid)"),
                    "\(rerun.stderr)")
            #expect(try fm.contentsOfDirectory(atPath: dir) == ["out"])
        }
    }

    /// An input truncated while memory-mapped (SIGBUS): one line naming the file, exit status 1, and no
    /// partial output. The HDF5 writer with deflate 9 is slow enough that the truncation lands while
    /// tensors are still being read: the test waits until the output file has been created.
    @Test func truncatedInputGivesOneLineAndNoPartialOutput() throws {
        try inWorkDirectory { root, dir in
            let model = root + "/model"
            try synth(model)
            let run = try start("mla-convert", ["export", model, "-o", dir + "/out.h5", "--format", "hdf5", "--deflate", "9"], logs: root)
            let file = "\(dir)/.out.h5.partial-\(run.pid)/out.h5"
            let writing = wait(for: run) { ((try? fm.attributesOfItem(atPath: file))?[.size] as? Int ?? 0) > 0 }
            #expect(writing, "the export ended before the input could be truncated")
            #expect(truncate(model + "/model.safetensors", 4096) == 0)
            #expect(run.wait() == 1)
            #expect(messages(run.stderr) == ["mla-convert: \(model)/model.safetensors changed size while being read (SIGBUS); no output written"],
                    "\(run.stderr)")
            #expect(try fm.contentsOfDirectory(atPath: dir) == [])
        }
    }
}
