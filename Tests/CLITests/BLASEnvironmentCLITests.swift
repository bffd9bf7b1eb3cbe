import Foundation
@testable import MLACLI
import MLALinalg
import Testing

/// OpenBLAS picks its kernels by CPU model when it loads, and falls back to generic SSE3 kernels on a
/// model it does not know (Debian 12's 0.3.21 on 5th-generation Xeons, 5x slower there); it also reads
/// then how long its idle threads spin. The tools restart themselves on the kernels the CPU's vector units
/// allow and with the shortest spin (`BLASKernel`, `BLASIdleThreads`, `BLASEnvironmentRestart`), and keep
/// what the user fixed.
@Suite struct BLASEnvironmentCLITests {
    @Test("a restart is due exactly when OpenBLAS fell back, the CPU allows better and nothing is fixed")
    func whenToRestart() {
        #expect(BLASKernel.recommended(fixed: nil, current: "Prescott", forCPU: "SkylakeX") == "SkylakeX")
        #expect(BLASKernel.recommended(fixed: "", current: "Prescott", forCPU: "Haswell") == "Haswell")
        #expect(BLASKernel.recommended(fixed: "Prescott", current: "Prescott", forCPU: "SkylakeX") == nil)
        #expect(BLASKernel.recommended(fixed: nil, current: "Haswell", forCPU: "SkylakeX") == nil)
        #expect(BLASKernel.recommended(fixed: nil, current: "Prescott", forCPU: nil) == nil)
    }

    @Test("the idle-thread spin is set exactly when the environment does not set it")
    func whenToSetTheSpin() {
        #expect(BLASIdleThreads.recommended(fixed: nil) == "4")
        #expect(BLASIdleThreads.recommended(fixed: "") == "4")
        #expect(BLASIdleThreads.recommended(fixed: "28") == nil)
    }

    @Test("one restart sets every variable that is due, and none restarts when nothing is")
    func restartSettings() {
        let both = BLASEnvironmentRestart.settings(kernels: "SkylakeX", spin: "4")
        #expect(both.map(\.name) == ["OPENBLAS_CORETYPE", "OPENBLAS_THREAD_TIMEOUT"] && both.map(\.value) == ["SkylakeX", "4"])
        #expect(BLASEnvironmentRestart.settings(kernels: nil, spin: "4").map(\.name) == ["OPENBLAS_THREAD_TIMEOUT"])
        #expect(BLASEnvironmentRestart.settings(kernels: "Haswell", spin: nil).map(\.value) == ["Haswell"])
        #expect(BLASEnvironmentRestart.settings(kernels: nil, spin: nil).isEmpty)
    }

    /// `mla-bench gemm --size 64` under `environment`: its one output line, the kernels it names and the
    /// idle threads' spin (a power of two of cycles).
    static func gemm(environment: [String: String?]) throws -> (line: String, kernels: String?, spin: Int?) {
        let r = try CLI.run("mla-bench", ["gemm", "--size", "64"], environment: environment)
        #expect(r.status == 0 && r.stderr.isEmpty, "\(r.stderr)")
        return (r.stdout, r.stdout.firstMatch(of: /OpenBLAS (\w+) kernels/).map { String($0.1) },
                r.stdout.firstMatch(of: /idle threads spin 2\^(\d+) cycles/).flatMap { Int($0.1) })
    }

    @Test func toolsRunOnTheKernelsTheCPUAllows() throws {
        let unset = try Self.gemm(environment: [BLASKernel.environmentVariable: nil])
        // The restarted program ran with the same arguments, once.
        #expect(unset.line.hasPrefix("sgemm 64^3:") && unset.line.split(separator: "\n").count == 1, "\(unset.line)")
        let kernels = try #require(unset.kernels)
        if let best = BLASKernel.forThisCPU {
            // OpenBLAS recognized the CPU itself, or the tool restarted on `best`: never the generic fallback.
            #expect(kernels != "Prescott", "the CPU runs \(best)'s kernels")
        }
        let fixed = try Self.gemm(environment: [BLASKernel.environmentVariable: "Prescott"])
        #expect(fixed.kernels == "Prescott", "a kernel the user fixed is kept")
    }

    @Test func toolsRunWithTheShortestIdleSpinUnlessTheUserSetsOne() throws {
        let unset = try Self.gemm(environment: [BLASIdleThreads.environmentVariable: nil])
        #expect(unset.line.split(separator: "\n").count == 1, "\(unset.line)")
        #expect(unset.spin == 4, "\(unset.line)")
        let fixed = try Self.gemm(environment: [BLASIdleThreads.environmentVariable: "12"])
        #expect(fixed.spin == 12, "a spin the user set is kept: \(fixed.line)")
    }

    /// The restart executes the tool by its own path: executed through /proc/self/exe it would be named
    /// "exe" in ps, top, pgrep and killall. The tool (three 2048³ GEMMs in double precision, a second or
    /// more) is watched until its environment holds the spin its restart set, then its name is read.
    /// (OpenBLAS builds without their own thread pool do not restart for the spin.)
    @Test(.enabled(if: BLASIdleThreads.spinExponent != nil, "this OpenBLAS has no thread pool of its own: the tools do not restart for the spin"))
    func theRestartedToolKeepsItsName() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binDirectory + "/mla-bench")
        process.arguments = ["gemm", "--size", "2048", "--double"]
        var environment = ProcessInfo.processInfo.environment
        environment[BLASIdleThreads.environmentVariable] = nil
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { process.waitUntilExit() }
        let variable = Data((BLASIdleThreads.environmentVariable + "=").utf8)
        var name: String?
        while process.isRunning, name == nil {
            if let restarted = FileManager.default.contents(atPath: "/proc/\(process.processIdentifier)/environ"), restarted.range(of: variable) != nil {
                name = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/comm", encoding: .utf8)
            }
            usleep(2_000)
        }
        #expect(name == "mla-bench\n", "\(name ?? "the tool ended before its restart could be seen")")
    }
}
