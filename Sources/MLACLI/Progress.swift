import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress on standard error for long work: a single updating line on a terminal, a line every
/// `logEvery` steps otherwise (CI logs), with the time so far and an estimate of the time left once
/// it is worth saying, and the elapsed time at the end. Safe to update from several threads.
public final class Progress: @unchecked Sendable {
    // @unchecked: `done` is guarded by `lock`, the rest is immutable.
    private let lock = NSLock()
    private let total: Int
    private let label: String
    private let interactive: Bool
    private let logEvery: Int
    private var done = 0
    private let start = MonotonicClock.now()

    public init(total: Int, label: String) {
        self.total = total
        self.label = label
        self.interactive = isatty(2) != 0
        self.logEvery = max(1, total / 10)
    }

    public func step(_ detail: String = "") {
        lock.lock()
        defer { lock.unlock() }
        report(done + 1, detail)
    }

    /// Sets the steps done to `count` (from work that reports its own count).
    public func advance(to count: Int) {
        lock.lock()
        defer { lock.unlock() }
        report(count, "")
    }

    private func report(_ count: Int, _ detail: String) {
        let previous = done
        done = count
        let text = [detail, Self.timing(elapsed: MonotonicClock.now() - start, done: done, total: total)].filter { !$0.isEmpty }.joined(separator: "; ")
        if interactive {
            write("\r\(label): \(done)/\(total) \(text)\u{1B}[K")
        } else if done / logEvery > previous / logEvery || done == total {
            write("\(label): \(done)/\(total) \(text)\n")
        }
    }

    /// "2.0 min elapsed, about 6.0 min left" after `done` of `total` steps in `elapsed` seconds, at the
    /// mean rate so far; empty before the first step, after the last, and in the first 10 seconds.
    static func timing(elapsed: Double, done: Int, total: Int) -> String {
        guard done > 0, done < total, elapsed >= 10 else { return "" }
        return "\(duration(elapsed)) elapsed, about \(duration(elapsed / Double(done) * Double(total - done))) left"
    }

    /// "42 s", "3.5 min" or "1.2 h".
    static func duration(_ seconds: Double) -> String {
        if seconds < 90 { return "\(Int(seconds.rounded())) s" }
        if seconds < 90 * 60 { return "\(String(format1: seconds / 60)) min" }
        return "\(String(format1: seconds / 3600)) h"
    }

    /// Ends the progress line; returns the elapsed seconds.
    @discardableResult
    public func finish() -> Double {
        let seconds = MonotonicClock.now() - start
        if interactive { write("\r\u{1B}[K") }
        write("\(label): \(total) done in \(String(format1: seconds)) s\n")
        return seconds
    }

    private func write(_ s: String) { writeStandardError(s) }
}

/// Writes to file descriptor 2 directly (the C `stderr` global is not concurrency-safe in Swift 6).
public func writeStandardError(_ s: String) {
    var bytes = Array(s.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}

/// Seconds from a monotonic clock.
public enum MonotonicClock {
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

extension String {
    /// A number with one decimal ("12.3").
    public init(format1 value: Double) {
        let tenths = (value * 10).rounded()
        self = "\(Int(tenths) / 10).\(abs(Int(tenths)) % 10)"
    }
}
