import Foundation
import MLALinalg
import Testing

/// OpenBLAS picks its kernels by CPU model when it loads, and falls back to generic SSE3 kernels on a
/// model it does not know (Debian 12's 0.3.21 on 5th-generation Xeons, 5x slower there). The tools
/// restart themselves on the kernels the CPU's vector units allow (`BLASKernel`, `BLASKernelRestart`)
/// and keep kernels the user fixed.
@Suite struct BLASKernelCLITests {
    /// The kernels a tool reports (`mla-bench gemm`: "... OpenBLAS NAME kernels ...").
    static func kernels(_ tool: String, _ arguments: [String], environment: [String: String?]) throws -> (name: String?, lines: [Substring]) {
        let r = try CLI.run(tool, arguments, environment: environment)
        #expect(r.status == 0, "\(r.stderr)")
        let name = r.stdout.firstRange(of: /OpenBLAS (\w+) kernels/).map { String(r.stdout[$0].split(separator: " ")[1]) }
        return (name, r.stdout.split(separator: "\n"))
    }

    @Test func toolsRunOnTheKernelsTheCPUAllows() throws {
        let unset = try Self.kernels("mla-bench", ["gemm", "--size", "64"], environment: [BLASKernel.environmentVariable: nil])
        // One line: a restart runs the program again from the start, so nothing may have been printed before it.
        #expect(unset.lines.count == 1)
        let name = try #require(unset.name)
        if let best = BLASKernel.forThisCPU {
            // OpenBLAS recognized the CPU itself, or the tool restarted on `best`: never the generic fallback.
            #expect(name != "Prescott", "the CPU runs \(best)'s kernels")
        }
        let fixed = try Self.kernels("mla-bench", ["gemm", "--size", "64"], environment: [BLASKernel.environmentVariable: "Prescott"])
        #expect(fixed.name == "Prescott", "a kernel the user fixed is kept")
        #expect(fixed.lines.count == 1)
    }
}
