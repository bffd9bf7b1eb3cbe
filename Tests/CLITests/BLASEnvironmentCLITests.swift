import Foundation
import MLALinalg
import Testing

/// OpenBLAS picks its kernels by CPU model when it loads, and falls back to generic SSE3 kernels on a
/// model it does not know (Debian 12's 0.3.21 on 5th-generation Xeons, 5x slower there). The tools
/// restart themselves on the kernels the CPU's vector units allow (`BLASKernel`, `BLASKernelRestart`)
/// and keep kernels the user fixed.
@Suite struct BLASKernelCLITests {
    @Test("a restart is due exactly when OpenBLAS fell back, the CPU allows better and nothing is fixed")
    func whenToRestart() {
        #expect(BLASKernel.recommended(fixed: nil, current: "Prescott", forCPU: "SkylakeX") == "SkylakeX")
        #expect(BLASKernel.recommended(fixed: "", current: "Prescott", forCPU: "Haswell") == "Haswell")
        #expect(BLASKernel.recommended(fixed: "Prescott", current: "Prescott", forCPU: "SkylakeX") == nil)
        #expect(BLASKernel.recommended(fixed: nil, current: "Haswell", forCPU: "SkylakeX") == nil)
        #expect(BLASKernel.recommended(fixed: nil, current: "Prescott", forCPU: nil) == nil)
    }

    /// `mla-bench gemm --size 64` under `environment`: its one output line and the kernels it names.
    static func gemm(environment: [String: String?]) throws -> (line: String, kernels: String?) {
        let r = try CLI.run("mla-bench", ["gemm", "--size", "64"], environment: environment)
        #expect(r.status == 0, "\(r.stderr)")
        return (r.stdout, r.stdout.firstMatch(of: /OpenBLAS (\w+) kernels/).map { String($0.1) })
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
}
