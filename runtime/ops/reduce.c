/* Reductions over one dim or everything, softmax and norms.  The reduced dim
 * is moved last and made contiguous, so the kernels see plain rows. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "dispatch.h"
#include "ops_internal.h"

static const char *const redop_names[AS_NREDOPS] = {"sum", "mean", "max", "min", "argmax", "argmin", "var", "prod"};

/* t with dim moved last (a view), then contiguous in `dt`.  Sets rows and n. */
static as_tensor *rows_of(const as_tensor *t, int dim, as_dtype dt, int64_t *rows, int64_t *n)
{
    int perm[AS_MAX_DIMS], k = 0;
    for (int d = 0; d < t->ndim; d++)
        if (d != dim) perm[k++] = d;
    perm[k] = dim;
    as_tensor *p = as_permute(t, perm);
    as_tensor *c = p ? as_to_dtype(p, dt) : NULL;
    as_tensor *r = c ? as_contiguous(c) : NULL;
    as_release(p), as_release(c);
    *n = t->shape[dim];
    *rows = *n ? as_numel(t) / *n : 0;
    if (*n == 0) {
        *rows = 1;
        for (int d = 0; d < t->ndim; d++)
            if (d != dim) *rows *= t->shape[d];
    }
    return r;
}

static as_tensor *reduce_forward(as_redop op, const as_tensor *a, int dim, bool keepdim, int correction)
{
    const char *fn = op < AS_NREDOPS ? redop_names[op] : "reduce";
    if (as_ops_check_device(fn, 1, (const as_tensor *[]){a})) return NULL;
    int all = dim == AS_ALL_DIMS;
    as_tensor *src;
    if (all) {
        src = as_reshape(a, 1, (int64_t[]){as_numel(a)});
        dim = 0;
        keepdim = false;
    } else {
        if (a->ndim == 0) {
            if (dim != 0 && dim != -1) {
                as_error_set("%s: dimension %d out of range for a 0-d tensor", fn, dim >= 0 ? dim + 1 : dim);
                return NULL;
            }
            src = as_reshape(a, 1, (int64_t[]){1});
            dim = 0;
        } else {
            dim = as_wrap_dim(fn, dim, a->ndim);
            if (dim < 0) return NULL;
            src = as_retain((as_tensor *)a);
        }
    }
    if (!src) return NULL;
    int needs_values = op == AS_MAX || op == AS_MIN || op == AS_ARGMAX || op == AS_ARGMIN;
    if (needs_values && src->shape[dim] == 0) {
        as_error_set("%s: cannot reduce an empty tensor%s", fn, all ? "" : " along an empty dimension");
        as_release(src);
        return NULL;
    }
    /* output shape */
    int64_t shape[AS_MAX_DIMS];
    int nd = 0;
    if (!all) {
        for (int d = 0; d < a->ndim; d++) {
            if (d == dim) {
                if (keepdim) shape[nd++] = 1;
            } else {
                shape[nd++] = a->shape[d];
            }
        }
    }
    int integer = !as_dtype_is_float(a->dtype) && op != AS_MEAN && op != AS_VAR;
    as_dtype out_dt = op == AS_ARGMAX || op == AS_ARGMIN ? AS_I64
                    : integer ? ((op == AS_MAX || op == AS_MIN) ? a->dtype : AS_I64)
                    : as_dtype_is_float(a->dtype) ? a->dtype : AS_F32;
    int64_t rows, n;
    as_dtype wdt = as_ops_work_float(a->dtype);
    as_tensor *r = rows_of(src, dim, integer ? AS_I64 : wdt, &rows, &n);
    as_release(src);
    if (!r) return NULL;
    as_device dev = as_tensor_device(a);
    int arg = op == AS_ARGMAX || op == AS_ARGMIN;
    as_tensor *out = as_empty(nd, shape, integer || arg ? AS_I64 : wdt, dev);
    int rc = !out ? -1
           : integer ? as_k_reduce_rows_i64(dev, op, as_data(r), rows, n, as_data(out))
           : wdt == AS_F64 ? as_k_reduce_rows_f64(dev, op, as_data(r), rows, n, correction, arg ? NULL : as_data(out),
                                                  arg ? as_data(out) : NULL)
           : op == AS_ARGMAX || op == AS_ARGMIN ? as_k_reduce_rows(dev, op, as_data(r), rows, n, correction, NULL, as_data(out))
           : as_k_reduce_rows(dev, op, as_data(r), rows, n, correction, as_data(out), NULL);
    as_release(r);
    if (rc) {
        as_release(out);
        return NULL;
    }
    if (out->dtype != out_dt) {
        as_tensor *c = as_to_dtype(out, out_dt);
        as_release(out);
        out = c;
    }
    return out;
}

