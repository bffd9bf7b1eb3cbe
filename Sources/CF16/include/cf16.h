#ifndef CF16_H
#define CF16_H
#include <stddef.h>
#include <stdint.h>

/// Widens `count` IEEE half-precision values (bit patterns) to float32. Exact.
/// Uses the CPU's F16C instructions when present, a portable bit-exact path otherwise.
void cf16_half_to_float(const uint16_t *src, float *dst, size_t count);

/// Narrows `count` float32 values to IEEE half precision, round-to-nearest-even, NaNs stay NaN.
void cf16_float_to_half(const float *src, uint16_t *dst, size_t count);

/// Widens `count` BF16 values (little-endian bit patterns at `src`, any alignment) to float32. Exact.
/// AVX2 when the CPU has it.
void cf16_bf16_to_float(const void *src, float *dst, size_t count);

/// Narrows `count` float32 values to BF16 bit patterns at `dst` (any alignment), round-to-nearest-even;
/// NaNs become quiet NaNs. AVX2 when the CPU has it.
void cf16_float_to_bf16(const float *src, void *dst, size_t count);

/// The index of the first of `count` little-endian values at `src` (any alignment), each `width`
/// bytes (2 or 4), whose bits under `exponent_mask` are all set: an infinity or a NaN of F32
/// (width 4, mask 0x7F800000), BF16 (width 2, mask 0x7F80) or F16 (width 2, mask 0x7C00).
/// Returns `count` when every value is finite. Reads the bytes once, in vectorized blocks.
size_t cf16_first_nonfinite(const void *src, size_t count, size_t width, uint32_t exponent_mask);

/// 1 when the F16C fast path is in use on this CPU.
int cf16_has_f16c(void);
#endif
