/* Element types and the float16 / bfloat16 conversions. */
#ifndef AS_DTYPE_H
#define AS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* as_dtype, as_dtype_size, the float16 / bfloat16 conversions and
 * as_load_elem / as_store_elem: shared with the kernels (kernels/common). */
#include "as_scalar.h"

const char *as_dtype_name(as_dtype dt);         /* "float32", ... */
int as_dtype_from_name(const char *name);        /* -1 when unknown; accepts torch aliases */
bool as_dtype_is_float(as_dtype dt);
/* The type both operands of a binary op are converted to (PyTorch's rules):
 * bool < int32 < int64 < bfloat16/float16 < float32 < float64; float16 with
 * bfloat16 gives float32. */
as_dtype as_dtype_promote(as_dtype a, as_dtype b);

#endif
