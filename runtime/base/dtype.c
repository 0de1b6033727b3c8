#include "attnswap/dtype.h"

#include <math.h>
#include <string.h>

static const char *const dtype_names[AS_NDTYPES] = {
    [AS_F32] = "float32", [AS_F16] = "float16", [AS_BF16] = "bfloat16",
    [AS_I64] = "int64",   [AS_I32] = "int32",   [AS_BOOL] = "bool",
    [AS_F64] = "float64",
};

const char *as_dtype_name(as_dtype dt) { return dtype_names[dt]; }

int as_dtype_from_name(const char *name)
{
    static const struct {
        const char *alias;
        as_dtype dt;
    } aliases[] = {
        {"float", AS_F32}, {"half", AS_F16},  {"long", AS_I64},  {"int", AS_I32},
        {"uint8", AS_BOOL}, {"f32", AS_F32},  {"f16", AS_F16},   {"bf16", AS_BF16},
        {"double", AS_F64}, {"f64", AS_F64},
    };
    for (int i = 0; i < AS_NDTYPES; i++)
        if (strcmp(name, dtype_names[i]) == 0) return i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return (int)aliases[i].dt;
    return -1;
}

bool as_dtype_is_float(as_dtype dt) { return dt == AS_F32 || dt == AS_F16 || dt == AS_BF16 || dt == AS_F64; }

static int dtype_rank(as_dtype dt)
{
    switch (dt) {
    case AS_BOOL: return 0;
    case AS_I32: return 1;
    case AS_I64: return 2;
    case AS_F16:
    case AS_BF16: return 3;
    case AS_F64: return 5;
    default: return 4;
    }
}

as_dtype as_dtype_promote(as_dtype a, as_dtype b)
{
    if (a == b) return a;
    if ((a == AS_F16 && b == AS_BF16) || (a == AS_BF16 && b == AS_F16)) return AS_F32;
    return dtype_rank(a) >= dtype_rank(b) ? a : b;
}
