#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>

/// Causal softmax of `blocks` score blocks of [queries × keys] floats, one after another, in place.
/// Row i of a block belongs to position keys − queries + i: its first keys − queries + i + 1 entries
/// become softmax(scale · s) (max-subtracted exponentials), the rest 0. `scale` must be positive.
/// AVX2 + glibc's vector expf (libmvec, ≤ 4 ulp) when the CPU has AVX2 and FMA; scalar expf otherwise.
void ck_causal_softmax(float *scores, size_t blocks, size_t queries, size_t keys, float scale);

/// The causal softmax's backward pass on one [queries × keys] block, in place: with p the block's
/// probabilities (`ck_causal_softmax`'s output) and dp the gradient with respect to them, each row's first
/// keys − queries + i + 1 entries become scale · p · (dp − Σ p·dp) (the row sum over those entries), the
/// rest 0. Same vector/scalar paths as `ck_causal_softmax` (the vector path sums in another order).
void ck_causal_softmax_backward(const float *p, float *dp, size_t queries, size_t keys, float scale);

/// SwiGLU's gate in place: up[i] ← up[i] · g / (1 + exp(−g)), g = gate[i], for `count` values.
/// Same vector/scalar paths as `ck_causal_softmax`.
void ck_silu_mul(const float *gate, float *up, size_t count);

/// RMSNorm of `tokens` rows of x [tokens × d]: y = weight · x / sqrt(mean(x²) + eps), the sum of
/// squares in F64, the products in F32. Same vector/scalar paths as `ck_causal_softmax`.
void ck_rms_norm(const float *x, const float *weight, float *y, size_t tokens, size_t d, double eps);

/// sum[i] += x[i] widened to F64, for `count` values (AVX2 when the CPU has it).
void ck_add_widened(double *sum, const float *x, size_t count);

/// The largest of x[0..<count] (−∞ when count is 0). AVX2 when the CPU has it.
float ck_max(const float *x, size_t count);

/// One Adam step on `count` weights w with moments m, v and gradient g: with gi = g[i]·scale,
/// m ← β1·m + (1 − β1)·gi, v ← β2·v + (1 − β2)·gi·gi, w ← w − rate·(m / c1) / (√(v / c2) + 10⁻³⁰), c1 and c2
/// the bias corrections. The same operations in the same order on both paths (AVX2 when the CPU has
/// it), so both give the same bits.
void ck_adam_step(float *w, float *m, float *v, const float *g, size_t count, float scale, float beta1, float beta2,
                  float correction1, float correction2, float rate);

/// Exponentials of one row of logits z[0..<count] against `shift` (e.g. their running maximum), in
/// place: z[i] becomes exp(z[i] − shift) (computed in F64, stored in F32); returns their sum and adds
/// Σ exp(z[i] − shift) · z[i] to *weighted, both in F64. AVX2 (libmvec's 4-lane F64 exp) when the CPU
/// has it and FMA, scalar exp otherwise.
double ck_exp_sum(float *z, size_t count, float shift, double *weighted);

/// 1 when bytes[0..<count] hold needle[0..<length] (memmem; an empty needle is found), else 0.
int ck_contains_bytes(const void *bytes, size_t count, const void *needle, size_t length);

/// 1 when the AVX2 path is in use on this CPU.
int ck_has_avx2(void);

/// glibc malloc: serve allocations below `mmap_threshold` bytes from the heap, keep up to
/// `trim_threshold` bytes of freed heap memory and use at most `arenas` heaps for all threads
/// (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD / M_ARENA_MAX), each tried whatever the others do.
/// Returns 1 when all took effect; does nothing (0) on other C libraries.
int ck_tune_allocator(size_t mmap_threshold, size_t trim_threshold, int arenas);

/// glibc malloc_trim(0): returns free heap pages to the system. Returns 1 when memory was released,
/// 0 otherwise (and on other C libraries).
int ck_return_freed_memory(void);

/// Makes exit() end the process right after the exit handlers registered after this call (and
/// stdio flushing), skipping shared-library destructors: OpenBLAS 0.3.21's destructor
/// (blas_thread_shutdown_) can deadlock joining a worker thread that was just going to sleep (the
/// worker overwrites the wake-up status the shutdown set, then waits on its condition forever).
/// Uses glibc's on_exit, which passes the exit status; returns 1 when registered, 0 elsewhere.
int ck_exit_without_library_destructors(void);
#endif
