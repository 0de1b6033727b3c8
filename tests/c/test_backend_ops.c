/* Every op x backend x {forward, gradient}, in the style of ggml's
 * test-backend-ops: a table of ops, each run on random shapes of four kinds
 * (odd sizes, non-contiguous, broadcast, empty):
 *   forward: float64 on the CPU is the reference; float32 on the CPU, and on
 *            CUDA when a device is visible (skipped otherwise), must match it;
 *   gradient: in float64 on the CPU, the backward of sum(op(x) * w) against
 *            central differences (eps 1e-6; |a - n| <= 1e-5 + 1e-3 |n|).
 * Adding an op is one line in the table below. */
#include <string.h>

#include "as_test.h"
#include "attnswap/attention.h"
#include "attnswap/autograd.h"
#include "attnswap/cuda.h"
#include "attnswap/ops.h"

#define MAX_IN 3
#define CUDA0 ((as_device){AS_DEV_CUDA, 0})

typedef enum { PLAIN, NONCONTIG, BROADCAST, EMPTY, NKINDS } shape_kind;
static const char *const kind_names[NKINDS] = {"odd", "non-contiguous", "broadcast", "empty"};

/* How an op's inputs are shaped. */
typedef enum { UNARY, BINARY, ROWS, MATMUL, NORM, CAT, INDEX, ATTN } op_family;

typedef struct op_case op_case;
struct op_case {
    const char *name;
    op_family family;
    int code;     /* as_binop / as_unop / as_redop, or a variant */
    bool positive; /* inputs in [0.5, 2.5) (log, sqrt, a pow base) */
    bool grad;     /* has a backward */
    as_tensor *(*fn)(const op_case *c, as_tensor *const *x);
};

/* ---- the ops (each returns a new reference) ---- */

static as_tensor *f_binary(const op_case *c, as_tensor *const *x) { return as_binary(c->code, x[0], x[1]); }
static as_tensor *f_pow(const op_case *c, as_tensor *const *x) { (void)c; return as_binary(AS_POW, x[0], x[1]); }
static as_tensor *f_unary(const op_case *c, as_tensor *const *x) { return as_unary(c->code, x[0]); }
static as_tensor *f_clamp(const op_case *c, as_tensor *const *x) { (void)c; return as_clamp(x[0], -0.5, 0.5); }
static as_tensor *f_where(const op_case *c, as_tensor *const *x)
{
    (void)c;
    as_tensor *cond = as_binary_scalar(AS_GT, x[0], 0.0, false);
    as_tensor *r = cond ? as_where(cond, x[0], x[1]) : NULL;
    as_release(cond);
    return r;
}
static as_tensor *f_reduce(const op_case *c, as_tensor *const *x) { return as_reduce(c->code, x[0], 1, false, 1); }
static as_tensor *f_sum_all(const op_case *c, as_tensor *const *x)
{
    (void)c;
    return as_reduce(AS_SUM, x[0], AS_ALL_DIMS, false, 0);
}
static as_tensor *f_softmax(const op_case *c, as_tensor *const *x)
{
    return c->code ? as_log_softmax(x[0], -1) : as_softmax(x[0], 1);
}
static as_tensor *f_layer_norm(const op_case *c, as_tensor *const *x)
{
    (void)c;
    return as_layer_norm(x[0], x[1], x[2], 1e-5);
}
static as_tensor *f_rms_norm(const op_case *c, as_tensor *const *x) { (void)c; return as_rms_norm(x[0], x[1], 1e-6); }
static as_tensor *f_matmul(const op_case *c, as_tensor *const *x) { (void)c; return as_matmul(x[0], x[1]); }
static as_tensor *f_linear(const op_case *c, as_tensor *const *x)
{
    (void)c;
    as_tensor *wt = as_transpose(x[1], -2, -1); /* (k, n) drawn, (n, k) is linear's */
    as_tensor *r = wt ? as_linear(x[0], wt, NULL) : NULL;
    as_release(wt);
    return r;
}
static as_tensor *f_cat(const op_case *c, as_tensor *const *x)
{
    (void)c;
    return as_cat(2, (const as_tensor *const *)x, -1);
}
static as_tensor *f_triangle(const op_case *c, as_tensor *const *x)
{
    return c->code ? as_tril(x[0], 1) : as_triu(x[0], -1);
}
static as_tensor *f_index(const op_case *c, as_tensor *const *x)
{
    int64_t n = 4, ids[4] = {2, 0, 2, 1}; /* 0-based, a row twice */
    as_tensor *h = as_empty(1, &n, AS_I64, AS_CPU);
    if (!h) return NULL;
    memcpy(as_data(h), ids, sizeof ids);
    as_tensor *idx = as_to_device(h, as_tensor_device(x[0]));
    as_release(h);
    if (!idx) return NULL;
    as_tensor *r = c->code ? as_embedding(x[0], idx) : as_index_select(x[0], -1, idx);
    as_release(idx);
    return r;
}
static as_tensor *f_sdpa(const op_case *c, as_tensor *const *x)
{
    as_attention_opts o = {.scale = NAN, .causal = c->code != 0};
    return as_sdpa(x[0], x[1], x[2], NULL, &o, AS_SDP_AUTO, false);
}

