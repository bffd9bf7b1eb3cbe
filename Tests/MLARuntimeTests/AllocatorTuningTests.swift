import MLARuntime
import Testing

struct AllocatorTuningTests {
    #if canImport(Glibc)
    /// A setting glibc refuses (an mmap threshold above its cap, say) would leave the tools with a heap
    /// per thread, and every buffer page-faulted in afresh, without a word.
    @Test("glibc takes every allocator setting the tools make at start")
    func glibcTakesEverySetting() {
        #expect(AllocatorTuning.reuseFreedBuffers())
    }
    #endif
}
