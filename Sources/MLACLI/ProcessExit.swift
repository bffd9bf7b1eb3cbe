import CKernels

/// How the command-line tools end.
public enum ProcessExit {
    /// Makes `exit` end the process once the exit handlers registered later (`--stats`) have run and
    /// stdio is flushed, without running shared-library destructors: OpenBLAS 0.3.21 (Debian 12)
    /// can hang forever in its destructor joining a BLAS thread that was going to sleep as the process
    /// exited (seen once after an 8B conversion had written its output). Every tool calls this first.
    public static func skipLibraryDestructors() {
        _ = ck_exit_without_library_destructors()
    }
}
