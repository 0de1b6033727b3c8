/* Every CPU op against a naive loop written here, on random shapes: odd
 * sizes, non-contiguous (transposed, narrowed) and broadcast (expanded,
 * rank-extended) inputs, empty and 0-d tensors, the dtypes that apply, and
 * the errors (NULL with a message naming the op). */
#include <float.h>

#include "as_grad_math.h"
#include <string.h>

#include "as_test.h"
#include "attnswap/ops.h"

/* A random float32 tensor of a random shape of ndim dims (sizes 1..7, some 1s
 * for broadcasting), sometimes returned as a transposed (non-contiguous) view. */
static as_tensor *random_view(int ndim, int64_t *shape_out)
{
    int64_t shape[AS_MAX_DIMS];
    for (int d = 0; d < ndim; d++) shape[d] = as_test_randint(1, 7);
    if (ndim >= 2 && as_test_randint(0, 1)) {
        int64_t t = shape[0];
        shape[0] = shape[ndim - 1], shape[ndim - 1] = t;
        as_tensor *base = as_test_random(ndim, shape);
        as_tensor *v = as_transpose(base, 0, ndim - 1);
        as_release(base);
        memcpy(shape_out, v->shape, sizeof(int64_t) * (size_t)ndim);
        return v;
    }
    memcpy(shape_out, shape, sizeof(int64_t) * (size_t)ndim);
    return as_test_random(ndim, shape);
}

/* The element of t at a broadcast multi-index of the output shape. */
static double at_broadcast(const as_tensor *t, int ndim, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        int od = ndim - t->ndim + d;
        off += (t->shape[d] == 1 ? 0 : idx[od]) * t->stride[d];
    }
    return as_load_elem(as_data(t), t->dtype, off);
}

