/* Elementwise ops: broadcasting, type promotion, dispatch. */
#include <math.h>
#include <stdio.h>

#include "dispatch.h"
#include "ops_internal.h"

static const char *const binop_names[AS_NBINOPS] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or",
};
static const char *const unop_names[AS_NUNOPS] = {
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "gelu", "gelu",
    "silu", "sin", "cos", "logical_not",
};

const char *as_binop_name(as_binop op) { return op < AS_NBINOPS ? binop_names[op] : "?"; }
const char *as_unop_name(as_unop op) { return op < AS_NUNOPS ? unop_names[op] : "?"; }

int as_ops_check_device(const char *fn, int n, const as_tensor *const *ts)
{
    const as_tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (!first) first = ts[i];
        else if (!as_device_equal(as_tensor_device(first), as_tensor_device(ts[i]))) {
            char d0[32];
            snprintf(d0, sizeof d0, "%s", as_device_name(as_tensor_device(first)));
            as_error_set("%s: expected all tensors on one device, got %s and %s", fn, d0,
                         as_device_name(as_tensor_device(ts[i])));
            return -1;
        }
    }
    return 0;
}

int as_ops_check_cpu(const char *fn, int n, const as_tensor *const *ts)
{
    if (as_ops_check_device(fn, n, ts)) return -1;
    const as_tensor *first = NULL;
    for (int i = 0; i < n && !first; i++) first = ts[i];
    if (first && as_tensor_device(first).type != AS_DEV_CPU) {
        as_error_set("%s: device %s is not supported yet", fn, as_device_name(as_tensor_device(first)));
        return -1;
    }
    return 0;
}

int as_ops_check_float(const char *fn, const as_tensor *t)
{
    if (as_dtype_is_float(t->dtype)) return 0;
    as_error_set("%s: expected a floating-point tensor, got %s", fn, as_dtype_name(t->dtype));
    return -1;
}

as_tensor *as_ops_f32_contiguous(const as_tensor *t)
{
    as_tensor *f = as_to_dtype(t, AS_F32);
    if (!f) return NULL;
    as_tensor *c = as_contiguous(f);
    as_release(f);
    return c;
}

void as_ops_release4(as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d)
{
    as_release(a), as_release(b), as_release(c), as_release(d);
}

/* The dtype kernels take: int64/int32 for integers, int64 for bools; for
 * floats, float32 on the CPU (f16/bf16 are storage types there), while the
 * CUDA kernels read and write float16/bfloat16 themselves, computing in
 * float32 and rounding once, so both give the same numbers. */
static as_dtype compute_dtype(as_dtype dt, as_device dev)
{
    if (as_dtype_is_float(dt)) return dev.type == AS_DEV_CUDA ? dt : AS_F32;
    return dt == AS_BOOL ? AS_I64 : dt;
}

as_tensor *as_binary(as_binop op, const as_tensor *a, const as_tensor *b)
{
    const char *fn = as_binop_name(op);
    const as_tensor *ts[2] = {a, b};
    if (as_ops_check_device(fn, 2, ts)) return NULL;
    int64_t shape[AS_MAX_DIMS];
    int nd = as_broadcast_shape(fn, a->ndim, a->shape, b->ndim, b->shape, shape);
    if (nd < 0) return NULL;
    as_dtype promoted = as_dtype_promote(a->dtype, b->dtype);
    int is_cmp = op >= AS_EQ;
    as_dtype result = is_cmp ? AS_BOOL : promoted;
    if (op == AS_DIV && !as_dtype_is_float(promoted)) result = AS_F32;
    if (!is_cmp && promoted == AS_BOOL) result = AS_I64;
    as_dtype cdt = (op == AS_DIV && !as_dtype_is_float(promoted)) ? AS_F32 : compute_dtype(promoted, as_tensor_device(a));
    if (is_cmp && promoted == AS_I32) cdt = AS_I64;
    as_tensor *ca = as_to_dtype(a, cdt), *cb = ca ? as_to_dtype(b, cdt) : NULL;
    /* same shapes need no expanded views (the common case, and the tiny-op cost) */
    int same = as_same_shape(a, b) && a->ndim == nd;
    as_tensor *ea = cb ? (same ? as_retain(ca) : as_expand(ca, nd, shape)) : NULL;
    as_tensor *eb = ea ? (same ? as_retain(cb) : as_expand(cb, nd, shape)) : NULL;
    as_tensor *out = eb ? as_empty(nd, shape, is_cmp ? AS_BOOL : cdt, as_tensor_device(a)) : NULL;
    if (out && as_k_binary(op, out, ea, eb)) {
        as_release(out);
        out = NULL;
    }
    as_ops_release4(ca, cb, ea, eb);
    if (out && out->dtype != result) {
        as_tensor *r = as_to_dtype(out, result);
        as_release(out);
        out = r;
    }
    return out;
}

