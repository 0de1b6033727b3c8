/* Elementwise ops: broadcasting, type promotion, dispatch. */
#include <math.h>
#include <stdio.h>

#include "attnswap/autograd.h"
#include "dispatch.h"
#include "ops_internal.h"

static const char *const binop_names[AS_NBINOPS] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "gelu_grad", "gelu_tanh_grad", "silu_grad", "eq", "ne", "lt", "le", "gt", "ge",
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

as_tensor *as_ops_f32_contiguous(const as_tensor *t) { return as_ops_contiguous_as(t, AS_F32); }

as_tensor *as_ops_contiguous_as(const as_tensor *t, as_dtype dt)
{
    as_tensor *f = as_to_dtype(t, dt);
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
 * float32 and rounding once, so both give the same numbers.  float64 stays
 * float64 (CPU only). */
static as_dtype compute_dtype(as_dtype dt, as_device dev)
{
    if (as_dtype_is_float(dt)) return dev.type == AS_DEV_CUDA ? dt : as_ops_work_float(dt);
    return dt == AS_BOOL ? AS_I64 : dt;
}

static as_tensor *binary_forward(as_binop op, const as_tensor *a, const as_tensor *b)
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

/* d(a op b): g times the partial derivatives (the engine sums broadcast
 * gradients back to each input's shape).  Saved: a (0), b (1), out (2). */
static int binary_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    as_binop op = (as_binop)(int)as_node_scalars(n)[0];
    bool na = as_node_needs(n, 0), nb = as_node_needs(n, 1);
    /* only what the needed gradients read was saved (a tensor updated in place
     * afterwards, as x *= 2 does, is then no obstacle) */
    const as_tensor *a = NULL, *b = NULL, *out = NULL;
    if (op != AS_ADD && op != AS_SUB) {
        bool want_a = op == AS_MUL ? nb : op != AS_DIV, want_b = op == AS_MUL ? na : true;
        if ((want_a && !(a = as_node_saved(n, 0))) || (want_b && !(b = as_node_saved(n, 1)))) return -1;
        if ((op == AS_DIV || op == AS_POW) && nb && !(out = as_node_saved(n, 2))) return -1;
    }
    switch (op) {
    case AS_ADD: gi[0] = g_ref(g), gi[1] = g_ref(g); break;
    case AS_SUB: gi[0] = g_ref(g), gi[1] = nb ? g_un(AS_NEG, g_ref(g)) : NULL; break;
    case AS_MUL:
        if (na) gi[0] = g_bin(AS_MUL, g_ref(g), g_ref(b));
        if (nb) gi[1] = g_bin(AS_MUL, g_ref(g), g_ref(a));
        break;
    case AS_DIV: /* d/da = 1/b, d/db = -a/b^2 = -out/b */
        if (na) gi[0] = g_bin(AS_DIV, g_ref(g), g_ref(b));
        if (nb) gi[1] = g_un(AS_NEG, g_bin(AS_DIV, g_bin(AS_MUL, g_ref(g), g_ref(out)), g_ref(b)));
        break;
    case AS_POW: /* d/da = b a^(b-1), d/db = out log(a) */
        if (na) gi[0] = g_bin(AS_MUL, g_ref(g), g_bin(AS_MUL, g_ref(b), g_bin(AS_POW, g_ref(a), g_scal(AS_SUB, g_ref(b), 1))));
        if (nb) gi[1] = g_bin(AS_MUL, g_ref(g), g_bin(AS_MUL, g_ref(out), g_un(AS_LOG, g_ref(a))));
        break;
    case AS_MAXIMUM:
    case AS_MINIMUM: { /* the winner takes the gradient; a tie splits it, as torch does */
        as_tensor *win = g_to(g_bin(op == AS_MAXIMUM ? AS_GT : AS_LT, g_ref(a), g_ref(b)), g->dtype);
        as_tensor *tie = g_to(g_bin(AS_EQ, g_ref(a), g_ref(b)), g->dtype);
        as_tensor *wa = win && tie ? g_bin(AS_ADD, g_ref(win), g_scal(AS_MUL, g_ref(tie), 0.5)) : NULL;
        as_release(win), as_release(tie);
        if (na) gi[0] = wa ? g_bin(AS_MUL, g_ref(g), g_ref(wa)) : NULL;
        if (nb) gi[1] = wa ? g_bin(AS_MUL, g_ref(g), g_scal(AS_SUB, g_un(AS_NEG, g_ref(wa)), -1)) : NULL;
        as_release(wa);
        break;
    }
    case AS_GELU_GRAD:
    case AS_GELU_TANH_GRAD:
    case AS_SILU_GRAD: /* only backward formulas call them, with gradients off */
        as_error_set("backward: %s has no backward (no second derivatives)", as_binop_name(op));
        return -1;
    default: return 0; /* comparisons: no gradient */
    }
    return (!na || gi[0]) && (!nb || gi[1]) ? 0 : -1;
}

