import CKernels

/// glibc malloc settings for numeric work that allocates and frees the same large buffers over and
/// over (activations of every layer of every calibration batch, 1-13 MB each).
public enum AllocatorTuning {
    /// Serves buffers up to 64 MiB from the heap and keeps up to 512 MiB of freed heap memory,
    /// instead of mapping each buffer anew and unmapping it on free: every fresh mapping is
    /// page-faulted in again, which cost a calibration pass of the sample model 42 s of system
    /// time in 92 s (580 000 faults per 2048 tokens). Larger buffers (whole weight matrices) are
    /// still mapped, so they return to the system when freed.
    ///
    /// All threads share one heap (arena): by default glibc gives every thread that allocates a heap of
    /// its own (up to 8 per core), and a buffer goes back to the heap it came from, so the layer
    /// workers, the refinement's window workers and the layer prefetch thread each kept drawing fresh
    /// pages. One heap cut a 50 % conversion of the sample with the rope plan given from 85.9 s to
    /// 73.1 s, its page faults from 2.07 to 0.18 million and its peak from 659 to 539 MiB, with the same
    /// output bit for bit (docs/performance.md). Returns whether every setting took effect (always
    /// false on other C libraries, where it does nothing).
    @discardableResult
    public static func reuseFreedBuffers() -> Bool {
        ck_tune_allocator(largestReusedBuffer, 512 << 20, 1) == 1
    }

    /// Bytes: the largest buffer `reuseFreedBuffers` serves from the heap (64 MiB). Work that allocates
    /// the same buffers over and over should keep each below it.
    public static let largestReusedBuffer = 64 << 20

    /// Returns the freed heap memory to the system (glibc `malloc_trim`): after a phase that freed a
    /// whole model, so that the up to 512 MiB `reuseFreedBuffers` keeps do not add to the next phase's
    /// peak. Costs a few milliseconds; does nothing on other C libraries.
    public static func returnFreedMemory() {
        _ = ck_return_freed_memory()
    }
}
