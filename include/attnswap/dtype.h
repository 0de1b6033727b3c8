/* Element types and the float16 / bfloat16 conversions. */
#ifndef AS_DTYPE_H
#define AS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    AS_F32 = 0,
    AS_F16,
    AS_BF16,
    AS_I64,
    AS_I32,
    AS_BOOL,
    AS_NDTYPES
} as_dtype;

size_t as_dtype_size(as_dtype dt);
const char *as_dtype_name(as_dtype dt);         /* "float32", ... */
int as_dtype_from_name(const char *name);        /* -1 when unknown; accepts torch aliases */
bool as_dtype_is_float(as_dtype dt);
/* The type both operands of a binary op are converted to (PyTorch's rules,
 * without float64): bool < int32 < int64 < bfloat16/float16 < float32;
 * float16 with bfloat16 gives float32. */
as_dtype as_dtype_promote(as_dtype a, as_dtype b);

/* Round-to-nearest-even conversions; NaN stays NaN, overflow goes to inf. */
uint16_t as_f32_to_f16(float f);
float as_f16_to_f32(uint16_t h);
uint16_t as_f32_to_bf16(float f);
float as_bf16_to_f32(uint16_t h);

/* Reads element i of a typed array as double / writes a double into it. */
double as_load_elem(const void *p, as_dtype dt, int64_t i);
void as_store_elem(void *p, as_dtype dt, int64_t i, double v);

#endif
