#include "cf16.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CF16_X86 1
#endif

static float half_to_float_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do { e++; mant <<= 1; } while ((mant & 0x400u) == 0);
            mant &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t float_to_half_scalar(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? (0x200u | ((absx >> 13) & 0x3ffu)) : 0));
    }
    if (absx >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absx < 0x38800000u) { /* below smallest normal half (2^-14): subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to zero */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absx - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t out = r >> 13;
    uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

#ifdef CF16_X86
__attribute__((target("avx,f16c")))
static void half_to_float_f16c(const uint16_t *src, float *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < count; i++) dst[i] = half_to_float_scalar(src[i]);
}

__attribute__((target("avx,f16c")))
static void float_to_half_f16c(const float *src, uint16_t *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 f = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < count; i++) dst[i] = float_to_half_scalar(src[i]);
}
#endif

int cf16_has_f16c(void) {
#ifdef CF16_X86
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

void cf16_half_to_float(const uint16_t *src, float *dst, size_t count) {
#ifdef CF16_X86
    if (cf16_has_f16c()) { half_to_float_f16c(src, dst, count); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = half_to_float_scalar(src[i]);
}

void cf16_float_to_half(const float *src, uint16_t *dst, size_t count) {
#ifdef CF16_X86
    if (cf16_has_f16c()) { float_to_half_f16c(src, dst, count); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = float_to_half_scalar(src[i]);
}

/* BF16 is the top half of an F32: widening shifts the bits up; narrowing rounds to nearest even
   (adding 0x7FFF plus the lowest kept bit) and turns a NaN into a quiet NaN of the same sign and top
   payload. Loads and stores go through memcpy or unaligned vector moves: memory-mapped tensors need
   not be 2-byte aligned. */
static uint16_t float_to_bf16_scalar(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)((u >> 16) | 0x0040);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static void bf16_to_float_scalar(const uint8_t *src, float *dst, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(dst + i, &u, 4);
    }
}

static void float_to_bf16_scalar_run(const float *src, uint8_t *dst, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint16_t h = float_to_bf16_scalar(src[i]);
        memcpy(dst + 2 * i, &h, 2);
    }
}

#ifdef CF16_X86
__attribute__((target("avx2")))
static void bf16_to_float_avx2(const uint8_t *src, float *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + 2 * i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    bf16_to_float_scalar(src + 2 * i, dst + i, count - i);
}

__attribute__((target("avx2")))
static void float_to_bf16_avx2(const float *src, uint8_t *dst, size_t count) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF), quiet = _mm256_set1_epi32(0x0040);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 f = _mm256_loadu_ps(src + i);
        __m256i u = _mm256_castps_si256(f), high = _mm256_srli_epi32(u, 16);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(high, one)), 16);
        __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
        __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(high, quiet), nan);
        /* Every lane holds a value below 2^16, so the saturating pack is exact; the permute undoes
           its per-128-bit-lane interleaving. */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
        _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm256_castsi256_si128(packed));
    }
    float_to_bf16_scalar_run(src + i, dst + 2 * i, count - i);
}

static int has_avx2(void) { return __builtin_cpu_supports("avx2"); }
#endif

void cf16_bf16_to_float(const void *src, float *dst, size_t count) {
#ifdef CF16_X86
    if (has_avx2()) { bf16_to_float_avx2(src, dst, count); return; }
#endif
    bf16_to_float_scalar(src, dst, count);
}

void cf16_float_to_bf16(const float *src, void *dst, size_t count) {
#ifdef CF16_X86
    if (has_avx2()) { float_to_bf16_avx2(src, dst, count); return; }
#endif
    float_to_bf16_scalar_run(src, dst, count);
}

/* Non-finite values are rare, so blocks are OR-reduced (which the compiler vectorizes) and only a
   block that has one is searched again for its index. */
#define NONFINITE_BLOCK 4096

/* first_nonfinite_u16 and first_nonfinite_u32: one body for both widths (the compiler vectorizes each). */
#define DEFINE_FIRST_NONFINITE(NAME, TYPE)                                              \
    static size_t NAME(const uint8_t *src, size_t count, TYPE mask) {                   \
        for (size_t start = 0; start < count; start += NONFINITE_BLOCK) {               \
            size_t n = count - start < NONFINITE_BLOCK ? count - start : NONFINITE_BLOCK;\
            const uint8_t *p = src + sizeof(TYPE) * start;                              \
            unsigned any = 0;                                                           \
            for (size_t i = 0; i < n; i++) {                                            \
                TYPE v;                                                                 \
                memcpy(&v, p + sizeof(TYPE) * i, sizeof(TYPE));                         \
                any |= (v & mask) == mask;                                              \
            }                                                                           \
            if (!any) continue;                                                         \
            for (size_t i = 0; i < n; i++) {                                            \
                TYPE v;                                                                 \
                memcpy(&v, p + sizeof(TYPE) * i, sizeof(TYPE));                         \
                if ((v & mask) == mask) return start + i;                               \
            }                                                                           \
        }                                                                               \
        return count;                                                                   \
    }

DEFINE_FIRST_NONFINITE(first_nonfinite_u16, uint16_t)
DEFINE_FIRST_NONFINITE(first_nonfinite_u32, uint32_t)

size_t cf16_first_nonfinite(const void *src, size_t count, size_t width, uint32_t exponent_mask) {
    if (width == 2) return first_nonfinite_u16(src, count, (uint16_t)exponent_mask);
    return first_nonfinite_u32(src, count, exponent_mask);
}
