import Foundation

/// Memory figures of this process from /proc/self/status, in bytes.
public enum ResourceUsage {
    /// Current resident set size.
    public static var residentBytes: Int { statusField("VmRSS") }
    /// Peak resident set size so far.
    public static var peakResidentBytes: Int { statusField("VmHWM") }

    private static func statusField(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let digits = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return digits * 1024
        }
        return 0
    }
}

/// "12.3 MiB".
public func formatBytes(_ bytes: Int) -> String {
    let mib = Double(bytes) / 1_048_576
    return mib >= 1024 ? String(format: "%.2f GiB", mib / 1024) : String(format: "%.1f MiB", mib)
}
