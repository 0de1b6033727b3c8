#include "attnswap/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[AS_NDTYPES] = {
    [AS_F32] = {"float32", 4}, [AS_F16] = {"float16", 2}, [AS_BF16] = {"bfloat16", 2},
    [AS_I64] = {"int64", 8},   [AS_I32] = {"int32", 4},   [AS_BOOL] = {"bool", 1},
};

size_t as_dtype_size(as_dtype dt) { return dtype_info[dt].size; }
const char *as_dtype_name(as_dtype dt) { return dtype_info[dt].name; }

int as_dtype_from_name(const char *name)
{
    static const struct {
        const char *alias;
        as_dtype dt;
    } aliases[] = {
        {"float", AS_F32}, {"half", AS_F16},  {"long", AS_I64},  {"int", AS_I32},
        {"uint8", AS_BOOL}, {"f32", AS_F32},  {"f16", AS_F16},   {"bf16", AS_BF16},
    };
    for (int i = 0; i < AS_NDTYPES; i++)
        if (strcmp(name, dtype_info[i].name) == 0) return i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return (int)aliases[i].dt;
    return -1;
}

bool as_dtype_is_float(as_dtype dt) { return dt == AS_F32 || dt == AS_F16 || dt == AS_BF16; }

static int dtype_rank(as_dtype dt)
{
    switch (dt) {
    case AS_BOOL: return 0;
    case AS_I32: return 1;
    case AS_I64: return 2;
    case AS_F16:
    case AS_BF16: return 3;
    default: return 4;
    }
}

as_dtype as_dtype_promote(as_dtype a, as_dtype b)
{
    if (a == b) return a;
    if ((a == AS_F16 && b == AS_BF16) || (a == AS_BF16 && b == AS_F16)) return AS_F32;
    return dtype_rank(a) >= dtype_rank(b) ? a : b;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t as_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float as_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t as_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);    /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds to inf */
    if (absu < 0x38800000u) {                                    /* subnormal or zero in f16 */
        /* Adding 0.5 makes the FPU do the round-to-nearest-even shift for us. */
        float r = bits_f32(absu) + 0.5f;
        return (uint16_t)(sign | (f32_bits(r) - 0x3f000000u));
    }
    uint32_t mant_odd = (absu >> 13) & 1u;
    absu += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (absu >> 13));
}

float as_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

double as_load_elem(const void *p, as_dtype dt, int64_t i)
{
    switch (dt) {
    case AS_F32: return ((const float *)p)[i];
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
static int64_t saturate(double v, double lo, double hi, int64_t min, int64_t max)
{
    if (v != v) return 0;
    if (v < lo) return min;
    if (v >= hi) return max;
    return (int64_t)v;
}

void as_store_elem(void *p, as_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case AS_F32: ((float *)p)[i] = (float)v; break;
    case AS_F16: ((uint16_t *)p)[i] = as_f32_to_f16((float)v); break;
    case AS_BF16: ((uint16_t *)p)[i] = as_f32_to_bf16((float)v); break;
    case AS_I64: ((int64_t *)p)[i] = saturate(v, -0x1p63, 0x1p63, INT64_MIN, INT64_MAX); break;
    case AS_I32: ((int32_t *)p)[i] = (int32_t)saturate(v, -0x1p31, 0x1p31, INT32_MIN, INT32_MAX); break;
    case AS_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
    }
}