static int next_index(int ndim, const int64_t *shape, int64_t *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

static double ref_binop(as_binop op, double x, double y)
{
    switch (op) {
    case AS_ADD: return x + y;
    case AS_SUB: return x - y;
    case AS_MUL: return x * y;
    case AS_DIV: return x / y;
    case AS_MAXIMUM: return x > y ? x : y;
    case AS_MINIMUM: return x < y ? x : y;
    case AS_EQ: return x == y;
    case AS_LT: return x < y;
    case AS_GE: return x >= y;
    default: return NAN;
    }
}

static void test_binary_broadcast(void)
{
    static const as_binop ops[] = {AS_ADD, AS_SUB, AS_MUL, AS_DIV, AS_MAXIMUM, AS_MINIMUM, AS_EQ, AS_LT, AS_GE};
    for (int trial = 0; trial < 60; trial++) {
        int64_t sa[AS_MAX_DIMS], sb[AS_MAX_DIMS];
        int na = (int)as_test_randint(1, 4), nb = (int)as_test_randint(1, 4);
        as_tensor *a = random_view(na, sa), *b0 = random_view(nb, sb);
        /* make b broadcastable to a's trailing dims: copy sizes or use 1 */
        int64_t shape_b[AS_MAX_DIMS];
        for (int d = 0; d < nb; d++) {
            int ad = na - nb + d;
            shape_b[d] = ad >= 0 ? (as_test_randint(0, 2) ? sa[ad] : 1) : as_test_randint(1, 3);
        }
        as_release(b0);
        as_tensor *b = as_test_random(nb, shape_b);
        as_binop op = ops[trial % 9];
        as_tensor *r = as_binary(op, a, b);
        CHECK_OK(r);
        if (!r) continue;
        CHECK(r->dtype == (op >= AS_EQ ? AS_BOOL : AS_F32));
        int64_t idx[AS_MAX_DIMS] = {0};
        int bad = 0;
        if (as_numel(r) > 0)
            do {
                double want = ref_binop(op, at_broadcast(a, r->ndim, idx), at_broadcast(b, r->ndim, idx));
                double got = at_broadcast(r, r->ndim, idx);
                if (!(fabs(got - want) <= 1e-6 * (1 + fabs(want)))) bad++;
            } while (next_index(r->ndim, r->shape, idx));
        CHECK(bad == 0);
        as_release(a), as_release(b), as_release(r);
    }
}

static void test_promotion_and_scalars(void)
{
    as_tensor *i = as_arange(0, 6, 1, AS_I64), *j = as_full(1, (int64_t[]){6}, 4, AS_I32, AS_CPU);
    as_tensor *q = as_binary(AS_DIV, i, j);
    CHECK(q && q->dtype == AS_F32 && as_get_flat(q, 5) == 1.25);
    as_tensor *s = as_binary(AS_ADD, i, j);
    CHECK(s && s->dtype == AS_I64 && as_get_flat(s, 5) == 9);
    as_tensor *h = as_to_dtype(i, AS_BF16);
    as_tensor *hs = as_binary_scalar(AS_MUL, h, 0.5, false);
    CHECK(hs && hs->dtype == AS_BF16 && as_get_flat(hs, 3) == 1.5);
    as_tensor *rs = as_binary_scalar(AS_SUB, i, 10, true); /* 10 - i */
    CHECK(rs && rs->dtype == AS_I64 && as_get_flat(rs, 4) == 6);
    as_tensor *big = as_full(1, (int64_t[]){1}, 0, AS_I64, AS_CPU);
    ((int64_t *)as_data(big))[0] = INT64_MAX - 1;
    as_tensor *cmp = as_binary_scalar(AS_LT, big, 9.2e18, false);
    CHECK(cmp && cmp->dtype == AS_BOOL);
    as_tensor *four = as_test_random(1, (int64_t[]){4});
    as_tensor *bad = as_binary(AS_ADD, i, four);
    as_release(four);
    CHECK(bad == NULL && strncmp(as_error_get(), "add: shapes (6) and (4) cannot be broadcast", 43) == 0);
    as_release(i), as_release(j), as_release(q), as_release(s), as_release(h), as_release(hs), as_release(rs);
    as_release(big), as_release(cmp);
}

static void test_unary(void)
{
    int64_t shape[3];
    as_tensor *a = random_view(3, shape);
    static const as_unop ops[] = {AS_NEG, AS_ABS, AS_EXP, AS_TANH, AS_SIGMOID, AS_RELU, AS_GELU, AS_GELU_TANH, AS_SILU};
    for (int k = 0; k < 9; k++) {
        as_tensor *r = as_unary(ops[k], a);
        CHECK_OK(r);
        for (int64_t i = 0, n = as_numel(a); r && i < n; i++) {
            double x = as_get_flat(a, i), want;
            switch (ops[k]) {
            case AS_NEG: want = -x; break;
            case AS_ABS: want = fabs(x); break;
            case AS_EXP: want = exp(x); break;
            case AS_TANH: want = tanh(x); break;
            case AS_SIGMOID: want = 1 / (1 + exp(-x)); break;
            case AS_RELU: want = x > 0 ? x : 0; break;
            case AS_GELU: want = 0.5 * x * (1 + erf(x / sqrt(2))); break;
            case AS_GELU_TANH: want = 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x))); break;
            default: want = x / (1 + exp(-x)); break;
            }
            CHECK_NEAR(as_get_flat(r, i), want, 1e-6);
        }
        as_release(r);
    }
    as_tensor *e = as_empty(2, (int64_t[]){0, 3}, AS_F32, AS_CPU);
    as_tensor *re = as_unary(AS_EXP, e);
    CHECK(re && re->shape[0] == 0 && re->shape[1] == 3);
    as_release(a), as_release(e), as_release(re);
}