/* Applies a row kernel along dim: move it last, run, move it back. */
typedef int (*row_fn)(as_device dev, as_dtype dt, void *x, void *y, int64_t rows, int64_t n, const void *ctx);

/* y (consumed): rows of src as rows_of made them (dim last); back in src's
 * layout, as a's shape (0-d when a is) and dtype. */
static as_tensor *from_rows(as_tensor *y, const as_tensor *src, int dim, const as_tensor *a)
{
    int perm[AS_MAX_DIMS];
    for (int d = 0; d < src->ndim; d++) perm[d] = d < dim ? d : d == dim ? src->ndim - 1 : d - 1;
    as_tensor *back = as_permute(y, perm);
    as_release(y);
    as_tensor *out = back ? as_contiguous(back) : NULL;
    as_release(back);
    if (out && a->ndim == 0) {
        as_tensor *s = as_reshape(out, 0, NULL);
        as_release(out);
        out = s;
    }
    if (out && a->dtype != out->dtype) {
        as_tensor *c = as_to_dtype(out, a->dtype);
        as_release(out);
        out = c;
    }
    return out;
}

static as_tensor *along_dim(const char *fn, const as_tensor *a, int dim, row_fn f, const void *ctx)
{
    if (as_ops_check_device(fn, 1, (const as_tensor *[]){a}) || as_ops_check_float(fn, a)) return NULL;
    int nd = a->ndim ? a->ndim : 1;
    dim = as_wrap_dim(fn, dim, nd);
    if (dim < 0) return NULL;
    as_tensor *src = a->ndim ? as_retain((as_tensor *)a) : as_reshape(a, 1, (int64_t[]){1});
    if (!src) return NULL;
    int64_t rows, n;
    as_tensor *r = rows_of(src, dim, as_ops_work_float(a->dtype), &rows, &n);
    as_tensor *y = r ? as_empty_like(r) : NULL;
    if (y && n > 0 && f(as_tensor_device(y), y->dtype, as_data(r), as_data(y), rows, n, ctx)) {
        as_release(y);
        y = NULL;
    }
    as_release(r);
    as_tensor *out = y ? from_rows(y, src, dim, a) : NULL;
    as_release(src);
    return out;
}

static int softmax_fn(as_device dev, as_dtype dt, void *x, void *y, int64_t rows, int64_t n, const void *ctx)
{
    if (dt == AS_F64) return as_k_softmax_rows_f64(dev, x, y, rows, n, *(const int *)ctx);
    return as_k_softmax_rows(dev, x, y, rows, n, *(const int *)ctx);
}

static as_tensor *softmax_forward(const as_tensor *a, int dim)
{
    static const int no_log = 0;
    return along_dim("softmax", a, dim, softmax_fn, &no_log);
}

static as_tensor *log_softmax_forward(const as_tensor *a, int dim)
{
    static const int with_log = 1;
    return along_dim("log_softmax", a, dim, softmax_fn, &with_log);
}

/* ---- norms over the last dim ---- */

static int check_norm_param(const char *fn, const char *what, const as_tensor *p, int64_t n)
{
    if (!p) return 0;
    if (p->ndim != 1 || p->shape[0] != n) {
        char s[128];
        as_error_set("%s: %s of shape %s does not match the last dimension %lld", fn, what,
                     as_shape_str(s, sizeof s, p->ndim, p->shape), (long long)n);
        return -1;
    }
    return 0;
}

