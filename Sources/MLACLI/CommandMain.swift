import ArgumentParser
import Foundation

extension ParsableCommand {
    /// The tools' entry point: `BLASEnvironmentRestart.restartIfNeeded()` and
    /// `ProcessExit.skipLibraryDestructors()`, then parse and run like
    /// ArgumentParser's `main()`, except that a usage error prints exactly one line on standard error,
    /// `Error: <message>`, and exits with 64 (EX_USAGE). Usage errors are a `ValidationError` thrown by
    /// `validate()` or `run()` and a command line that does not parse (an unknown option, a missing
    /// or unreadable value): ArgumentParser 1.8.2 follows their message with a usage line and a "See
    /// '… --help'" line (`MessageInfo.fullText`), which buried the message; `--help` shows the usage
    /// on request. Help, version and every other error are printed as ArgumentParser prints them
    /// (the tools' own errors are one line already).
    public static func mainWithOneLineErrors() {
        BLASEnvironmentRestart.restartIfNeeded()
        ProcessExit.skipLibraryDestructors()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            guard code == .validationFailure else { exit(withError: error) }
            let message = message(for: error).split(whereSeparator: \.isNewline).joined(separator: " ")
            writeStandardError("Error: \(message)\n")
            Foundation.exit(code.rawValue)
        }
    }
}