static void test_reduce(void)
{
    for (int trial = 0; trial < 20; trial++) {
        int64_t shape[3];
        as_tensor *a = random_view(3, shape);
        int dim = (int)as_test_randint(0, 2);
        static const as_redop ops[] = {AS_SUM, AS_MEAN, AS_MAX, AS_MIN, AS_ARGMAX, AS_VAR};
        as_redop op = ops[trial % 6];
        as_tensor *r = as_reduce(op, a, dim, trial % 2, 1);
        CHECK_OK(r);
        if (!r) continue;
        int64_t outer = 1, inner = 1, n = shape[dim];
        for (int d = 0; d < dim; d++) outer *= shape[d];
        for (int d = dim + 1; d < 3; d++) inner *= shape[d];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t in = 0; in < inner; in++) {
                double s = 0, mx = -INFINITY, mn = INFINITY, am = 0;
                double vals[8];
                for (int64_t i = 0; i < n; i++) {
                    int64_t idx[3], flat = (o * n + i) * inner + in, rem = flat;
                    for (int d = 2; d >= 0; d--) idx[d] = rem % shape[d], rem /= shape[d];
                    double x = at_broadcast(a, 3, idx);
                    vals[i] = x, s += x;
                    if (x > mx) mx = x, am = (double)i;
                    if (x < mn) mn = x;
                }
                double var = 0;
                for (int64_t i = 0; i < n; i++) var += (vals[i] - s / n) * (vals[i] - s / n);
                double want = op == AS_SUM ? s : op == AS_MEAN ? s / n : op == AS_MAX ? mx : op == AS_MIN ? mn
                            : op == AS_ARGMAX ? am : (n > 1 ? var / (n - 1) : NAN);
                CHECK_NEAR(as_get_flat(r, o * inner + in), want, 1e-5);
            }
        as_release(a), as_release(r);
    }
    as_tensor *i = as_arange(1, 5, 1, AS_I64);
    as_tensor *si = as_reduce(AS_SUM, i, AS_ALL_DIMS, false, 1);
    CHECK(si && si->dtype == AS_I64 && si->ndim == 0 && as_get_flat(si, 0) == 10);
    as_tensor *e = as_empty(1, (int64_t[]){0}, AS_F32, AS_CPU);
    as_tensor *se = as_reduce(AS_SUM, e, AS_ALL_DIMS, false, 1);
    CHECK(se && as_get_flat(se, 0) == 0);
    CHECK(as_reduce(AS_MAX, e, AS_ALL_DIMS, false, 1) == NULL && strstr(as_error_get(), "empty"));
    as_release(i), as_release(si), as_release(e), as_release(se);
}

static void test_softmax_norms(void)
{
    int64_t shape[3];
    as_tensor *a = random_view(3, shape);
    for (int dim = 0; dim < 3; dim++) {
        as_tensor *s = as_softmax(a, dim), *ls = as_log_softmax(a, dim);
        CHECK_OK(s);
        CHECK_OK(ls);
        int64_t idx[3] = {0};
        do {
            double m = -INFINITY, z = 0;
            int64_t j[3] = {idx[0], idx[1], idx[2]};
            for (j[dim] = 0; j[dim] < shape[dim]; j[dim]++) m = fmax(m, at_broadcast(a, 3, j));
            for (j[dim] = 0; j[dim] < shape[dim]; j[dim]++) z += exp(at_broadcast(a, 3, j) - m);
            double x = at_broadcast(a, 3, idx);
            CHECK_NEAR(at_broadcast(s, 3, idx), exp(x - m) / z, 1e-6);
            CHECK_NEAR(at_broadcast(ls, 3, idx), x - m - log(z), 1e-5);
        } while (next_index(3, shape, idx));
        as_release(s), as_release(ls);
    }
    /* a row of -inf gives zeros, not NaN */
    as_tensor *ninf = as_full(2, (int64_t[]){2, 3}, -INFINITY, AS_F32, AS_CPU);
    as_tensor *sz = as_softmax(ninf, -1);
    CHECK(sz && as_get_flat(sz, 4) == 0);
    /* layer_norm and rms_norm over the last dim */
    int64_t D = shape[2];
    as_tensor *w = as_test_random(1, &D), *bias = as_test_random(1, &D);
    as_tensor *ln = as_layer_norm(a, w, bias, 1e-5), *rn = as_rms_norm(a, w, 1e-6);
    CHECK_OK(ln);
    CHECK_OK(rn);
    int64_t rows = as_numel(a) / D;
    as_tensor *ca = as_contiguous(a);
    for (int64_t r = 0; ln && rn && r < rows; r++) {
        double m = 0, v = 0, ss = 0;
        for (int64_t i = 0; i < D; i++) m += as_get_flat(ca, r * D + i), ss += pow(as_get_flat(ca, r * D + i), 2);
        m /= D;
        for (int64_t i = 0; i < D; i++) v += pow(as_get_flat(ca, r * D + i) - m, 2);
        v /= D;
        for (int64_t i = 0; i < D; i++) {
            double x = as_get_flat(ca, r * D + i);
            CHECK_NEAR(as_get_flat(ln, r * D + i), (x - m) / sqrt(v + 1e-5) * as_get_flat(w, i) + as_get_flat(bias, i), 1e-4);
            CHECK_NEAR(as_get_flat(rn, r * D + i), x / sqrt(ss / D + 1e-6) * as_get_flat(w, i), 1e-4);
        }
    }
    as_tensor *bad = as_test_random(1, (int64_t[]){D + 1});
    CHECK(as_layer_norm(a, bad, NULL, 1e-5) == NULL && strncmp(as_error_get(), "layer_norm: weight of shape", 27) == 0);
    as_release(a), as_release(ninf), as_release(sz), as_release(w), as_release(bias), as_release(ln), as_release(rn);
    as_release(ca), as_release(bad);
}