static as_tensor *norm(const char *fn, const as_tensor *x, const as_tensor *w, const as_tensor *b, double eps)
{
    const as_tensor *ts[3] = {x, w, b};
    if (as_ops_check_device(fn, 3, ts) || as_ops_check_float(fn, x)) return NULL;
    if (x->ndim == 0) {
        as_error_set("%s: expected at least 1 dimension, got a 0-d tensor", fn);
        return NULL;
    }
    int64_t n = x->shape[x->ndim - 1];
    if (check_norm_param(fn, "weight", w, n) || check_norm_param(fn, "bias", b, n)) return NULL;
    if (!(eps >= 0)) {
        as_error_set("%s: eps must be non-negative, got %g", fn, eps);
        return NULL;
    }
    int layer = b || strcmp(fn, "layer_norm") == 0;
    if ((x->dtype == AS_F16 || x->dtype == AS_BF16) && (!w || w->dtype == x->dtype) && (!b || b->dtype == x->dtype) &&
        as_k_has_norm_rows_16(as_tensor_device(x))) { /* 16-bit rows, no float32 copies */
        as_tensor *cx = as_contiguous(x);
        as_tensor *cw = cx && w ? as_contiguous(w) : NULL, *cb = cx && b ? as_contiguous(b) : NULL;
        as_tensor *y = cx && (!w || cw) && (!b || cb) ? as_empty_like(cx) : NULL;
        int rc = y ? 0 : -1;
        if (y && n > 0)
            rc = as_k_norm_rows_16(as_tensor_device(y), x->dtype, as_data(cx), as_data(y), as_numel(cx) / n, n,
                                   cw ? as_data(cw) : NULL, cb ? as_data(cb) : NULL, eps, !layer);
        as_ops_release4(cx, cw, cb, NULL);
        if (rc == 0) return y;
        as_release(y);
        return NULL;
    }
    as_dtype wdt = as_ops_work_float(x->dtype);
    as_tensor *cx = as_ops_contiguous_as(x, wdt);
    as_tensor *cw = cx && w ? as_ops_contiguous_as(w, wdt) : NULL;
    as_tensor *cb = cx && b ? as_ops_contiguous_as(b, wdt) : NULL;
    as_tensor *y = cx && (!w || cw) && (!b || cb) ? as_empty_like(cx) : NULL;
    if (y && n > 0) {
        int64_t rows = as_numel(cx) / n;
        as_device dev = as_tensor_device(y);
        void *pw = cw ? as_data(cw) : NULL, *pb = cb ? as_data(cb) : NULL;
        int rc = wdt == AS_F64 ? (layer ? as_k_layer_norm_rows_f64(dev, as_data(cx), as_data(y), rows, n, pw, pb, eps)
                                        : as_k_rms_norm_rows_f64(dev, as_data(cx), as_data(y), rows, n, pw, eps))
               : layer
                   ? as_k_layer_norm_rows(dev, as_data(cx), as_data(y), rows, n, cw ? as_data(cw) : NULL,
                                          cb ? as_data(cb) : NULL, eps)
                   : as_k_rms_norm_rows(dev, as_data(cx), as_data(y), rows, n, cw ? as_data(cw) : NULL, eps);
        if (rc) {
            as_release(y);
            y = NULL;
        }
    }
    as_ops_release4(cx, cw, cb, NULL);
    if (y && x->dtype != y->dtype) {
        as_tensor *c = as_to_dtype(y, x->dtype);
        as_release(y);
        y = c;
    }
    return y;
}

static as_tensor *layer_norm_forward(const as_tensor *x, const as_tensor *weight, const as_tensor *bias, double eps)
{
    return norm("layer_norm", x, weight, bias, eps);
}

static as_tensor *rms_norm_forward(const as_tensor *x, const as_tensor *weight, double eps)
{
    return norm("rms_norm", x, weight, NULL, eps);
}

/* ---- gradients ---- */

/* g (the reduced shape) back to a's shape: the reduced dim restored, then broadcast. */
static as_tensor *unreduce(as_tensor *g, int ndim, const int64_t *shape, int dim, bool keepdim, bool all)
{
    as_tensor *u = all ? as_reshape(g, ndim, (int64_t[AS_MAX_DIMS]){1, 1, 1, 1, 1, 1, 1, 1})
                       : keepdim || ndim == 0 ? g_ref(g) : as_unsqueeze(g, dim);
    as_tensor *e = u ? as_expand(u, ndim, shape) : NULL;
    as_release(u);
    return e;
}

