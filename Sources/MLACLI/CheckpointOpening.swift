import MLACheckpoint

extension Checkpoint {
    /// `Checkpoint.open(path)`, then each of its warnings (`Checkpoint.warnings`, such as ignored
    /// stray layer tensors) as one line on standard error, so the user reads them before any work.
    public static func openPrintingWarnings(_ path: String) throws -> Checkpoint {
        let checkpoint = try open(path)
        for warning in checkpoint.warnings { writeStandardError("warning: \(warning)\n") }
        return checkpoint
    }
}