as_tensor *as_binary(as_binop op, const as_tensor *a, const as_tensor *b)
{
    const as_tensor *in[2] = {a, b};
    as_grad_scope s = as_grad_begin(op < AS_EQ ? 2 : 0, in); /* comparisons: no gradient */
    as_tensor *out = binary_forward(op, a, b);
    as_node *n = as_grad_end(s, as_binop_name(op), binary_backward, &out, 2, in);
    if (!n) return out;
    as_node_scalars(n)[0] = op;
    bool na = as_requires_grad(a), nb = as_requires_grad(b);
    if ((op == AS_MUL && nb) || op == AS_POW || op == AS_MAXIMUM || op == AS_MINIMUM) as_node_save(n, 0, a);
    if ((op == AS_MUL && na) || op == AS_DIV || op == AS_POW || op == AS_MAXIMUM || op == AS_MINIMUM)
        as_node_save(n, 1, b);
    if ((op == AS_DIV || op == AS_POW) && nb) as_node_save(n, 2, out);
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
    const as_tensor *in[2] = {dst, src};
    if (op < AS_EQ && as_autograd_needed(2, in)) {
        /* recorded out of place, then written back: dst takes the result's node */
        if (as_requires_grad(dst) && as_is_leaf(dst)) {
            as_error_set("%s_: a leaf tensor that requires grad is used in an in-place operation "
                         "(compute out of place, or update it under no_grad)", as_binop_name(op));
            return -1;
        }
        as_tensor *r = as_binary(op, dst, src);
        bool prev = as_set_grad_enabled(false);
        int rc = r ? as_copy_(dst, r) : -1;
        as_set_grad_enabled(prev);
        if (!rc) as_autograd_rebase(dst, r);
        as_release(r);
        return rc;
    }
    if (in_place_ok(op, dst, src)) { /* nn.Linear's bias, residual adds: no temporary */
        as_bump_version(dst);
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

/* copy_ as a user calls it.  With a gradient in play it is recorded as
 * PyTorch records it: dst's history becomes src's (converted and broadcast
 * to dst), and dst's old values get none.  A write into a tensor whose
 * storage another tensor shares (a view, or a view's base) is refused when
 * src needs a gradient: the other tensor's history would not learn of it,
 * and its gradient would be silently wrong. */
int as_copy_tracked_(as_tensor *dst, const as_tensor *src)
{
    const as_tensor *in[2] = {dst, src};
    if (!as_autograd_needed(2, in)) return as_copy_(dst, src);
    if (as_requires_grad(dst) && as_is_leaf(dst)) {
        as_error_set("copy_: a leaf tensor that requires grad is used in an in-place operation "
                     "(copy under no_grad, or copy into a tensor that does not require grad)");
        return -1;
    }
    if (as_requires_grad(src) && dst->storage->refcount > 1) {
        as_error_set("copy_: the destination shares its storage with another tensor (a view, or "
                     "its base), whose gradient would miss this copy; build the result out of "
                     "place (cat, stack, where) instead of writing into a view");
        return -1;
    }
    bool prev = as_set_grad_enabled(false);
    int rc = as_copy_(dst, src); /* checks the shapes too */
    as_set_grad_enabled(prev);
    if (rc) return rc;
    /* the history: src converted and broadcast as the copy did (a second
     * conversion only when dtype or device differ) */
    as_tensor *d = as_to_device(src, as_tensor_device(dst));
    as_tensor *c = d ? as_to_dtype(d, dst->dtype) : NULL;
    as_tensor *e = c ? as_expand(c, dst->ndim, dst->shape) : NULL;
    if (e) as_autograd_rebase(dst, e);
    else rc = -1;
    as_release(d), as_release(c), as_release(e);
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

static as_tensor *unary_forward(as_unop op, const as_tensor *a)
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

/* g times f'(a), from a (saved 0) and out = f(a) (saved 1). */
static int unary_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    as_unop op = (as_unop)(int)as_node_scalars(n)[0];
    const as_tensor *a = as_node_saved(n, 0), *y = as_node_saved(n, 1);
    if (!a || !y) return -1;
    as_tensor *d = NULL; /* f'(a) */
    switch (op) {
    case AS_NEG: gi[0] = g_un(AS_NEG, g_ref(g)); return gi[0] ? 0 : -1;
    case AS_ABS: /* sign(a), 0 at 0 */
        d = g_bin(AS_SUB, g_to(g_bin(AS_GT, g_ref(a), g_scal(AS_MUL, g_ref(a), 0)), g->dtype),
                  g_to(g_bin(AS_LT, g_ref(a), g_scal(AS_MUL, g_ref(a), 0)), g->dtype));
        break;
    case AS_EXP: d = g_ref(y); break;
    case AS_LOG: d = g_scal(AS_POW, g_ref(a), -1); break;
    case AS_SQRT: d = g_scal(AS_MUL, g_scal(AS_POW, g_ref(y), -1), 0.5); break;
    case AS_RSQRT: d = g_scal(AS_MUL, g_scal(AS_POW, g_ref(y), 3), -0.5); break;
    case AS_TANH: d = g_scal(AS_SUB, g_un(AS_NEG, g_bin(AS_MUL, g_ref(y), g_ref(y))), -1); break;
    case AS_SIGMOID: d = g_bin(AS_MUL, g_ref(y), g_scal(AS_SUB, g_un(AS_NEG, g_ref(y)), -1)); break;
    case AS_RELU: d = g_to(g_bin(AS_GT, g_ref(a), g_scal(AS_MUL, g_ref(a), 0)), g->dtype); break;
    /* one pass each (as_grad_math.h): the composites took 6-12 ops, each a
     * full-size temporary (GELU's backward was 16x its forward on a GPU) */
    case AS_SILU: gi[0] = g_bin(AS_SILU_GRAD, g_ref(a), g_ref(g)); return gi[0] ? 0 : -1;
    case AS_GELU: gi[0] = g_bin(AS_GELU_GRAD, g_ref(a), g_ref(g)); return gi[0] ? 0 : -1;
    case AS_GELU_TANH: gi[0] = g_bin(AS_GELU_TANH_GRAD, g_ref(a), g_ref(g)); return gi[0] ? 0 : -1;
    case AS_SIN: d = g_un(AS_COS, g_ref(a)); break;
    case AS_COS: d = g_un(AS_NEG, g_un(AS_SIN, g_ref(a))); break;
    default: return 0; /* logical_not: no gradient */
    }
    gi[0] = d ? g_bin(AS_MUL, g_ref(g), d) : NULL;
    return gi[0] ? 0 : -1;
}

as_tensor *as_unary(as_unop op, const as_tensor *a)
{
    as_grad_scope s = as_grad_begin(op != AS_LOGICAL_NOT, &a);
    as_tensor *out = unary_forward(op, a);
    as_node *n = as_grad_end(s, as_unop_name(op), unary_backward, &out, 1, &a);
    if (!n) return out;
    as_node_scalars(n)[0] = op;
    as_node_save(n, 0, a), as_node_save(n, 1, out);
    return out;
}

static as_tensor *clamp_forward(const as_tensor *a, double lo, double hi)
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

static as_tensor *where_forward(const as_tensor *cond, const as_tensor *a, const as_tensor *b)
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

/* clamp: the gradient passes where a lies inside [lo, hi] (NaN bounds: open). */
static int clamp_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *a = as_node_saved(n, 0);
    if (!a) return -1;
    double lo = as_node_scalars(n)[0], hi = as_node_scalars(n)[1];
    as_tensor *keep = g_ref(g);
    if (!isnan(lo)) keep = g_bin(AS_MUL, keep, g_to(as_binary_scalar(AS_GE, a, lo, false), g->dtype));
    if (!isnan(hi)) keep = g_bin(AS_MUL, keep, g_to(as_binary_scalar(AS_LE, a, hi, false), g->dtype));
    gi[0] = keep;
    return keep ? 0 : -1;
}

as_tensor *as_clamp(const as_tensor *a, double lo, double hi)
{
    as_grad_scope s = as_grad_begin(1, &a);
    as_tensor *out = clamp_forward(a, lo, hi);
    as_node *n = as_grad_end(s, "clamp", clamp_backward, &out, 1, &a);
    if (!n) return out;
    as_node_scalars(n)[0] = lo, as_node_scalars(n)[1] = hi;
    as_node_save(n, 0, a);
    return out;
}

/* where: the gradient goes to a where cond holds, to b elsewhere. */
static int where_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *cond = as_node_saved(n, 0);
    if (!cond) return -1;
    as_tensor *zero = as_zeros(0, NULL, g->dtype, as_tensor_device(g));
    if (!zero) return -1;
    if (as_node_needs(n, 1)) gi[1] = as_where(cond, g, zero);
    if (as_node_needs(n, 2)) gi[2] = as_where(cond, zero, g);
    as_release(zero);
    return (!as_node_needs(n, 1) || gi[1]) && (!as_node_needs(n, 2) || gi[2]) ? 0 : -1;
}