static void test_matmul(void)
{
    for (int trial = 0; trial < 30; trial++) {
        int64_t M = as_test_randint(1, 9), K = as_test_randint(0, 9), N = as_test_randint(1, 9);
        int64_t B1 = as_test_randint(1, 3);
        /* a (B1, 1, M, K), possibly a transposed view; b (2, K, N) broadcast over B1 */
        as_tensor *a = NULL;
        if (trial % 2) {
            as_tensor *base = as_test_random(4, (int64_t[]){B1, 1, K, M});
            a = as_transpose(base, 2, 3);
            as_release(base);
        } else {
            a = as_test_random(4, (int64_t[]){B1, 1, M, K});
        }
        as_tensor *b = as_test_random(3, (int64_t[]){2, K, N});
        as_tensor *r = as_matmul(a, b);
        CHECK_OK(r);
        if (!r) continue;
        CHECK(r->ndim == 4 && r->shape[0] == B1 && r->shape[1] == 2 && r->shape[2] == M && r->shape[3] == N);
        for (int64_t x = 0; x < B1; x++)
            for (int64_t y = 0; y < 2; y++)
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double s = 0;
                        for (int64_t k = 0; k < K; k++)
                            s += at_broadcast(a, 4, (int64_t[]){x, 0, i, k}) * at_broadcast(b, 3, (int64_t[]){y, k, j});
                        CHECK_NEAR(at_broadcast(r, 4, (int64_t[]){x, y, i, j}), s, 1e-5);
                    }
        as_release(a), as_release(b), as_release(r);
    }
    /* 1-d operands, linear, errors */
    as_tensor *v = as_test_random(1, (int64_t[]){5}), *m = as_test_random(2, (int64_t[]){5, 3});
    as_tensor *vm = as_matmul(v, m);
    CHECK(vm && vm->ndim == 1 && vm->shape[0] == 3);
    double s = 0;
    for (int k = 0; k < 5; k++) s += as_get_flat(v, k) * as_get_flat(m, k * 3 + 1);
    CHECK_NEAR(as_get_flat(vm, 1), s, 1e-5);
    as_tensor *w = as_test_random(2, (int64_t[]){4, 3}), *bias = as_test_random(1, (int64_t[]){4});
    as_tensor *x = as_test_random(3, (int64_t[]){2, 2, 3});
    as_tensor *y = as_linear(x, w, bias);
    CHECK(y && y->shape[2] == 4);
    double want = as_get_flat(bias, 2);
    for (int k = 0; k < 3; k++) want += as_get_flat(x, 9 + k) * as_get_flat(w, 2 * 3 + k);
    CHECK_NEAR(as_get_flat(y, 3 * 4 + 2), want, 1e-5);
    /* linear + a residual: the output's shape, and one broadcast along it */
    for (int full = 0; full < 2; full++) {
        as_tensor *r = full ? as_test_random(3, (int64_t[]){2, 2, 4}) : as_test_random(1, (int64_t[]){4});
        as_tensor *ya = as_linear_add(x, w, bias, r);
        CHECK(ya && ya->ndim == 3 && ya->shape[2] == 4);
        CHECK_NEAR(as_get_flat(ya, 3 * 4 + 2), want + as_get_flat(r, full ? 3 * 4 + 2 : 2), 1e-5);
        as_release(r), as_release(ya);
    }
    as_tensor *wrong = as_test_random(1, (int64_t[]){3});
    CHECK(as_linear_add(x, w, bias, wrong) == NULL);
    CHECK(as_linear_add(x, w, bias, NULL) == NULL && strstr(as_error_get(), "linear_add: the residual is missing"));
    as_release(wrong);
    as_tensor *bad = as_matmul(m, m);
    CHECK(bad == NULL && strcmp(as_error_get(), "matmul: shapes (5, 3) and (5, 3) do not align") == 0);
    as_release(v), as_release(m), as_release(vm), as_release(w), as_release(bias), as_release(x), as_release(y);
}

