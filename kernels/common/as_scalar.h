/* Scalar element math shared by the runtime and the kernels: element sizes,
 * float16 / bfloat16 conversions (round to nearest even; NaN stays NaN,
 * overflow goes to inf) and typed loads and stores through double.  Inline,
 * so a kernel needs no runtime code for them. */
#ifndef AS_SCALAR_H
#define AS_SCALAR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "as_types.h"

static inline size_t as_dtype_size(as_dtype dt)
{
    switch (dt) {
    case AS_F32: case AS_I32: return 4;
    case AS_F16: case AS_BF16: return 2;
    case AS_I64: case AS_F64: return 8;
    case AS_BOOL: return 1;
    default: return 0;
    }
}

static inline uint32_t as_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float as_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t as_f32_to_bf16(float f)
{
    uint32_t u = as_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float as_bf16_to_f32(uint16_t h) { return as_bits_f32((uint32_t)h << 16); }

static inline uint16_t as_f32_to_f16(float f)
{
    uint32_t u = as_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);    /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds to inf */
    if (absu < 0x38800000u) {                                    /* subnormal or zero in f16 */
        /* Adding 0.5 makes the FPU do the round-to-nearest-even shift for us. */
        float r = as_bits_f32(absu) + 0.5f;
        return (uint16_t)(sign | (as_f32_bits(r) - 0x3f000000u));
    }
    uint32_t mant_odd = (absu >> 13) & 1u;
    absu += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (absu >> 13));
}

static inline float as_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return as_bits_f32(sign | 0x7f800000u | (mant << 13));
    return as_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Element i of a float32, float16 or bfloat16 array as float32, and back
 * (rounded to nearest even): the fused kernels that read a tensor in its
 * own dtype (optimizer steps, cross-entropy rows). */
static inline float as_load_f32(const void *p, as_dtype dt, int64_t i)
{
    switch (dt) {
    case AS_F16: return as_f16_to_f32(((const uint16_t *)p)[i]);
    case AS_BF16: return as_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}
static inline void as_store_f32(void *p, as_dtype dt, int64_t i, float x)
{
    switch (dt) {
    case AS_F16: ((uint16_t *)p)[i] = as_f32_to_f16(x); break;
    case AS_BF16: ((uint16_t *)p)[i] = as_f32_to_bf16(x); break;
    default: ((float *)p)[i] = x; break;
    }
}

/* Reads element i of a typed array as double. */
static inline double as_load_elem(const void *p, as_dtype dt, int64_t i)
{
    switch (dt) {
    case AS_F32: return ((const float *)p)[i];
    case AS_F64: return ((const double *)p)[i];
    case AS_F16: return as_f16_to_f32(((const uint16_t *)p)[i]);
    case AS_BF16: return as_bf16_to_f32(((const uint16_t *)p)[i]);
    case AS_I64: return (double)((const int64_t *)p)[i];
    case AS_I32: return ((const int32_t *)p)[i];
    case AS_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: return 0;
    }
}

/* Float to integer saturates (NaN gives 0): the C cast is undefined out of
 * range.  [lo, hi) is the range of doubles that convert exactly. */
static inline int64_t as_saturate(double v, double lo, double hi, int64_t min, int64_t max)
{
    if (v != v) return 0;
    if (v < lo) return min;
    if (v >= hi) return max;
    return (int64_t)v;
}

/* Writes a double into element i of a typed array. */
static inline void as_store_elem(void *p, as_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case AS_F32: ((float *)p)[i] = (float)v; break;
    case AS_F64: ((double *)p)[i] = v; break;
    case AS_F16: ((uint16_t *)p)[i] = as_f32_to_f16((float)v); break;
    case AS_BF16: ((uint16_t *)p)[i] = as_f32_to_bf16((float)v); break;
    case AS_I64: ((int64_t *)p)[i] = as_saturate(v, -0x1p63, 0x1p63, INT64_MIN, INT64_MAX); break;
    case AS_I32: ((int32_t *)p)[i] = (int32_t)as_saturate(v, -0x1p31, 0x1p31, INT32_MIN, INT32_MAX); break;
    case AS_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
    }
}

#endif