as_tensor *as_binary_scalar(as_binop op, const as_tensor *a, double s, bool scalar_first)
{
    as_dtype dt = a->dtype;
    if (!as_dtype_is_float(dt) && s != floor(s)) dt = AS_F32;
    if (dt == AS_BOOL && op < AS_EQ) dt = AS_I64;
    as_tensor *st = as_scalar(s, dt, as_tensor_device(a).type == AS_DEV_CPU ? AS_CPU : as_tensor_device(a));
    if (!st) return NULL;
    as_tensor *r = scalar_first ? as_binary(op, st, a) : as_binary(op, a, st);
    as_release(st);
    return r;
}

/* Whether dst op= src can run straight into dst: the kernel computes in
 * dst's own dtype, src broadcasts to dst's shape and cannot alias it, and
 * dst writes each element once (no dim of size > 1 with stride 0). */
static int in_place_ok(as_binop op, const as_tensor *dst, const as_tensor *src)
{
    as_device dev = as_tensor_device(dst);
    if (op >= AS_EQ || dst->dtype == AS_BOOL || (op == AS_DIV && !as_dtype_is_float(dst->dtype))) return 0;
    if (dst->dtype != compute_dtype(dst->dtype, dev) || as_dtype_promote(dst->dtype, src->dtype) != dst->dtype) return 0;
    if (!as_device_equal(dev, as_tensor_device(src)) || dst->storage == src->storage || src->ndim > dst->ndim) return 0;
    for (int d = 0; d < src->ndim; d++) {
        int64_t n = src->shape[src->ndim - 1 - d];
        if (n != 1 && n != dst->shape[dst->ndim - 1 - d]) return 0;
    }
    for (int d = 0; d < dst->ndim; d++)
        if (dst->shape[d] > 1 && dst->stride[d] == 0) return 0;
    return 1;
}

int as_binary_(as_binop op, as_tensor *dst, const as_tensor *src)
{
    if (in_place_ok(op, dst, src)) { /* nn.Linear's bias, residual adds: no temporary */
        as_tensor *cs = as_to_dtype(src, dst->dtype);
        as_tensor *es = cs ? as_expand(cs, dst->ndim, dst->shape) : NULL;
        int rc = es ? as_k_binary(op, dst, dst, es) : -1;
        as_release(cs), as_release(es);
        return rc;
    }
    as_tensor *r = as_binary(op, dst, src);
    if (!r) return -1;
    int rc = as_copy_(dst, r);
    as_release(r);
    if (rc) as_error_set("%s_: result does not fit the destination's shape", as_binop_name(op));
    return rc;
}

/* out = op(a); consumes out, which is NULL on failure. */
static as_tensor *unary_into(as_unop op, as_tensor *out, const as_tensor *a)
{
    if (out && as_k_unary(op, out, a)) {
        as_release(out);
        return NULL;
    }
    return out;
}

