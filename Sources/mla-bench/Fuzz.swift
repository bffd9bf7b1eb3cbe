import ArgumentParser
import Foundation
import MLACLI
import MLACheckpoint
import MLALinalg
import MLATensor

/// The input fuzz test (docs/input-validation.md): mutates a real checkpoint file thousands of times
/// and runs the real `mla-convert` on each mutation in a fresh process, so that a trap, a crash
/// signal, a hang or a leftover file is observed exactly as a user would meet it. The mutations are
/// made here, in a process that only copies bytes; `mla-convert` never runs in this process.
extension Bench {
    struct Fuzz: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fuzz the input readers: mutate a checkpoint and run mla-convert on every mutation.",
            discussion: """
            Each seed gives one deterministic mutation of BASE (bit flips, byte sets, huge counts, \
            truncations, inserted or deleted bytes; for JSON also deleted, duplicated and retyped \
            keys and extreme numbers). Every mutation must end in success or a one-line error \
            (exit status 1-127, one line on stderr) within --timeout seconds; every --export-every'th \
            also runs export into an empty directory, which must then hold the output or nothing. \
            Failures print one line each with the seed; rerun one with --seeds N..<N+1 --keep DIR.
            """,
            shouldDisplay: false)

        @Option(help: "gguf, safetensors, hdf5 or config.") var target: String
        @Option(help: "gguf, hdf5: the file; safetensors, config: a model directory (config.json + model.safetensors).")
        var base: String
        @Option(help: "Seed range, as A..<B.") var seeds: String
        @Option(help: "Extra seeds to run first (regression cases), comma-separated.") var also: String = ""
        @Option(help: "Concurrent mla-convert processes.") var jobs = 2
        @Option(help: "Seconds one run may take before it counts as a hang.") var timeout = 20.0
        @Option(help: "Also run export on every N-th seed (0: never).") var exportEvery = 0
        @Option(help: "Directory to copy failing inputs into.") var keep: String?

        func validate() throws {
            guard FuzzTarget(rawValue: target) != nil else { throw ValidationError("--target: gguf, safetensors, hdf5 or config") }
            guard parseSeeds() != nil else { throw ValidationError("--seeds: expected A..<B with A <= B") }
            guard jobs >= 1, timeout > 0, exportEvery >= 0 else { throw ValidationError("--jobs, --timeout must be positive") }
        }

        func parseSeeds() -> [UInt64]? {
            let parts = seeds.components(separatedBy: "..<")
            guard parts.count == 2, let a = UInt64(parts[0]), let b = UInt64(parts[1]), a <= b else { return nil }
            let extra = also.split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
            return extra + Array(a..<b)
        }

        func run() throws {
            guard let target = FuzzTarget(rawValue: target), let seeds = parseSeeds() else { throw ExitCode.validationFailure }
            let mutator = try FuzzMutator(target: target, base: base)
            let tool = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
                .deletingLastPathComponent().appendingPathComponent("mla-convert").path
            let work = NSTemporaryDirectory() + "mla-fuzz-\(getpid())"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            let runner = FuzzRunner(tool: tool, timeout: timeout)
            let tally = FuzzTally()
            let t0 = MonotonicClock.now()
            let exportEvery = self.exportEvery, keep = self.keep, jobs = self.jobs
            DispatchQueue.concurrentPerform(iterations: jobs) { worker in
                for index in stride(from: worker, to: seeds.count, by: jobs) {
                    let seed = seeds[index]
                    let dir = work + "/\(seed)"
                    defer { try? FileManager.default.removeItem(atPath: dir) }
                    do {
                        let (input, what) = try mutator.write(seed: seed, into: dir)
                        let inspected = runner.check(["inspect", input])
                        if !inspected.succeeded { tally.countRejected() }
                        var problems = inspected.problems
                        if exportEvery > 0, seed % UInt64(exportEvery) == 0 {
                            problems += runner.checkExport(input: input, outputDirectory: dir + "/out")
                        }
                        guard !problems.isEmpty else { continue }
                        if let keep { try? FileManager.default.copyItem(atPath: dir, toPath: keep + "/\(target.rawValue)-\(seed)") }
                        tally.add("FAIL \(target.rawValue) seed \(seed) (\(what)): \(problems.joined(separator: "; "))")
                    } catch {
                        tally.add("FAIL \(target.rawValue) seed \(seed): the fuzzer itself failed: \(error)")
                    }
                }
            }
            let seconds = MonotonicClock.now() - t0
            // The rejected count shows the mutations reach the checks: a mutator that stopped damaging
            // its input would leave every run a success and prove nothing.
            print(String(format: "fuzz %@: %d mutations in %.1f s (%.1f ms each, %d jobs), %d rejected, %d failures",
                         target.rawValue, seeds.count, seconds, seconds * 1e3 / Double(max(seeds.count, 1)), jobs,
                         tally.rejected, tally.count))
            if tally.count > 0 { throw ExitCode.failure }
        }
    }
}

