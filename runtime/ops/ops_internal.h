/* Helpers shared by the op front-ends (runtime/ops_*.c), not part of the API. */
#ifndef AS_OPS_INTERNAL_H
#define AS_OPS_INTERNAL_H

#include "attnswap/error.h"
#include "attnswap/ops.h"

/* 0 when every tensor (NULL entries skipped) is on one device, else the
 * error for fn naming both devices. */
int as_ops_check_device(const char *fn, int n, const as_tensor *const *ts);
/* The same, and that device is the CPU (ops with CPU kernels only). */
int as_ops_check_cpu(const char *fn, int n, const as_tensor *const *ts);
/* 0 when t is floating point, else "fn: expected a floating-point tensor, got int64". */
int as_ops_check_float(const char *fn, const as_tensor *t);
/* t as a contiguous float32 tensor (a new reference; t itself when it already is). */
as_tensor *as_ops_f32_contiguous(const as_tensor *t);
/* Releases up to 4 tensors (NULL allowed). */
void as_ops_release4(as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d);

#endif