static int reduce_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const double *p = as_node_scalars(n);
    as_redop op = (as_redop)(int)p[0];
    int ndim;
    const int64_t *shape;
    as_node_input_shape(n, 0, &ndim, &shape);
    int dim = (int)p[1];
    bool all = p[3] != 0;
    as_tensor *e = unreduce((as_tensor *)g, ndim, shape, dim, p[2] != 0, all);
    if (e && op == AS_MEAN) {
        int64_t count = 1;
        for (int d = 0; d < ndim; d++)
            if (all || d == dim) count *= shape[d];
        e = g_scal(AS_DIV, e, (double)(count ? count : 1));
    }
    gi[0] = e;
    return e ? 0 : -1;
}

/* The gradient of max/min/var/prod, which read the input (saved 0) and the
 * output (saved 1).  Worked on x as rows along d with g and out keeping the
 * reduced dim (a reduction over everything: x flattened, d = 0), then put
 * back in the input's shape:
 *   max/min over a dim: all of g to the index the forward picks (argmax);
 *   max/min over everything: g split evenly among the tied maxima (torch);
 *   var: g 2 (x - mean) / (N - correction);
 *   prod: g prod(others); with one zero in a slice only the zero gets the
 *   product of the rest, with several zeros nothing does (torch). */
static as_tensor *value_grad(as_redop op, bool all, int d, int correction, const as_tensor *x, const as_tensor *g,
                             const as_tensor *out)
{
    as_device dev = as_tensor_device(x);
    as_tensor *zero = as_scalar(0.0, x->dtype, dev), *one = as_scalar(1.0, x->dtype, dev);
    as_tensor *r = NULL;
    if (!zero || !one) goto done;
    switch (op) {
    case AS_MAX:
    case AS_MIN:
        if (all) { /* evenly among ties */
            as_tensor *mask = as_binary(AS_EQ, x, out);
            as_tensor *cnt = mask ? g_red(AS_SUM, g_to(g_ref(mask), x->dtype), d) : NULL;
            as_tensor *share = cnt ? g_bin(AS_DIV, g_ref(g), cnt) : NULL;
            r = share ? as_where(mask, share, zero) : NULL;
            as_release(mask), as_release(share);
        } else { /* to the index argmax/argmin picks */
            int64_t n = x->shape[d], shape[AS_MAX_DIMS];
            for (int k = 0; k < x->ndim; k++) shape[k] = k == d ? n : 1;
            as_tensor *idx = as_reduce(op == AS_MAX ? AS_ARGMAX : AS_ARGMIN, x, d, true, 0);
            as_tensor *ar = idx ? as_arange(0, (double)n, 1, AS_I64) : NULL;
            as_tensor *arv = ar ? as_reshape(ar, x->ndim, shape) : NULL;
            as_tensor *ard = arv ? as_to_device(arv, dev) : NULL;
            as_tensor *mask = ard ? as_binary(AS_EQ, ard, idx) : NULL;
            r = mask ? as_where(mask, g, zero) : NULL;
            as_ops_release4(idx, ar, arv, ard);
            as_release(mask);
        }
        break;
    case AS_VAR: {
        double dof = (double)(x->shape[d] - correction);
        as_tensor *xc = g_bin(AS_SUB, g_ref(x), as_reduce(AS_MEAN, x, d, true, 0));
        r = g_bin(AS_MUL, g_ref(g), g_scal(AS_MUL, xc, 2.0 / dof));
        break;
    }
    case AS_PROD: {
        as_tensor *z = as_binary_scalar(AS_EQ, x, 0, false);
        as_tensor *cnt = z ? g_red(AS_SUM, g_to(g_ref(z), x->dtype), d) : NULL;
        as_tensor *xnz = cnt ? as_where(z, one, x) : NULL;         /* zeros replaced by 1 */
        as_tensor *pnz = xnz ? as_reduce(AS_PROD, xnz, d, true, 0) : NULL; /* the product of the nonzeros */
        as_tensor *none = pnz ? as_binary_scalar(AS_EQ, cnt, 0, false) : NULL;
        as_tensor *single = none ? as_binary_scalar(AS_EQ, cnt, 1, false) : NULL;
        as_tensor *rest = single ? as_binary(AS_DIV, pnz, xnz) : NULL; /* no zero: prod / x */
        as_tensor *at0 = rest ? as_where(z, pnz, zero) : NULL;        /* one zero: the zero's slot */
        as_tensor *one0 = at0 ? as_where(single, at0, zero) : NULL;
        as_tensor *d_x = one0 ? as_where(none, rest, one0) : NULL;
        r = d_x ? g_bin(AS_MUL, g_ref(g), d_x) : NULL;
        as_ops_release4(z, cnt, xnz, pnz);
        as_ops_release4(none, single, rest, at0);
        as_release(one0);
        break;
    }
    default: as_error_set("backward: %s has no gradient", redop_names[op]); break;
    }
done:
    as_release(zero), as_release(one);
    return r;
}