/// What is mutated.
enum FuzzTarget: String {
    case gguf, safetensors, hdf5, config
}

/// Failure lines collected from the worker threads, printed as they arrive, and the count of
/// mutations the tool rejected (a clean error, which is not a failure).
private final class FuzzTally: @unchecked Sendable {
    // @unchecked: `lines` and `rejectedRuns` are guarded by `lock`.
    private let lock = NSLock()
    private var lines: [String] = []
    private var rejectedRuns = 0

    func countRejected() {
        lock.lock()
        rejectedRuns += 1
        lock.unlock()
    }

    var rejected: Int {
        lock.lock()
        defer { lock.unlock() }
        return rejectedRuns
    }

    func add(_ line: String) {
        lock.lock()
        lines.append(line)
        print(line)
        lock.unlock()
    }

    /// Failures so far.
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return lines.count
    }
}

/// Runs `mla-convert` on one mutated input and says what was wrong with how it ended.
struct FuzzRunner: Sendable {
    let tool: String
    let timeout: Double

    /// Whether one run exited 0, and its problems: a signal, a hang, or a failure whose stderr is
    /// not exactly one line.
    func check(_ arguments: [String]) -> (succeeded: Bool, problems: [String]) {
        let r = run(arguments)
        let label = arguments[0]
        if r.timedOut { return (false, ["\(label) hung (killed after \(timeout) s)"]) }
        let stderrHead = r.stderr.split(separator: "\n").prefix(3).joined(separator: " | ")
        if let signal = r.signal { return (false, ["\(label) died of signal \(signal): \(stderrHead)"]) }
        if r.status == 0 { return (true, []) }
        if r.status >= 128 { return (false, ["\(label) exit status \(r.status) (a crash): \(stderrHead)"]) }
        // Progress lines (`export: 4/21 name`, `export: 21 done in 0.1 s`) may precede the error.
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { $0.range(of: #"^[a-z-]+: [0-9]+(/[0-9]+ | done in )"#, options: .regularExpression) == nil }
        guard lines.count == 2, lines[1].isEmpty, !lines[0].isEmpty else {
            return (false, ["\(label) exit \(r.status) with \(lines.count - 1) stderr lines: \(stderrHead)"])
        }
        return (false, [])
    }

    /// `check` for an export into the empty directory `outputDirectory`, which must afterwards hold
    /// the output alone (success) or nothing (failure).
    func checkExport(input: String, outputDirectory: String) -> [String] {
        try? FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        let output = outputDirectory + "/model"
        var (succeeded, problems) = check(["export", input, "-o", output, "--format", "hf"])
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: outputDirectory)) ?? []).sorted()
        if left != (succeeded ? ["model"] : []) { problems.append("export \(succeeded ? "succeeded" : "failed") and left \(left)") }
        return problems
    }

    /// One run, killed after `timeout` seconds; a tool that cannot start counts as a 2-line failure.
    func run(_ arguments: [String]) -> TimedProcess.Outcome {
        do { return try TimedProcess.run(tool, arguments, timeout: timeout) } catch {
            return TimedProcess.Outcome(status: 127, stderr: "cannot start \(tool): \(error)\n(the fuzzer's own failure)\n")
        }
    }
}
