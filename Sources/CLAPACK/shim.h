// CBLAS and LAPACKE from Debian's OpenBLAS (libopenblas-dev) and liblapacke-dev.
#include <cblas.h>
#include <lapacke.h>

// `lapack_int` is a macro, which Swift cannot see; give it a typedef.
typedef lapack_int clapack_int;

// OpenBLAS's process-wide thread count (see MLALinalg.BLASThreads).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
// The compute kernels OpenBLAS chose at load time (DYNAMIC_ARCH builds), e.g. "SkylakeX" (see
// MLALinalg.BLASKernel).
char *openblas_get_corename(void);

// The CPU's vector units, as the compiler's cpuid check reports them (0 off x86-64).
static inline int clapack_cpu_has_avx2_fma(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static inline int clapack_cpu_has_avx512_skx(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

// How long OpenBLAS's idle threads spin before they sleep, as read from OPENBLAS_THREAD_TIMEOUT when the
// library loaded (a power of two of CPU cycles; 0 when unset). Exported by every OpenBLAS build
// (driver/others/openblas_env.c) but not declared in its headers (see MLALinalg.BLASIdleThreads).
unsigned int openblas_thread_timeout(void);