static void test_index_and_join(void)
{
    as_tensor *a = as_test_random(3, (int64_t[]){4, 5, 3});
    as_tensor *idx = as_arange(3, -1, -2, AS_I64); /* {3, 1} */
    as_tensor *sel = as_index_select(a, 1, idx);
    CHECK(sel && sel->shape[1] == 2 && as_get_flat(sel, 3 * 2 * 2 + 3 + 1) == as_get_flat(a, 3 * 5 * 2 + 3 + 1));
    as_tensor *emb_w = as_test_random(2, (int64_t[]){7, 3});
    as_tensor *ids = as_arange(0, 6, 1, AS_I64), *ids2 = as_reshape(ids, 2, (int64_t[]){2, 3});
    as_tensor *emb = as_embedding(emb_w, ids2);
    CHECK(emb && emb->ndim == 3 && as_get_flat(emb, 5 * 3 + 2) == as_get_flat(emb_w, 5 * 3 + 2));
    as_tensor *oob = as_arange(7, 8, 1, AS_I64);
    CHECK(as_embedding(emb_w, oob) == NULL && strstr(as_error_get(), "id 7 is out of range"));
    const as_tensor *parts[2] = {a, sel};
    as_tensor *c = as_cat(2, parts, 1);
    CHECK(c && c->shape[1] == 7 && as_get_flat(c, 5 * 3 + 2) == as_get_flat(sel, 2));
    as_tensor *t = as_test_random(3, (int64_t[]){2, 4, 5}), *lo = as_tril(t, -1), *up = as_triu(t, 2);
    for (int64_t m = 0; lo && up && m < 2; m++)
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < 5; j++) {
                double x = as_get_flat(t, (m * 4 + i) * 5 + j);
                CHECK(as_get_flat(lo, (m * 4 + i) * 5 + j) == (j - i <= -1 ? x : 0));
                CHECK(as_get_flat(up, (m * 4 + i) * 5 + j) == (j - i >= 2 ? x : 0));
            }
    as_tensor *ar = as_arange(1, 0, -0.25, AS_F32);
    CHECK(ar && ar->shape[0] == 4 && as_get_flat(ar, 3) == 0.25);
    as_tensor *cond = as_binary_scalar(AS_GT, a, 0, false), *wh = as_where(cond, a, a);
    CHECK(wh && as_test_maxdiff(wh, a) == 0);
    as_release(a), as_release(idx), as_release(sel), as_release(emb_w), as_release(ids), as_release(ids2);
    as_release(emb), as_release(oob), as_release(c), as_release(t), as_release(lo), as_release(up), as_release(ar);
    as_release(cond), as_release(wh);
}

/* The exp-made maps (and the exact GELU's erfc) on contiguous float32 take the vector exp: within a few
 * float ulps of the double reference over the whole range, and at the edges
 * (overflow, underflow, +-inf, NaN, tiny x where tanh's 1 - e^-2x cancels). */
