#define _GNU_SOURCE
#include "ckernels.h"
#include <math.h>
#include <string.h>

/* Element-wise kernels of the forward pass that BLAS does not cover. Swift compiles for baseline
   x86-64 (SSE2) and calls expf one value at a time; these use AVX2 with glibc's vectorized expf
   (libmvec's _ZGVdN8v_expf, 8 lanes) chosen at run time, as cf16.c does for F16C. */

/* ck_exp_sum's scalar path (and the vector path's tail). */
static double exp_sum_scalar(float *z, size_t count, float shift, double *weighted) {
    double sum = 0;
    for (size_t i = 0; i < count; i++) {
        double e = exp((double)z[i] - shift);
        sum += e;
        *weighted += e * z[i];
        z[i] = (float)e;
    }
    return sum;
}

/* One weight of ck_adam_step; its AVX2 loop does the same operations on 8 at once. One product per
   statement: clang (SwiftPM's C compiler) fuses a product and a sum into an FMA only within one
   expression, so neither this path nor its inlined copy in the AVX2 tail is fused (GCC's default
   -ffp-contract=fast would fuse across statements). */
static inline void adam_scalar(float *w, float *m, float *v, float g, float scale, float beta1, float beta2,
                               float correction1, float correction2, float rate) {
    const float gi = g * scale;
    const float decayed_m = beta1 * *m, new_m = (1.0f - beta1) * gi;
    *m = decayed_m + new_m;
    const float decayed_v = beta2 * *v, scaled = (1.0f - beta2) * gi, new_v = scaled * gi;
    *v = decayed_v + new_v;
    const float step = rate * (*m / correction1);
    *w -= step / (sqrtf(*v / correction2) + 1e-30f);
}

#if defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>
#define CK_AVX2 1

__attribute__((target("avx2,fma"))) __m256 _ZGVdN8v_expf(__m256 x);
__attribute__((target("avx2,fma"))) __m256d _ZGVdN4v_exp(__m256d x);

__attribute__((target("avx2,fma"))) static float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void softmax_row_avx2(float *row, size_t visible, float scale) {
    size_t n = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; n + 8 <= visible; n += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + n));
    float maximum = hmax8(vmax);
    for (; n < visible; n++) maximum = fmaxf(maximum, row[n]);
    maximum *= scale;
    const __m256 vscale = _mm256_set1_ps(scale), vshift = _mm256_set1_ps(maximum);
    __m256 vsum = _mm256_setzero_ps();
    for (n = 0; n + 8 <= visible; n += 8) {
        __m256 e = _ZGVdN8v_expf(_mm256_fmsub_ps(_mm256_loadu_ps(row + n), vscale, vshift));
        _mm256_storeu_ps(row + n, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum8(vsum);
    for (; n < visible; n++) { row[n] = expf(row[n] * scale - maximum); sum += row[n]; }
    const __m256 vinv = _mm256_set1_ps(1.0f / sum);
    for (n = 0; n + 8 <= visible; n += 8) _mm256_storeu_ps(row + n, _mm256_mul_ps(_mm256_loadu_ps(row + n), vinv));
    for (; n < visible; n++) row[n] *= 1.0f / sum;
}

__attribute__((target("avx2,fma"))) static void softmax_backward_row_avx2(const float *p, float *dp, size_t visible, float scale) {
    size_t n = 0;
    __m256 vdot = _mm256_setzero_ps();
    for (; n + 8 <= visible; n += 8) vdot = _mm256_fmadd_ps(_mm256_loadu_ps(p + n), _mm256_loadu_ps(dp + n), vdot);
    float dot = hsum8(vdot);
    for (; n < visible; n++) dot += p[n] * dp[n];
    const __m256 vscale = _mm256_set1_ps(scale), vshift = _mm256_set1_ps(dot);
    for (n = 0; n + 8 <= visible; n += 8) {
        __m256 scaled = _mm256_mul_ps(vscale, _mm256_loadu_ps(p + n));
        _mm256_storeu_ps(dp + n, _mm256_mul_ps(scaled, _mm256_sub_ps(_mm256_loadu_ps(dp + n), vshift)));
    }
    for (; n < visible; n++) dp[n] = scale * p[n] * (dp[n] - dot);
}

__attribute__((target("avx2,fma"))) static void silu_mul_avx2(const float *gate, float *up, size_t count) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(zero, g));
        _mm256_storeu_ps(up + i, _mm256_mul_ps(_mm256_loadu_ps(up + i), _mm256_div_ps(g, _mm256_add_ps(one, e))));
    }
    for (; i < count; i++) up[i] *= gate[i] / (1.0f + expf(-gate[i]));
}

