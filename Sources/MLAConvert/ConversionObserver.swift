import Foundation

/// What a conversion reports while it runs: staged progress ("calibrate" windows, "spectra" and
/// "convert" layers), one-line notes (the automatic choice's scores, the rope plan taken), and the clock
/// and memory figures of its summary. The library prints nothing itself; the tools print these.
public protocol ConversionObserver: Sendable {
    /// Work of `total` steps named `stage` begins.
    func begin(_ stage: String, total: Int)
    /// `done` steps of `stage` are done; called from worker threads too.
    func advance(_ stage: String, to done: Int)
    /// `stage` is over.
    func end(_ stage: String)
    /// One line of news, without its newline (e.g. "auto: KL 0.01234  rope 32, highest pairs, no fold").
    func note(_ line: String)
    /// Seconds from a monotonic clock, for the summary's duration.
    func now() -> Double
    /// Peak resident set size of the process so far in bytes (0 when unknown), for the summary.
    var peakResidentBytes: Int { get }
}

extension ConversionObserver {
    public func begin(_ stage: String, total: Int) {}
    public func advance(_ stage: String, to done: Int) {}
    public func end(_ stage: String) {}
    public func note(_ line: String) {}
    public func now() -> Double { ProcessInfo.processInfo.systemUptime }
    public var peakResidentBytes: Int { 0 }
}

/// An observer that reports nothing.
public struct SilentObserver: ConversionObserver {
    public init() {}
}