static void test_unary_vector_path(void)
{
    enum { N = 700 };
    float xs[N];
    int n = 0;
    for (double x = -100; x <= 100 && n < N - 24; x += 0.37) xs[n++] = (float)x;
    static const float edge[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 1e-30f, 0.0624f, 0.0626f, -0.0626f, 88.5f, 88.0f,
                                 -87.5f, -87.3f, 20.0f, -20.0f, 3.0f, -3.0f, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) xs[n++] = edge[i];
    as_tensor *a = as_empty(1, (int64_t[]){n}, AS_F32, AS_CPU);
    CHECK_OK(a);
    for (int i = 0; a && i < n; i++) ((float *)as_data(a))[i] = xs[i];
    static const as_unop ops[] = {AS_EXP, AS_TANH, AS_SIGMOID, AS_GELU_TANH, AS_SILU, AS_GELU};
    for (int k = 0; a && k < 6; k++) {
        as_tensor *r = as_unary(ops[k], a);
        CHECK_OK(r);
        for (int i = 0; r && i < n; i++) {
            double x = xs[i], want;
            switch (ops[k]) {
            case AS_EXP: want = exp(x); break;
            case AS_TANH: want = tanh(x); break;
            case AS_SIGMOID: want = 1 / (1 + exp(-x)); break;
            case AS_GELU_TANH: /* x / (1 + e^-2u): 1 + tanh(u) would cancel, in double too */
                want = x / (1 + exp(-2 * sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
                break;
            case AS_GELU: want = 0.5 * x * erfc(-x / sqrt(2)); break; /* 1 + erf cancels below 0 */
            default: want = x / (1 + exp(-x)); break;
            }
            /* the exact GELU's erfc(z) = e^(-z^2 + ...) rounds z^2 in float32: past x = -5
             * (values below 1e-6 |x|) its relative error grows to 2e-5 at x = -12 */
            double rtol = ops[k] == AS_GELU && x < -5 ? 3e-5 : 4e-6;
            double got = ((float *)as_data(r))[i];
            if (want > FLT_MAX) want = INFINITY; /* float32 overflows where double does not */
            int ok = isnan(want) ? isnan(got)
                   : isinf(want) ? got == want
                                 : fabs(got - want) <= rtol * fabs(want) + 1e-35;
            if (!ok) fprintf(stderr, "unary op %d at x = %.9g: %.9g, expected %.9g\n", (int)ops[k], x, got, want);
            CHECK(ok);
        }
        as_release(r);
    }
    /* the activations' gradients (g f'(x), g a second row of values): the
     * float32 vector path against the same formulas in double */
    as_tensor *g = as_empty(1, (int64_t[]){n}, AS_F32, AS_CPU);
    CHECK_OK(g);
    for (int i = 0; g && i < n; i++) ((float *)as_data(g))[i] = (float)(0.5 + 0.25 * ((i * 7) % 11));
    static const as_binop grads[] = {AS_GELU_GRAD, AS_GELU_TANH_GRAD, AS_SILU_GRAD};
    for (int k = 0; a && g && k < 3; k++) {
        as_tensor *r = as_binary(grads[k], a, g);
        CHECK_OK(r);
        for (int i = 0; r && i < n; i++) {
            double x = xs[i], gv = ((float *)as_data(g))[i], got = ((float *)as_data(r))[i];
            double want = grads[k] == AS_GELU_GRAD ? as_gelu_grad_d(x, gv)
                        : grads[k] == AS_GELU_TANH_GRAD ? as_gelu_tanh_grad_d(x, gv) : as_silu_grad_d(x, gv);
            /* where 1 + erf(x) or 1 + tanh(u) cancels (x < -3) float32 keeps
             * only an absolute accuracy, as torch's float kernels do */
            int ok = isnan(want) ? isnan(got)
                   : isinf(want) ? got == want
                                 : fabs(got - want) <= 1e-5 * fabs(want) + 2e-6 * fabs(gv);
            if (!ok) fprintf(stderr, "grad op %d at x = %.9g: %.9g, expected %.9g\n", (int)grads[k], x, got, want);
            CHECK(ok);
        }
        as_release(r);
    }
    as_release(a), as_release(g);
}

int main(void)
{
    test_binary_broadcast();
    test_promotion_and_scalars();
    test_unary();
    test_unary_vector_path();
    test_reduce();
    test_softmax_norms();
    test_matmul();
    test_index_and_join();
    return as_test_report("test_ops");
}
