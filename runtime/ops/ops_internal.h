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
/* The same in dt. */
as_tensor *as_ops_contiguous_as(const as_tensor *t, as_dtype dt);
/* The float dtype the CPU's float kernels compute a dt in: float64 stays
 * float64 (no float32 round trip), every other float dtype float32. */
static inline as_dtype as_ops_work_float(as_dtype dt) { return dt == AS_F64 ? AS_F64 : AS_F32; }
/* Releases up to 4 tensors (NULL allowed). */
void as_ops_release4(as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d);

/* ---- backward formulas (runtime/ops/grad_math.c) ----
 * Tensor math that consumes (releases) its tensor arguments and returns a
 * new reference, or NULL (having released them) once anything failed, so a
 * formula reads as one expression: g_bin(AS_MUL, g_ref(g), g_ref(b)). */
as_tensor *g_bin(as_binop op, as_tensor *a, as_tensor *b);
as_tensor *g_scal(as_binop op, as_tensor *a, double s); /* a op s */
as_tensor *g_un(as_unop op, as_tensor *a);
as_tensor *g_red(as_redop op, as_tensor *a, int dim); /* keepdim */
as_tensor *g_to(as_tensor *a, as_dtype dt);
static inline as_tensor *g_ref(const as_tensor *t) { return t ? as_retain((as_tensor *)t) : NULL; }


#endif
