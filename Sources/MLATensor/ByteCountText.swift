import Foundation

/// `bytes` in binary units for messages and summaries: "12.3 MiB", "1.25 GiB".
public func formatBytes(_ bytes: Int) -> String {
    let mib = Double(bytes) / 1_048_576
    return mib >= 1024 ? String(format: "%.2f GiB", mib / 1024) : String(format: "%.1f MiB", mib)
}

/// A count with its thousands grouped, for summaries: 134515008 -> "134,515,008".
public func groupDigits(_ n: Int) -> String {
    let s = String(n.magnitude)
    var out = ""
    for (i, ch) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out += "," }
        out.append(ch)
    }
    return (n < 0 ? "-" : "") + out
}