static const op_case cases[] = {
    {"add", BINARY, AS_ADD, false, true, f_binary},
    {"sub", BINARY, AS_SUB, false, true, f_binary},
    {"mul", BINARY, AS_MUL, false, true, f_binary},
    {"div", BINARY, AS_DIV, true, true, f_binary},
    {"pow", BINARY, AS_POW, true, true, f_pow},
    {"maximum", BINARY, AS_MAXIMUM, false, true, f_binary},
    {"minimum", BINARY, AS_MINIMUM, false, true, f_binary},
    {"where", BINARY, 0, false, true, f_where},
    {"neg", UNARY, AS_NEG, false, true, f_unary},
    {"abs", UNARY, AS_ABS, false, true, f_unary},
    {"exp", UNARY, AS_EXP, false, true, f_unary},
    {"log", UNARY, AS_LOG, true, true, f_unary},
    {"sqrt", UNARY, AS_SQRT, true, true, f_unary},
    {"rsqrt", UNARY, AS_RSQRT, true, true, f_unary},
    {"tanh", UNARY, AS_TANH, false, true, f_unary},
    {"sigmoid", UNARY, AS_SIGMOID, false, true, f_unary},
    {"relu", UNARY, AS_RELU, false, true, f_unary},
    {"gelu", UNARY, AS_GELU, false, true, f_unary},
    {"gelu_tanh", UNARY, AS_GELU_TANH, false, true, f_unary},
    {"silu", UNARY, AS_SILU, false, true, f_unary},
    {"sin", UNARY, AS_SIN, false, true, f_unary},
    {"cos", UNARY, AS_COS, false, true, f_unary},
    {"clamp", UNARY, 0, false, true, f_clamp},
    {"tril", UNARY, 1, false, false, f_triangle},
    {"triu", UNARY, 0, false, false, f_triangle},
    {"sum(dim)", ROWS, AS_SUM, false, true, f_reduce},
    {"mean(dim)", ROWS, AS_MEAN, false, true, f_reduce},
    {"var(dim)", ROWS, AS_VAR, false, false, f_reduce},
    {"prod(dim)", ROWS, AS_PROD, false, false, f_reduce},
    {"max(dim)", ROWS, AS_MAX, false, false, f_reduce},
    {"sum", ROWS, 0, false, true, f_sum_all},
    {"softmax", ROWS, 0, false, true, f_softmax},
    {"log_softmax", ROWS, 1, false, true, f_softmax},
    {"layer_norm", NORM, 0, false, true, f_layer_norm},
    {"rms_norm", NORM, 0, false, true, f_rms_norm},
    {"matmul", MATMUL, 0, false, true, f_matmul},
    {"linear", MATMUL, 0, false, true, f_linear},
    {"cat", CAT, 0, false, true, f_cat},
    {"index_select", INDEX, 0, false, true, f_index},
    {"embedding", INDEX, 1, false, true, f_index},
    {"sdpa", ATTN, 0, false, true, f_sdpa},
    {"sdpa causal", ATTN, 1, false, true, f_sdpa},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* ---- shapes ---- */

typedef struct {
    int n, nd[MAX_IN];
    int64_t shape[MAX_IN][AS_MAX_DIMS];
} shapes;

static int64_t odd(void) { return 2 * as_test_randint(1, 3) + 1; } /* 3, 5, 7 */

static void set(shapes *s, int i, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t v[4] = {a, b, c, d};
    s->nd[i] = nd;
    for (int k = 0; k < nd; k++) s->shape[i][k] = v[k];
    if (i + 1 > s->n) s->n = i + 1;
}

static shapes make_shapes(const op_case *oc, shape_kind kind)
{
    op_family f = oc->family;
    shapes s = {0};
    int64_t a = odd(), b = odd(), c = odd(), e = kind == EMPTY ? 0 : a;
    switch (f) {
    case UNARY:
        if (kind == BROADCAST) set(&s, 0, 3, 2, a, b, 0); /* nothing to broadcast: a 3-d one */
        else set(&s, 0, 2, e, b, 0, 0);
        break;
    case BINARY:
        if (kind == BROADCAST) set(&s, 0, 3, a, 1, b, 0), set(&s, 1, 2, c, b, 0, 0);
        else if (kind == EMPTY) set(&s, 0, 2, 0, b, 0, 0), set(&s, 1, 1, b, 0, 0, 0);
        else set(&s, 0, 2, a, b, 0, 0), set(&s, 1, 2, a, b, 0, 0);
        break;
    case ROWS: set(&s, 0, 3, kind == EMPTY ? 0 : 2, a, b, 0); break;
    case NORM: /* x (..., b), weight (b), bias (b) */
        if (kind == BROADCAST) set(&s, 0, 3, 2, a, b, 0);
        else set(&s, 0, 2, e, b, 0, 0);
        set(&s, 1, 1, b, 0, 0, 0), set(&s, 2, 1, b, 0, 0, 0);
        break;
    case MATMUL:
        if (kind == BROADCAST) set(&s, 0, 3, 2, a, b, 0), set(&s, 1, 2, b, c, 0, 0);
        else set(&s, 0, 2, a, kind == EMPTY ? 0 : b, 0, 0), set(&s, 1, 2, kind == EMPTY ? 0 : b, c, 0, 0);
        break;
    case CAT: set(&s, 0, 2, e, b, 0, 0), set(&s, 1, 2, e, c, 0, 0); break;
    case INDEX: /* empty: no rows to select from (index_select), rows of 0 (embedding) */
        if (kind == EMPTY) set(&s, 0, 2, oc->code ? a : 0, oc->code ? 0 : b, 0, 0);
        else set(&s, 0, 2, a, b, 0, 0);
        break;
    case ATTN: /* (B, H, L, D); broadcast: one k/v head for two q heads (GQA) */
        set(&s, 0, 4, 1, 2, a, 4), set(&s, 1, 4, 1, kind == BROADCAST ? 1 : 2, kind == EMPTY ? 0 : b, 4),
            set(&s, 2, 4, 1, kind == BROADCAST ? 1 : 2, kind == EMPTY ? 0 : b, 3);
        break;
    }
    return s;
}

/* Random float64 contents of shape (transposed storage when noncontig): the
 * base, and the view an op sees.  positive: in [0.5, 2.5). */
static as_tensor *make_base(int nd, const int64_t *shape, bool noncontig, bool positive)
{
    int64_t bs[AS_MAX_DIMS];
    memcpy(bs, shape, sizeof(int64_t) * (size_t)nd);
    if (noncontig && nd >= 2) bs[nd - 1] = shape[nd - 2], bs[nd - 2] = shape[nd - 1];
    as_tensor *t = as_empty(nd, bs, AS_F64, AS_CPU);
    double *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++)
        p[i] = positive ? 1.5 + as_test_randf() : 2.0 * as_test_randf();
    return t;
}

