import Foundation

/// `bytes` in binary units for messages and summaries: "12.3 MiB", "1.25 GiB".
public func formatBytes(_ bytes: Int) -> String {
    let mib = Double(bytes) / 1_048_576
    return mib >= 1024 ? String(format: "%.2f GiB", mib / 1024) : String(format: "%.1f MiB", mib)
}