/* Sum of squares in F64 (4 lanes), then y = w · (x · inv) in F32 as the scalar path does. */
__attribute__((target("avx2,fma"))) static void rms_norm_row_avx2(const float *x, const float *weight, float *y,
                                                                   size_t d, double eps) {
    __m256d vss = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        vss = _mm256_fmadd_pd(v, v, vss);
    }
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(vss), _mm256_extractf128_pd(vss, 1));
    double ss = _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
    for (; i < d; i++) ss += (double)x[i] * x[i];
    const float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= d; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv)));
    for (; i < d; i++) y[i] = weight[i] * (x[i] * inv);
}

__attribute__((target("avx2,fma"))) static void add_widened_avx2(double *sum, const float *x, size_t count) {
    size_t i = 0;
    for (; i + 4 <= count; i += 4)
        _mm256_storeu_pd(sum + i, _mm256_add_pd(_mm256_loadu_pd(sum + i), _mm256_cvtps_pd(_mm_loadu_ps(x + i))));
    for (; i < count; i++) sum[i] += x[i];
}

__attribute__((target("avx2,fma"))) static void adam_avx2(float *w, float *m, float *v, const float *g, size_t count, float scale,
                                                          float beta1, float beta2, float correction1, float correction2, float rate) {
    const __m256 vscale = _mm256_set1_ps(scale), b1 = _mm256_set1_ps(beta1), b2 = _mm256_set1_ps(beta2);
    const __m256 a1 = _mm256_set1_ps(1.0f - beta1), a2 = _mm256_set1_ps(1.0f - beta2);
    const __m256 c1 = _mm256_set1_ps(correction1), c2 = _mm256_set1_ps(correction2), vrate = _mm256_set1_ps(rate);
    const __m256 tiny = _mm256_set1_ps(1e-30f);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), vscale);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(a1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(a2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 step = _mm256_mul_ps(vrate, _mm256_div_ps(mi, c1));
        __m256 denominator = _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(vi, c2)), tiny);
        _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), _mm256_div_ps(step, denominator)));
    }
    for (; i < count; i++) adam_scalar(w + i, m + i, v + i, g[i], scale, beta1, beta2, correction1, correction2, rate);
}

__attribute__((target("avx2,fma"))) static float max_avx2(const float *x, size_t count) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float maximum = hmax8(vmax);
    for (; i < count; i++) maximum = fmaxf(maximum, x[i]);
    return maximum;
}

__attribute__((target("avx2,fma"))) static double hsum4d(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* The exponentials in F64 (libmvec's 4-lane exp, ≤ 4 ulp), as exact as the scalar path's: log Σ exp
   then carries no F32 rounding, which matters when two log partitions nearly cancel (a small KL). */
__attribute__((target("avx2,fma"))) static double exp_sum_avx2(float *z, size_t count, float shift, double *weighted) {
    const __m256d vshift = _mm256_set1_pd(shift);
    __m256d sum = _mm256_setzero_pd(), w = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(z + i));
        __m256d e = _ZGVdN4v_exp(_mm256_sub_pd(v, vshift));
        sum = _mm256_add_pd(sum, e);
        w = _mm256_fmadd_pd(e, v, w);
        _mm_storeu_ps(z + i, _mm256_cvtpd_ps(e));
    }
    *weighted += hsum4d(w);
    return hsum4d(sum) + exp_sum_scalar(z + i, count - i, shift, weighted);
}

/* __builtin_cpu_supports reads flags set once at load time: cheap enough per row, and thread-safe. */
static int use_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

static void softmax_row_scalar(float *row, size_t visible, float scale) {
    float maximum = -INFINITY, sum = 0;
    for (size_t n = 0; n < visible; n++) maximum = fmaxf(maximum, row[n] * scale);
    for (size_t n = 0; n < visible; n++) { row[n] = expf(row[n] * scale - maximum); sum += row[n]; }
    for (size_t n = 0; n < visible; n++) row[n] *= 1.0f / sum;
}

void ck_causal_softmax(float *scores, size_t blocks, size_t queries, size_t keys, float scale) {
    for (size_t b = 0; b < blocks; b++) {
        for (size_t i = 0; i < queries; i++) {
            float *row = scores + (b * queries + i) * keys;
            size_t visible = keys - queries + i + 1;
#ifdef CK_AVX2
            if (use_avx2()) softmax_row_avx2(row, visible, scale); else
#endif
            softmax_row_scalar(row, visible, scale);
            memset(row + visible, 0, (keys - visible) * sizeof(float));
        }
    }
}