static as_tensor *view_of(as_tensor *base, bool noncontig)
{
    as_tensor *v = noncontig && base->ndim >= 2 ? as_transpose(base, -2, -1) : as_alias(base);
    if (v) as_requires_grad_(v, true);
    return v;
}

/* ---- checks ---- */

/* max |a - b| / (1 + max |b|); both must have b's shape. */
static double rel_diff(const as_tensor *a, const as_tensor *b)
{
    if (a->ndim != b->ndim || as_numel(a) != as_numel(b)) return INFINITY;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return INFINITY;
    double m = 0, s = 0;
    for (int64_t i = 0, n = as_numel(b); i < n; i++) {
        double x = as_get_flat(a, i), y = as_get_flat(b, i);
        m = fmax(m, fabs(x - y)), s = fmax(s, fabs(y));
        if (isnan(x) != isnan(y)) return INFINITY;
    }
    return m / (1 + s);
}

/* sum(op(x) * w), in double, no gradient recorded. */
static double loss(const op_case *c, as_tensor *const *x, const as_tensor *w)
{
    bool prev = as_set_grad_enabled(false);
    as_tensor *y = c->fn(c, x);
    as_set_grad_enabled(prev);
    double s = 0;
    for (int64_t i = 0, n = y ? as_numel(y) : 0; i < n; i++) s += as_get_flat(y, i) * as_get_flat(w, i);
    as_release(y);
    return s;
}

/* The element at flat (row-major) index i of a float64 view, for writing. */
static double *elem(const as_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return (double *)as_data(t) + off;
}

/* Analytical gradients of sum(y * w) against central differences; returns the failures. */
static int check_grad(const op_case *c, as_tensor *const *x, int n, as_tensor *y)
{
    as_tensor *w = as_empty(y->ndim, y->shape, AS_F64, AS_CPU);
    double *pw = as_data(w);
    for (int64_t i = 0, m = as_numel(w); i < m; i++) pw[i] = as_test_randf();
    int bad = 0;
    if (as_backward(y, w, false)) {
        fprintf(stderr, "%s: backward failed: %s\n", c->name, as_error_get());
        as_release(w);
        return 1;
    }
    for (int k = 0; k < n; k++) {
        as_tensor *g = as_grad(x[k]);
        for (int64_t i = 0, m = as_numel(x[k]); i < m; i++) {
            double *p = elem(x[k], i), v = *p, eps = 1e-6;
            *p = v + eps;
            double up = loss(c, x, w);
            *p = v - eps;
            double down = loss(c, x, w);
            *p = v;
            double num = (up - down) / (2 * eps), ana = g ? as_get_flat(g, i) : 0;
            if (!(fabs(ana - num) <= 1e-5 + 1e-3 * fabs(num))) {
                if (!bad) fprintf(stderr, "%s: input %d element %lld: analytical %.10g, numerical %.10g\n", c->name,
                                  k, (long long)i, ana, num);
                bad++;
            }
        }
    }
    as_release(w);
    return bad;
}