static int reduce_value_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const double *p = as_node_scalars(n);
    as_redop op = (as_redop)(int)p[0];
    bool all = p[3] != 0;
    int d = (int)p[1];
    const as_tensor *x = as_node_saved(n, 0), *out = as_node_saved(n, 1);
    if (!x || !out) return -1;
    as_tensor *x1, *g1, *o1;
    if (all || x->ndim == 0) { /* as rows of one: everything flattened */
        all = true, d = 0;
        x1 = as_reshape(x, 1, (int64_t[]){as_numel(x)});
        g1 = as_reshape(g, 1, (int64_t[]){1});
        o1 = as_reshape(out, 1, (int64_t[]){1});
    } else {
        bool keep = p[2] != 0;
        x1 = as_retain((as_tensor *)x);
        g1 = keep ? g_ref(g) : as_unsqueeze(g, d);
        o1 = keep ? g_ref(out) : as_unsqueeze(out, d);
    }
    as_tensor *r = x1 && g1 && o1 ? value_grad(op, all, d, (int)as_node_ints(n)[0], x1, g1, o1) : NULL;
    as_release(x1), as_release(g1), as_release(o1);
    if (r && all) {
        gi[0] = as_reshape(r, x->ndim, x->shape);
        as_release(r);
    } else {
        gi[0] = r;
    }
    return gi[0] ? 0 : -1;
}

as_tensor *as_reduce(as_redop op, const as_tensor *a, int dim, bool keepdim, int correction)
{
    as_grad_scope s = as_grad_begin(op == AS_ARGMAX || op == AS_ARGMIN ? 0 : 1, &a); /* indices: no gradient */
    as_tensor *out = reduce_forward(op, a, dim, keepdim, correction);
    bool linear = op == AS_SUM || op == AS_MEAN;
    as_node *n = as_grad_end(s, op < AS_NREDOPS ? redop_names[op] : "reduce",
                             linear ? reduce_backward : reduce_value_backward, &out, 1, &a);
    if (!n) return out;
    double *p = as_node_scalars(n);
    bool all = dim == AS_ALL_DIMS;
    p[0] = op, p[1] = all ? 0 : (a->ndim ? as_wrap_dim("sum", dim, a->ndim) : 0), p[2] = keepdim, p[3] = all;
    if (!linear) {
        as_node_ints(n)[0] = correction;
        as_node_save(n, 0, a), as_node_save(n, 1, out);
    }
    return out;
}

/* The float32 row kernel's gradient (float16 and bfloat16 through float32):
 * one pass per row where the composite below makes four full-size tensors. */
static as_tensor *softmax_grad_rows(const as_tensor *y, const as_tensor *g, int dim, bool log)
{
    int64_t rows, n;
    as_tensor *yr = rows_of(y, dim, AS_F32, &rows, &n);
    as_tensor *gr = yr ? rows_of(g, dim, AS_F32, &rows, &n) : NULL;
    as_tensor *o = gr ? as_empty_like(gr) : NULL;
    if (o && n > 0 && as_k_softmax_bwd_rows(as_tensor_device(o), as_data(yr), as_data(gr), as_data(o), rows, n, log)) {
        as_release(o);
        o = NULL;
    }
    as_release(yr), as_release(gr);
    return o ? from_rows(o, y, dim, g) : NULL;
}