static void softmax_backward_row_scalar(const float *p, float *dp, size_t visible, float scale) {
    float dot = 0;
    for (size_t n = 0; n < visible; n++) dot += p[n] * dp[n];
    for (size_t n = 0; n < visible; n++) dp[n] = scale * p[n] * (dp[n] - dot);
}

void ck_causal_softmax_backward(const float *p, float *dp, size_t queries, size_t keys, float scale) {
    for (size_t i = 0; i < queries; i++) {
        const float *prow = p + i * keys;
        float *row = dp + i * keys;
        size_t visible = keys - queries + i + 1;
#ifdef CK_AVX2
        if (use_avx2()) softmax_backward_row_avx2(prow, row, visible, scale); else
#endif
        softmax_backward_row_scalar(prow, row, visible, scale);
        memset(row + visible, 0, (keys - visible) * sizeof(float));
    }
}

void ck_silu_mul(const float *gate, float *up, size_t count) {
#ifdef CK_AVX2
    if (use_avx2()) { silu_mul_avx2(gate, up, count); return; }
#endif
    for (size_t i = 0; i < count; i++) up[i] *= gate[i] / (1.0f + expf(-gate[i]));
}

static void rms_norm_row_scalar(const float *x, const float *weight, float *y, size_t d, double eps) {
    double ss = 0;
    for (size_t i = 0; i < d; i++) ss += (double)x[i] * x[i];
    const float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
    for (size_t i = 0; i < d; i++) y[i] = weight[i] * (x[i] * inv);
}

void ck_rms_norm(const float *x, const float *weight, float *y, size_t tokens, size_t d, double eps) {
    for (size_t t = 0; t < tokens; t++) {
#ifdef CK_AVX2
        if (use_avx2()) { rms_norm_row_avx2(x + t * d, weight, y + t * d, d, eps); continue; }
#endif
        rms_norm_row_scalar(x + t * d, weight, y + t * d, d, eps);
    }
}

void ck_add_widened(double *sum, const float *x, size_t count) {
#ifdef CK_AVX2
    if (use_avx2()) { add_widened_avx2(sum, x, count); return; }
#endif
    for (size_t i = 0; i < count; i++) sum[i] += x[i];
}

void ck_adam_step(float *w, float *m, float *v, const float *g, size_t count, float scale, float beta1, float beta2,
                  float correction1, float correction2, float rate) {
#ifdef CK_AVX2
    if (use_avx2()) { adam_avx2(w, m, v, g, count, scale, beta1, beta2, correction1, correction2, rate); return; }
#endif
    for (size_t i = 0; i < count; i++) adam_scalar(w + i, m + i, v + i, g[i], scale, beta1, beta2, correction1, correction2, rate);
}

float ck_max(const float *x, size_t count) {
#ifdef CK_AVX2
    if (use_avx2()) return max_avx2(x, count);
#endif
    float maximum = -INFINITY;
    for (size_t i = 0; i < count; i++) maximum = fmaxf(maximum, x[i]);
    return maximum;
}

double ck_exp_sum(float *z, size_t count, float shift, double *weighted) {
#ifdef CK_AVX2
    if (use_avx2()) return exp_sum_avx2(z, count, shift, weighted);
#endif
    return exp_sum_scalar(z, count, shift, weighted);
}

int ck_contains_bytes(const void *bytes, size_t count, const void *needle, size_t length) {
    if (length == 0) return 1;
    return bytes != NULL && memmem(bytes, count, needle, length) != NULL;
}

int ck_has_avx2(void) {
#ifdef CK_AVX2
    return use_avx2();
#else
    return 0;
#endif
}

#if defined(__GLIBC__)
#include <malloc.h>
int ck_tune_allocator(size_t mmap_threshold, size_t trim_threshold, int arenas) {
    // Each setting on its own, so that one refused (glibc before 2.35 caps M_MMAP_THRESHOLD at 32 MiB)
    // does not skip the others.
    int mmap = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold);
    int trim = mallopt(M_TRIM_THRESHOLD, (int)trim_threshold);
    int arena = mallopt(M_ARENA_MAX, arenas);
    return mmap && trim && arena;
}
int ck_return_freed_memory(void) { return malloc_trim(0); }
#else
int ck_return_freed_memory(void) { return 0; }
int ck_tune_allocator(size_t mmap_threshold, size_t trim_threshold, int arenas) {
    (void)mmap_threshold;
    (void)trim_threshold;
    (void)arenas;
    return 0;
}
#endif

#if defined(__GLIBC__)
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static void ck_exit_now(int status, void *arg) {
    (void)arg;
    fflush(NULL);
    _exit(status);
}
int ck_exit_without_library_destructors(void) { return on_exit(ck_exit_now, NULL) == 0; }
#else
int ck_exit_without_library_destructors(void) { return 0; }
#endif