static void release_all(as_tensor **t, int n)
{
    for (int i = 0; i < n; i++) as_release(t[i]), t[i] = NULL;
}

int main(void)
{
    bool cuda = as_cuda_built() && as_cuda_device_count() > 0;
    if (!cuda) printf("CUDA: no device, the CUDA column is skipped\n");
    for (int ci = 0; ci < NCASES; ci++) {
        const op_case *c = &cases[ci];
        int fwd_bad = 0, f32_bad = 0, cuda_bad = 0, grad_bad = 0;
        for (int kind = 0; kind < NKINDS; kind++) {
            shapes s = make_shapes(c, (shape_kind)kind);
            bool nc = kind == NONCONTIG;
            as_tensor *base[MAX_IN] = {0}, *x64[MAX_IN] = {0}, *b32[MAX_IN] = {0}, *x32[MAX_IN] = {0};
            as_tensor *bg[MAX_IN] = {0}, *xg[MAX_IN] = {0};
            for (int i = 0; i < s.n; i++) {
                /* div: only the divisor needs keeping from 0 */
                bool p = c->positive && !(c->family == BINARY && c->code == AS_DIV && i == 0);
                base[i] = make_base(s.nd[i], s.shape[i], nc, p);
                x64[i] = view_of(base[i], nc);
                bool prev = as_set_grad_enabled(false);
                b32[i] = as_to_dtype(base[i], AS_F32);
                x32[i] = nc && s.nd[i] >= 2 ? as_transpose(b32[i], -2, -1) : as_alias(b32[i]);
                if (cuda) {
                    bg[i] = as_to_device(b32[i], CUDA0);
                    xg[i] = nc && s.nd[i] >= 2 ? as_transpose(bg[i], -2, -1) : as_alias(bg[i]);
                }
                as_set_grad_enabled(prev);
            }
            as_tensor *y64 = c->fn(c, x64);
            CHECK_OK(y64);
            if (!y64) fprintf(stderr, "  %s (%s)\n", c->name, kind_names[kind]);
            if (y64 && y64->dtype != AS_F64) {
                fwd_bad++;
                fprintf(stderr, "%s: float64 in, %s out\n", c->name, as_dtype_name(y64->dtype));
            }
            bool prev = as_set_grad_enabled(false);
            as_tensor *y32 = y64 ? c->fn(c, x32) : NULL;
            as_set_grad_enabled(prev);
            if (y64 && (!y32 || rel_diff(y32, y64) > 2e-5)) {
                f32_bad++;
                fprintf(stderr, "%s (%s): float32 differs from float64 by %g\n", c->name, kind_names[kind],
                        y32 ? rel_diff(y32, y64) : INFINITY);
            }
            if (cuda && y32) {
                prev = as_set_grad_enabled(false);
                as_tensor *yg = c->fn(c, xg), *yh = yg ? as_to_device(yg, AS_CPU) : NULL;
                as_set_grad_enabled(prev);
                if (!yh || rel_diff(yh, y32) > 1e-5) {
                    cuda_bad++;
                    fprintf(stderr, "%s (%s): CUDA differs from the CPU: %s\n", c->name, kind_names[kind],
                            yh ? "values" : as_error_get());
                }
                as_release(yg), as_release(yh);
            }
            if (y64 && c->grad) grad_bad += check_grad(c, x64, s.n, y64);
            as_release(y64), as_release(y32);
            release_all(base, MAX_IN), release_all(x64, MAX_IN), release_all(b32, MAX_IN);
            release_all(x32, MAX_IN), release_all(bg, MAX_IN), release_all(xg, MAX_IN);
        }
        CHECK(fwd_bad == 0);
        CHECK(f32_bad == 0);
        CHECK(cuda_bad == 0);
        CHECK(grad_bad == 0);
        printf("%-12s forward float64 %s  float32 %s  cuda %s  gradient %s\n", c->name, fwd_bad ? "FAIL" : "ok",
               f32_bad ? "FAIL" : "ok", cuda ? (cuda_bad ? "FAIL" : "ok") : "skipped",
               c->grad ? (grad_bad ? "FAIL" : "ok") : "(no backward)");
    }
    return as_test_report("test_backend_ops");
}