as_tensor *as_where(const as_tensor *cond, const as_tensor *a, const as_tensor *b)
{
    const as_tensor *in[3] = {cond, a, b};
    as_grad_scope s = as_grad_begin(3, in);
    as_tensor *out = where_forward(cond, a, b);
    as_node *n = as_grad_end(s, "where", where_backward, &out, 3, in);
    if (n) as_node_save(n, 0, cond);
    return out;
}

/* masked_fill: value where mask holds, a elsewhere (a's dtype and shape; mask
 * broadcasts to a).  A composite of where, so its gradient is where's: g
 * where mask is false, nothing where it was filled. */
as_tensor *as_masked_fill(const as_tensor *a, const as_tensor *mask, double value)
{
    const as_tensor *ts[2] = {a, mask};
    if (as_ops_check_device("masked_fill", 2, ts)) return NULL;
    if (mask->dtype != AS_BOOL) {
        as_error_set("masked_fill: mask must be bool, got %s", as_dtype_name(mask->dtype));
        return NULL;
    }
    int64_t shape[AS_MAX_DIMS];
    int nd = as_broadcast_shape("masked_fill", a->ndim, a->shape, mask->ndim, mask->shape, shape);
    if (nd < 0) return NULL;
    bool fits = nd == a->ndim;
    for (int d = 0; fits && d < nd; d++) fits = shape[d] == a->shape[d];
    if (!fits) {
        char s1[128], s2[128];
        as_error_set("masked_fill: mask of shape %s does not broadcast to the tensor's shape %s",
                     as_shape_str(s1, sizeof s1, mask->ndim, mask->shape), as_shape_str(s2, sizeof s2, a->ndim, a->shape));
        return NULL;
    }
    as_tensor *v = as_scalar(value, a->dtype, as_tensor_device(a));
    as_tensor *out = v ? as_where(mask, v, a) : NULL;
    as_release(v);
    return out;
}
