import Foundation
import MLATensor

/// Memory and time figures of this process, for the summary line commands print at the end.
public enum ResourceUsage {
    /// Current resident set size in bytes (VmRSS of /proc/self/status; 0 where that file is missing).
    public static var residentBytes: Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        return 0
    }

    /// Peak resident set size so far in bytes: getrusage's `ru_maxrss` (KiB on Linux).
    public static var peakResidentBytes: Int { usage().peakBytes }

    /// CPU seconds spent in user and kernel mode by every thread of the process so far.
    public static var cpuSeconds: (user: Double, system: Double) {
        let u = usage()
        return (u.user, u.system)
    }

    /// Seconds since the process started (CLOCK_BOOTTIME minus /proc/self/stat's start time, 10 ms
    /// resolution); nil where /proc is missing.
    public static var elapsedSeconds: Double? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces) start at field 3; the start time is field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9 - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// One line for the end of a command: "peak RSS 762.6 MiB, 2.4 s wall, CPU 3.1 s user + 0.2 s system".
    public static var summary: String {
        let u = usage()
        let wall = elapsedSeconds.map { String(format: ", %.1f s wall", $0) } ?? ""
        return String(format: "peak RSS %@%@, CPU %.1f s user + %.1f s system", formatBytes(u.peakBytes), wall, u.user, u.system)
    }

    private static func usage() -> (peakBytes: Int, user: Double, system: Double) {
        var r = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &r) == 0 else { return (0, 0, 0) }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
        return (r.ru_maxrss * 1024, seconds(r.ru_utime), seconds(r.ru_stime))
    }
}