/* softmax: g_x = y (g - sum(g y)); log_softmax: g_x = g - exp(y) sum(g) (sums along dim) */
static int softmax_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *y = as_node_saved(n, 0);
    if (!y) return -1;
    int dim = (int)as_node_scalars(n)[0];
    if (y->ndim > 0 && as_ops_work_float(y->dtype) == AS_F32) {
        gi[0] = softmax_grad_rows(y, g, dim, as_node_scalars(n)[1] != 0);
        return gi[0] ? 0 : -1;
    }
    if (as_node_scalars(n)[1] != 0) {
        as_tensor *sg = as_reduce(AS_SUM, g, dim, true, 0);
        gi[0] = g_bin(AS_SUB, g_ref(g), g_bin(AS_MUL, g_un(AS_EXP, g_ref(y)), sg));
    } else {
        as_tensor *gy = g_red(AS_SUM, g_bin(AS_MUL, g_ref(g), g_ref(y)), dim);
        gi[0] = g_bin(AS_MUL, g_ref(y), g_bin(AS_SUB, g_ref(g), gy));
    }
    return gi[0] ? 0 : -1;
}

static as_tensor *softmax_recorded(const as_tensor *a, int dim, bool log)
{
    as_grad_scope s = as_grad_begin(1, &a);
    as_tensor *out = log ? log_softmax_forward(a, dim) : softmax_forward(a, dim);
    as_node *n = as_grad_end(s, log ? "log_softmax" : "softmax", softmax_backward, &out, 1, &a);
    if (!n) return out;
    as_node_scalars(n)[0] = as_wrap_dim("softmax", dim, a->ndim ? a->ndim : 1);
    as_node_scalars(n)[1] = log;
    as_node_save(n, 0, out);
    return out;
}

as_tensor *as_softmax(const as_tensor *a, int dim) { return softmax_recorded(a, dim, false); }
as_tensor *as_log_softmax(const as_tensor *a, int dim) { return softmax_recorded(a, dim, true); }

/* Over the last dim, r = 1/sigma (layer_norm: sigma^2 the variance of x;
 * rms_norm: the mean of x^2), xh = (x - mean) r or x r, dy = g w:
 *   layer_norm: g_x = r (dy - mean(dy) - xh mean(dy xh))
 *   rms_norm:   g_x = r (dy - xh mean(dy xh))
 * g_w = sum of g xh over the rows, g_b = sum of g. */
/* The float32 row kernel's gradients (float16 and bfloat16 through float32):
 * dx, and g xh for the weight (the engine sums it over the rows with one
 * product), in one pass where the composite below makes a dozen full-size
 * tensors. */
static int norm_grad_rows(as_node *n, const as_tensor *x, const as_tensor *w, const as_tensor *g, bool layer,
                          double eps, as_tensor **gi)
{
    int last = x->ndim - 1;
    bool want_x = as_node_needs(n, 0), want_w = w && as_node_needs(n, 1);
    int64_t rows, cols;
    as_tensor *xr = rows_of(x, last, AS_F32, &rows, &cols);
    as_tensor *gr = xr ? rows_of(g, last, AS_F32, &rows, &cols) : NULL;
    as_tensor *wf = w && gr ? as_to_dtype(w, AS_F32) : NULL;
    as_tensor *wr = wf ? as_contiguous(wf) : NULL;
    as_tensor *dx = gr && want_x ? as_empty_like(gr) : NULL;
    as_tensor *gxh = gr && want_w ? as_empty_like(gr) : NULL;
    int rc = !gr || (w && !wr) || (want_x && !dx) || (want_w && !gxh) ? -1 : 0;
    if (!rc && rows > 0 && cols > 0)
        rc = as_k_norm_bwd_rows(as_tensor_device(gr), as_data(xr), wr ? as_data(wr) : NULL, as_data(gr),
                                dx ? as_data(dx) : NULL, gxh ? as_data(gxh) : NULL, rows, cols, eps, !layer);
    if (!rc && dx && !(gi[0] = dx->dtype == x->dtype ? as_retain(dx) : as_to_dtype(dx, x->dtype))) rc = -1;
    if (!rc && gxh) gi[1] = as_retain(gxh); /* float32: summed, then cast to w's dtype by the engine */
    if (!rc && layer && as_node_needs(n, 2) && !(gi[2] = g_ref(g))) rc = -1;
    as_release(xr), as_release(gr), as_release(wf), as_release(wr), as_release(dx), as_release(gxh);
    return rc;
}

