import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs an executable to completion or a deadline, the way the input fuzzer and the command-line
/// tests observe the tools: stdout discarded, stderr captured, Swift's backtracer off (a crash is
/// reported by its signal, in milliseconds rather than the backtrace's ~0.3 s), and a run that
/// outlives the deadline killed with SIGKILL and reported as timed out.
public enum TimedProcess {
    public struct Outcome: Sendable {
        /// The exit status (meaningless when `signal` is set).
        public var status: Int32 = 0
        /// The signal that ended the process, if one did (a Swift trap is SIGILL or SIGTRAP).
        public var signal: Int32?
        public var timedOut = false
        public var stderr = ""
        public var seconds = 0.0

        public init(status: Int32 = 0, signal: Int32? = nil, timedOut: Bool = false, stderr: String = "", seconds: Double = 0) {
            self.status = status
            self.signal = signal
            self.timedOut = timedOut
            self.stderr = stderr
            self.seconds = seconds
        }
    }

    public static func run(_ executable: String, _ arguments: [String], timeout: Double) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        let start = MonotonicClock.now()
        try process.run()
        // stderr is drained while waiting: a child that fills the pipe must not block.
        let collected = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var data = Data()
        DispatchQueue.global().async {
            data = err.fileHandleForReading.readDataToEndOfFile()
            collected.signal()
        }
        var outcome = Outcome()
        if done.wait(timeout: .now() + timeout) == .timedOut {
            outcome.timedOut = true
            kill(process.processIdentifier, SIGKILL)
            done.wait()
        }
        collected.wait()
        outcome.seconds = MonotonicClock.now() - start
        outcome.stderr = String(decoding: data, as: UTF8.self)
        if process.terminationReason == .uncaughtSignal { outcome.signal = process.terminationStatus }
        else { outcome.status = process.terminationStatus }
        return outcome
    }
}