as_tensor *as_unary(as_unop op, const as_tensor *a)
{
    const char *fn = as_unop_name(op);
    if (as_ops_check_device(fn, 1, (const as_tensor *[]){a})) return NULL;
    as_device dev = as_tensor_device(a);
    if (op == AS_LOGICAL_NOT) {
        as_tensor *out = as_empty(a->ndim, a->shape, AS_BOOL, dev);
        return unary_into(op, out, a);
    }
    int int_op = (op == AS_NEG || op == AS_ABS || op == AS_RELU) && (a->dtype == AS_I64 || a->dtype == AS_I32);
    if (int_op) {
        as_tensor *out = as_empty(a->ndim, a->shape, a->dtype, dev);
        return unary_into(op, out, a);
    }
    as_dtype fdt = compute_dtype(as_dtype_is_float(a->dtype) ? a->dtype : AS_F32, dev);
    as_tensor *fa = as_to_dtype(a, fdt);
    as_tensor *out = fa ? unary_into(op, as_empty(a->ndim, a->shape, fdt, dev), fa) : NULL;
    as_release(fa);
    as_dtype result = as_dtype_is_float(a->dtype) ? a->dtype : AS_F32;
    if (out && result != out->dtype) {
        as_tensor *r = as_to_dtype(out, result);
        as_release(out);
        out = r;
    }
    return out;
}

as_tensor *as_clamp(const as_tensor *a, double lo, double hi)
{
    if (as_ops_check_device("clamp", 1, (const as_tensor *[]){a})) return NULL;
    if (!as_dtype_is_float(a->dtype)) {
        /* integers: clamp through the elementwise max/min, keeping the dtype */
        as_tensor *r = as_retain((as_tensor *)a);
        if (!isnan(lo)) {
            as_tensor *t = as_binary_scalar(AS_MAXIMUM, r, ceil(lo), false);
            as_release(r);
            r = t;
        }
        if (r && !isnan(hi)) {
            as_tensor *t = as_binary_scalar(AS_MINIMUM, r, floor(hi), false);
            as_release(r);
            r = t;
        }
        return r;
    }
    as_dtype fdt = compute_dtype(a->dtype, as_tensor_device(a));
    as_tensor *fa = as_to_dtype(a, fdt);
    as_tensor *out = fa ? as_empty(a->ndim, a->shape, fdt, as_tensor_device(a)) : NULL;
    if (out && as_k_clamp(out, fa, lo, hi)) {
        as_release(out);
        out = NULL;
    }
    as_release(fa);
    if (out && a->dtype != out->dtype) {
        as_tensor *r = as_to_dtype(out, a->dtype);
        as_release(out);
        out = r;
    }
    return out;
}

as_tensor *as_where(const as_tensor *cond, const as_tensor *a, const as_tensor *b)
{
    const as_tensor *ts[3] = {cond, a, b};
    if (as_ops_check_device("where", 3, ts)) return NULL;
    if (cond->dtype != AS_BOOL) {
        as_error_set("where: condition must be bool, got %s", as_dtype_name(cond->dtype));
        return NULL;
    }
    int64_t s1[AS_MAX_DIMS], shape[AS_MAX_DIMS];
    int n1 = as_broadcast_shape("where", a->ndim, a->shape, b->ndim, b->shape, s1);
    if (n1 < 0) return NULL;
    int nd = as_broadcast_shape("where", cond->ndim, cond->shape, n1, s1, shape);
    if (nd < 0) return NULL;
    as_dtype dt = as_dtype_promote(a->dtype, b->dtype);
    as_tensor *ca = as_to_dtype(a, dt), *cb = ca ? as_to_dtype(b, dt) : NULL;
    as_tensor *ea = cb ? as_expand(ca, nd, shape) : NULL, *eb = ea ? as_expand(cb, nd, shape) : NULL;
    as_tensor *ec = eb ? as_expand(cond, nd, shape) : NULL;
    as_tensor *out = ec ? as_empty(nd, shape, dt, as_tensor_device(a)) : NULL;
    if (out && as_k_where(out, ec, ea, eb)) {
        as_release(out);
        out = NULL;
    }
    as_ops_release4(ca, cb, ea, eb);
    as_release(ec);
    return out;
}