static int norm_backward(as_node *n, const as_tensor *g, as_tensor **gi)
{
    const double *p = as_node_scalars(n);
    bool layer = p[0] != 0;
    double eps = p[1];
    const as_tensor *x = as_node_saved(n, 0), *w = p[2] != 0 ? as_node_saved(n, 1) : NULL;
    if (!x || (p[2] != 0 && !w)) return -1;
    if (x->ndim > 0 && as_ops_work_float(x->dtype) == AS_F32) return norm_grad_rows(n, x, w, g, layer, eps, gi);
    as_tensor *xc = layer ? g_bin(AS_SUB, g_ref(x), as_reduce(AS_MEAN, x, -1, true, 0)) : g_ref(x);
    as_tensor *ms = xc ? g_red(AS_MEAN, g_bin(AS_MUL, g_ref(xc), g_ref(xc)), -1) : NULL;
    as_tensor *r = ms ? g_scal(AS_POW, g_scal(AS_ADD, ms, eps), -0.5) : NULL;
    as_tensor *xh = r ? g_bin(AS_MUL, g_ref(xc), g_ref(r)) : NULL;
    int rc = xh ? 0 : -1;
    if (!rc && as_node_needs(n, 0)) {
        as_tensor *dy = w ? g_bin(AS_MUL, g_ref(g), g_ref(w)) : g_ref(g);
        as_tensor *t = g_bin(AS_MUL, g_ref(xh), g_red(AS_MEAN, g_bin(AS_MUL, g_ref(dy), g_ref(xh)), -1));
        as_tensor *inner = layer ? g_bin(AS_SUB, g_bin(AS_SUB, g_ref(dy), as_reduce(AS_MEAN, dy, -1, true, 0)), t)
                                 : g_bin(AS_SUB, g_ref(dy), t);
        as_release(dy);
        if (!(gi[0] = g_bin(AS_MUL, inner, g_ref(r)))) rc = -1;
    }
    if (!rc && as_node_needs(n, 1) && !(gi[1] = g_bin(AS_MUL, g_ref(g), g_ref(xh)))) rc = -1;
    if (!rc && layer && as_node_needs(n, 2) && !(gi[2] = g_ref(g))) rc = -1;
    as_release(xc), as_release(r), as_release(xh);
    return rc;
}

static as_tensor *norm_recorded(const char *fn, const as_tensor *x, const as_tensor *w, const as_tensor *b,
                                double eps)
{
    bool layer = fn[0] == 'l';
    const as_tensor *in[3] = {x, w, b};
    as_grad_scope s = as_grad_begin(3, in);
    as_tensor *out = layer ? layer_norm_forward(x, w, b, eps) : rms_norm_forward(x, w, eps);
    as_node *n = as_grad_end(s, fn, norm_backward, &out, layer ? 3 : 2, in);
    if (!n) return out;
    double *p = as_node_scalars(n);
    p[0] = layer, p[1] = eps, p[2] = w != NULL;
    as_node_save(n, 0, x);
    if (w) as_node_save(n, 1, w);
    return out;
}

as_tensor *as_layer_norm(const as_tensor *x, const as_tensor *weight, const as_tensor *bias, double eps)
{
    return norm_recorded("layer_norm", x, weight, bias, eps);
}

as_tensor *as_rms_norm(const as_tensor *x, const as_tensor *weight, double eps)
{
    return norm_recorded("rms_norm", x, weight, NULL, eps);
}
