/* Built-in layers and the reference attention against naive loops. */
#include <string.h>

#include "as_test.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

/* ---- helpers ---- */

/* Checks that the last error starts with prefix. */
#define CHECK_ERR(expr, prefix)                                                                   \
    do {                                                                                          \
        as_error_set("%s", "");                                                                   \
        void *r_ = (void *)(expr);                                                                \
        as_test_checks++;                                                                         \
        if (r_ || strncmp(as_error_get(), prefix, strlen(prefix)) != 0) {                         \
            as_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s: expected an error starting \"%s\", got %s \"%s\"\n",      \
                    __FILE__, __LINE__, #expr, prefix, r_ ? "a result and" : "", as_error_get()); \
        }                                                                                         \
    } while (0)

static as_tensor *call(as_module *m, int n, as_tensor *a, as_tensor *b, as_tensor *c, as_tensor *d)
{
    as_args args = {.n = n, .v = {a, b, c, d}};
    return as_module_forward(m, &args);
}

static as_tensor *param(as_module *m, const char *path, const char *name)
{
    as_module *c = *path ? as_module_find(m, path) : m;
    return c ? as_module_param(c, name) : NULL;
}

static as_tensor *random_t(int ndim, const int64_t *shape) { return as_test_random(ndim, shape); }

/* A float32 tensor from a row-major array. */
static as_tensor *from_array(int ndim, const int64_t *shape, const double *v)
{
    as_tensor *t = as_empty(ndim, shape, AS_F32, AS_CPU);
    float *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) p[i] = (float)v[i];
    return t;
}

/* Row-major doubles of any tensor (the caller frees). */
static double *to_array(const as_tensor *t)
{
    int64_t n = as_numel(t);
    double *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = as_get_flat(t, i);
    return v;
}

/* y (rows, out) = x (rows, in) W^T + b, b may be NULL. */
static double *naive_linear(const double *x, int64_t rows, const as_tensor *w, const as_tensor *b)
{
    int64_t out = w->shape[0], in = w->shape[1];
    double *y = malloc(sizeof *y * (size_t)(rows * out));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? as_get_flat(b, o) : 0;
            for (int64_t i = 0; i < in; i++) s += x[r * in + i] * as_get_flat(w, o * in + i);
            y[r * out + o] = s;
        }
    return y;
}

static bool repr_is(as_module *m, const char *want)
{
    char buf[256] = "";
    if (m->cls->extra_repr) m->cls->extra_repr(m, buf, sizeof buf);
    if (strcmp(buf, want) == 0) return true;
    fprintf(stderr, "extra_repr of %s: \"%s\", expected \"%s\"\n", m->type_name, buf, want);
    return false;
}

static bool child_names_are(as_module *m, int n, const char *const *names)
{
    if (m->children.n != n) return false;
    for (int i = 0; i < n; i++)
        if (strcmp(m->children.items[i].name, names[i]) != 0) return false;
    return true;
}

/* ---- Linear ---- */

static void test_linear(void)
{
    as_manual_seed(1);
    as_module *l = as_linear_new(5, 3, true);
    CHECK_OK(l);
    CHECK(strcmp(l->type_name, "Linear") == 0);
    CHECK(repr_is(l, "in_features=5, out_features=3, bias=true"));
    as_tensor *w = param(l, "", "weight"), *b = param(l, "", "bias");
    CHECK(w && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 5);
    CHECK(b && b->ndim == 1 && b->shape[0] == 3);

    as_tensor *x = random_t(3, (int64_t[]){2, 4, 5});
    as_tensor *y = as_module_call1(l, x);
    CHECK_OK(y);
    double *xv = to_array(x), *ref = naive_linear(xv, 8, w, b);
    as_tensor *rt = from_array(3, (int64_t[]){2, 4, 3}, ref);
    CHECK(y && y->ndim == 3 && y->shape[2] == 3 && as_test_maxdiff(y, rt) < 1e-5);
    free(xv), free(ref), as_release(rt), as_release(y);

    /* errors name the layer */
    as_tensor *bad = random_t(2, (int64_t[]){2, 3});
    CHECK_ERR(as_module_call1(l, bad), "Linear: expected input with last dimension 5, got shape (2, 3)");
    CHECK_ERR(call(l, 0, NULL, NULL, NULL, NULL), "Linear: expected 1 argument, got 0");
    CHECK_ERR(call(l, 1, NULL, NULL, NULL, NULL), "Linear: argument #1 must be a Tensor, got nil");
    CHECK_ERR(call(l, 2, x, x, NULL, NULL), "Linear: expected 1 argument, got 2");
    CHECK_ERR(as_linear_new(-1, 2, true), "Linear: ");
    as_release(bad), as_release(x), as_module_release(l);

    /* no bias; init U(-1/sqrt(in), 1/sqrt(in)) */
    l = as_linear_new(100, 50, false);
    CHECK_OK(l);
    CHECK(l && !param(l, "", "bias") && repr_is(l, "in_features=100, out_features=50, bias=false"));
    w = param(l, "", "weight");
    double mx = 0, sum = 0, sq = 0;
    for (int64_t i = 0; i < 5000; i++) {
        double v = as_get_flat(w, i);
        mx = fmax(mx, fabs(v)), sum += v, sq += v * v;
    }
    CHECK(mx <= 0.1 + 1e-7 && mx > 0.099);
    CHECK(fabs(sum / 5000) < 0.005);
    CHECK(fabs(sq / 5000 - 0.01 / 3) < 3e-4); /* variance of U(-a, a) is a^2/3 */
    as_module_release(l);
}

/* ---- norms ---- */

static void fill_random(as_tensor *t)
{
    as_tensor *r = as_test_random(t->ndim, t->shape);
    as_copy_(t, r);
    as_release(r);
}

static void test_norms(void)
{
    const int64_t rows = 6, dim = 7;
    as_tensor *x = random_t(2, (int64_t[]){rows, dim});
    double *xv = to_array(x);
    for (int kind = 0; kind < 2; kind++) {
        as_module *n = kind ? as_rms_norm_new(dim, 1e-6, true) : as_layer_norm_new(dim, 1e-5, true);
        CHECK_OK(n);
        CHECK(strcmp(n->type_name, kind ? "RMSNorm" : "LayerNorm") == 0);
        CHECK(repr_is(n, kind ? "(7,), eps=1e-06, elementwise_affine=true" : "(7,), eps=1e-05, elementwise_affine=true"));
        as_tensor *w = param(n, "", "weight"), *b = param(n, "", "bias");
        CHECK(w && as_get_flat(w, 3) == 1.0);
        CHECK(kind ? b == NULL : (b && as_get_flat(b, 3) == 0.0));
        fill_random(w);
        if (b) fill_random(b);
        as_tensor *y = as_module_call1(n, x);
        CHECK_OK(y);
        double *ref = malloc(sizeof *ref * (size_t)(rows * dim));
        for (int64_t r = 0; r < rows; r++) {
            const double *v = xv + r * dim;
            double mean = 0, var = 0;
            if (!kind)
                for (int64_t i = 0; i < dim; i++) mean += v[i] / dim;
            for (int64_t i = 0; i < dim; i++) var += (v[i] - mean) * (v[i] - mean) / dim;
            double inv = 1 / sqrt(var + (kind ? 1e-6 : 1e-5));
            for (int64_t i = 0; i < dim; i++)
                ref[r * dim + i] = (v[i] - mean) * inv * as_get_flat(w, i) + (b ? as_get_flat(b, i) : 0);
        }
        as_tensor *rt = from_array(2, (int64_t[]){rows, dim}, ref);
        CHECK(y && as_test_maxdiff(y, rt) < 1e-5);
        as_tensor *bad = random_t(2, (int64_t[]){2, 5});
        CHECK_ERR(as_module_call1(n, bad), kind ? "RMSNorm: expected input with last dimension 7, got shape (2, 5)"
                                                : "LayerNorm: expected input with last dimension 7, got shape (2, 5)");
        free(ref), as_release(rt), as_release(y), as_release(bad), as_module_release(n);
    }
    /* no affine: no parameters, plain normalisation */
    as_module *n = as_layer_norm_new(dim, 1e-5, false);
    CHECK(n && n->params.n == 0 && repr_is(n, "(7,), eps=1e-05, elementwise_affine=false"));
    as_tensor *y = n ? as_module_call1(n, x) : NULL;
    CHECK_OK(y);
    double mean = 0;
    for (int64_t i = 0; y && i < dim; i++) mean += as_get_flat(y, i);
    CHECK(fabs(mean) < 1e-5);
    CHECK_ERR(as_layer_norm_new(0, 1e-5, true), "LayerNorm: ");
    CHECK_ERR(as_rms_norm_new(4, -1, true), "RMSNorm: ");
    as_release(y), as_module_release(n), free(xv), as_release(x);
}

/* ---- Embedding ---- */

static as_tensor *ids_tensor(int ndim, const int64_t *shape, const int64_t *v)
{
    as_tensor *t = as_empty(ndim, shape, AS_I64, AS_CPU);
    memcpy(as_data(t), v, sizeof *v * (size_t)as_numel(t));
    return t;
}

static void test_embedding(void)
{
    as_manual_seed(2);
    as_module *e = as_embedding_new(10, 4);
    CHECK_OK(e);
    CHECK(strcmp(e->type_name, "Embedding") == 0 && repr_is(e, "10, 4"));
    as_tensor *w = param(e, "", "weight");
    CHECK(w && w->shape[0] == 10 && w->shape[1] == 4);
    as_tensor *ids = ids_tensor(2, (int64_t[]){2, 3}, (int64_t[]){0, 9, 3, 3, 1, 7});
    as_tensor *y = as_module_call1(e, ids);
    CHECK_OK(y);
    CHECK(y && y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 4);
    const int64_t *iv = as_data(ids);
    bool same = y != NULL;
    for (int64_t i = 0; same && i < 6; i++)
        for (int64_t d = 0; d < 4; d++) same &= as_get_flat(y, i * 4 + d) == as_get_flat(w, iv[i] * 4 + d);
    CHECK(same);
    as_tensor *f = random_t(1, (int64_t[]){3});
    CHECK_ERR(as_module_call1(e, f), "Embedding: expected int64 or int32 ids, got float32");
    as_tensor *oob = ids_tensor(1, (int64_t[]){1}, (int64_t[]){10});
    CHECK_ERR(as_module_call1(e, oob), "Embedding: ");
    as_release(oob), as_release(f), as_release(y), as_release(ids), as_module_release(e);

    /* N(0, 1) init */
    e = as_embedding_new(100, 50);
    w = param(e, "", "weight");
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < 5000; i++) sum += as_get_flat(w, i), sq += as_get_flat(w, i) * as_get_flat(w, i);
    CHECK(fabs(sum / 5000) < 0.05);
    CHECK_NEAR(sq / 5000, 1.0, 0.06);
    as_module_release(e);
}

/* ---- Dropout and activations ---- */

static void test_dropout(void)
{
    as_module *d = as_dropout_new(0.25);
    CHECK_OK(d);
    CHECK(strcmp(d->type_name, "Dropout") == 0 && repr_is(d, "p=0.25"));
    as_tensor *x = random_t(1, (int64_t[]){100});
    as_module_train(d, false);
    as_tensor *y = as_module_call1(d, x);
    CHECK(y && as_test_maxdiff(y, x) == 0);
    as_release(y);

    as_module_train(d, true);
    const int64_t n = 20000;
    as_tensor *ones = as_full(1, &n, 1.0, AS_F32, AS_CPU);
    y = as_module_call1(d, ones);
    CHECK_OK(y);
    int64_t kept = 0, bad = 0;
    for (int64_t i = 0; y && i < n; i++) {
        double v = as_get_flat(y, i);
        if (v != 0) kept++;
        if (v != 0 && fabs(v - 1 / 0.75) > 1e-6) bad++;
    }
    CHECK(fabs((double)kept / n - 0.75) < 0.015);
    CHECK(bad == 0);
    as_release(y);

    as_module *d0 = as_dropout_new(0);
    y = as_module_call1(d0, x); /* training, p = 0: identity */
    CHECK(y && as_test_maxdiff(y, x) == 0);
    CHECK_ERR(as_dropout_new(1.5), "Dropout: p must be in [0, 1), got 1.5");
    CHECK_ERR(as_dropout_new(1.0), "Dropout: p must be in [0, 1), got 1");
    as_release(y), as_release(ones), as_release(x), as_module_release(d), as_module_release(d0);
}

static double ref_act(as_unop op, double x)
{
    switch (op) {
    case AS_GELU: return 0.5 * x * (1 + erf(x / sqrt(2)));
    case AS_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case AS_SILU: return x / (1 + exp(-x));
    case AS_RELU: return x > 0 ? x : 0;
    case AS_TANH: return tanh(x);
    default: return NAN;
    }
}

static void test_activations(void)
{
    static const struct {
        as_unop op;
        const char *name, *repr;
    } acts[] = {{AS_GELU, "GELU", ""},
                {AS_GELU_TANH, "GELU", "approximate='tanh'"},
                {AS_SILU, "SiLU", ""},
                {AS_RELU, "ReLU", ""},
                {AS_TANH, "Tanh", ""}};
    as_tensor *x = random_t(2, (int64_t[]){3, 5});
    for (size_t a = 0; a < sizeof acts / sizeof *acts; a++) {
        as_module *m = as_activation_new(acts[a].op);
        CHECK_OK(m);
        if (!m) continue;
        CHECK(strcmp(m->type_name, acts[a].name) == 0 && repr_is(m, acts[a].repr));
        /* on 3x to reach the tails */
        as_tensor *x3 = as_binary_scalar(AS_MUL, x, 3.0, false);
        as_tensor *y = as_module_call1(m, x3);
        CHECK_OK(y);
        double md = y ? 0 : INFINITY;
        for (int64_t i = 0; y && i < 15; i++) md = fmax(md, fabs(as_get_flat(y, i) - ref_act(acts[a].op, as_get_flat(x3, i))));
        CHECK(md < 1e-5);
        as_release(y), as_release(x3), as_module_release(m);
    }
    CHECK_ERR(as_activation_new(AS_EXP), "activation: ");
    as_release(x);
}

/* ---- containers ---- */

static void test_containers(void)
{
    as_module *s = as_sequential_new();
    as_module *l1 = as_linear_new(3, 4, true), *act = as_activation_new(AS_RELU), *l2 = as_linear_new(4, 2, true);
    CHECK(as_module_append(s, l1) == 0 && as_module_append(s, act) == 0 && as_module_append(s, l2) == 0);
    CHECK(child_names_are(s, 3, (const char *const[]){"0", "1", "2"}));
    CHECK(strcmp(s->type_name, "Sequential") == 0);
    as_tensor *x = random_t(2, (int64_t[]){5, 3});
    as_tensor *y = as_module_call1(s, x);
    as_tensor *a = as_module_call1(l1, x), *b = as_module_call1(act, a), *c = as_module_call1(l2, b);
    CHECK(y && c && y->shape[1] == 2 && as_test_maxdiff(y, c) == 0);
    as_release(a), as_release(b), as_release(c), as_release(y);

    /* order matters: reversed, the first Linear sees the wrong width */
    as_module *r = as_sequential_new();
    as_module_append(r, l2), as_module_append(r, l1);
    CHECK_ERR(as_module_call1(r, x), "Linear: expected input with last dimension 4, got shape (5, 3)");
    as_module_release(r);

    as_module *empty = as_sequential_new();
    y = as_module_call1(empty, x);
    CHECK(y == x);
    as_release(y), as_module_release(empty);

    as_module *list = as_module_list_new();
    CHECK(as_module_append(list, l1) == 0 && as_module_append(list, l2) == 0);
    CHECK(strcmp(list->type_name, "ModuleList") == 0 && child_names_are(list, 2, (const char *const[]){"0", "1"}));
    CHECK_ERR(as_module_call1(list, x), "forward: ModuleList has no forward");
    as_module_set_child(list, "0", NULL); /* "1" stays; the next is "2" */
    CHECK(as_module_append(list, act) == 0 && child_names_are(list, 2, (const char *const[]){"1", "2"}));
    CHECK(as_module_append(list, NULL) == -1);
    as_module_release(list);
    as_release(x), as_module_release(l1), as_module_release(act), as_module_release(l2), as_module_release(s);
}

/* ---- attention ---- */

/* mask element broadcast to (B, H, Lq, Lk) at (b, h, i, j) */
static double mask_at(const as_tensor *m, int64_t b, int64_t h, int64_t i, int64_t j)
{
    int64_t idx[4] = {b, h, i, j}, flat = 0;
    for (int d = 0; d < m->ndim; d++) {
        int64_t n = m->shape[d], k = idx[4 - m->ndim + d];
        flat = flat * n + (n == 1 ? 0 : k);
    }
    return as_get_flat(m, flat);
}

/* The reference: quadruple loops in double.  keep (B, H, Lq, Lk) bool, when
 * given, is the dropout keep-mask with probability p. */
static as_tensor *naive_sdp(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                            bool causal, double scale, const as_tensor *keep, double p)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv;
    if (isnan(scale)) scale = 1 / sqrt((double)D);
    double *out = calloc((size_t)(B * H * Lq * Dv), sizeof *out), *s = malloc(sizeof *s * (size_t)Lk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int64_t kh = h / G;
                double mx = -INFINITY;
                for (int64_t j = 0; j < Lk; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++)
                        dot += as_get_flat(q, ((b * H + h) * Lq + i) * D + d) *
                               as_get_flat(k, ((b * Hkv + kh) * Lk + j) * D + d);
                    s[j] = dot * scale;
                    if (causal && j > i + (Lk - Lq)) s[j] = -INFINITY;
                    if (mask && mask->dtype == AS_BOOL && mask_at(mask, b, h, i, j) == 0) s[j] = -INFINITY;
                    if (mask && mask->dtype != AS_BOOL) s[j] += mask_at(mask, b, h, i, j);
                    mx = fmax(mx, s[j]);
                }
                double *o = out + ((b * H + h) * Lq + i) * Dv;
                if (mx == -INFINITY) continue; /* nothing to attend to: zeros */
                double sum = 0;
                for (int64_t j = 0; j < Lk; j++) sum += s[j] = exp(s[j] - mx);
                for (int64_t j = 0; j < Lk; j++) {
                    double pj = s[j] / sum;
                    if (keep) pj = as_get_flat(keep, ((b * H + h) * Lq + i) * Lk + j) != 0 ? pj / (1 - p) : 0;
                    for (int64_t d = 0; d < Dv; d++) o[d] += pj * as_get_flat(v, ((b * Hkv + kh) * Lk + j) * Dv + d);
                }
            }
    as_tensor *t = from_array(4, (int64_t[]){B, H, Lq, Dv}, out);
    free(out), free(s);
    return t;
}

/* Runs both and compares; returns the maxdiff. */
static double sdp_vs_naive(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                           bool causal, double scale)
{
    as_attention_opts o = {.causal = causal, .scale = scale, .dropout = 0};
    as_tensor *y = as_sdp_attention(q, k, v, mask, &o, false);
    if (!y) {
        fprintf(stderr, "as_sdp_attention: %s\n", as_error_get());
        return INFINITY;
    }
    as_tensor *ref = naive_sdp(q, k, v, mask, causal, scale, NULL, 0);
    double d = as_same_shape(y, ref) ? as_test_maxdiff(y, ref) : INFINITY;
    as_release(y), as_release(ref);
    return d;
}

static void test_sdp_random_shapes(void)
{
    for (int trial = 0; trial < 6; trial++) {
        int64_t B = as_test_randint(1, 2), Hkv = as_test_randint(1, 3), G = as_test_randint(1, 3);
        int64_t H = Hkv * G, Lq = 2 * as_test_randint(1, 4) + 1, Lk = Lq + 2 * as_test_randint(0, 2) + 1;
        int64_t D = as_test_randint(2, 9), Dv = as_test_randint(2, 9);
        as_tensor *q = random_t(4, (int64_t[]){B, H, Lq, D});
        as_tensor *k = random_t(4, (int64_t[]){B, Hkv, Lk, D});
        as_tensor *v = random_t(4, (int64_t[]){B, Hkv, Lk, Dv});
        double d = sdp_vs_naive(q, k, v, NULL, false, NAN);
        CHECK(d < 1e-5);
        if (!(d < 1e-5))
            fprintf(stderr, "  B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld Dv=%lld: %g\n", (long long)B,
                    (long long)H, (long long)Hkv, (long long)Lq, (long long)Lk, (long long)D, (long long)Dv, d);
        CHECK(sdp_vs_naive(q, k, v, NULL, true, 0.3) < 1e-5); /* causal, explicit scale */
        /* more queries than keys, causal: the first rows see nothing */
        as_tensor *ql = random_t(4, (int64_t[]){B, H, Lk + 2, D});
        CHECK(sdp_vs_naive(ql, k, v, NULL, true, NAN) < 1e-5);
        as_release(ql), as_release(q), as_release(k), as_release(v);
    }
}

static void test_sdp_causal(void)
{
    /* a KV cache: 3 queries against 7 keys, offset 4 */
    as_tensor *q = random_t(4, (int64_t[]){2, 4, 3, 5});
    as_tensor *k = random_t(4, (int64_t[]){2, 2, 7, 5});
    as_tensor *v = random_t(4, (int64_t[]){2, 2, 7, 6});
    CHECK(sdp_vs_naive(q, k, v, NULL, true, NAN) < 1e-5);
    /* the last query sees every key: the same as non-causal for that row */
    as_attention_opts c = {.causal = true, .scale = NAN}, nc = {.causal = false, .scale = NAN};
    as_tensor *yc = as_sdp_attention(q, k, v, NULL, &c, false), *yn = as_sdp_attention(q, k, v, NULL, &nc, false);
    as_tensor *lc = yc ? as_narrow(yc, 2, 2, 1) : NULL, *ln = yn ? as_narrow(yn, 2, 2, 1) : NULL;
    as_tensor *fc = yc ? as_narrow(yc, 2, 0, 1) : NULL, *fn = yn ? as_narrow(yn, 2, 0, 1) : NULL;
    CHECK(lc && ln && as_test_maxdiff(lc, ln) < 1e-6);
    CHECK(fc && fn && as_test_maxdiff(fc, fn) > 1e-4); /* the first does not */
    as_release(lc), as_release(ln), as_release(fc), as_release(fn), as_release(yc), as_release(yn);

    /* more queries than keys: the first Lq - Lk rows see nothing and give zeros */
    as_tensor *q2 = random_t(4, (int64_t[]){1, 2, 6, 5});
    as_tensor *k2 = random_t(4, (int64_t[]){1, 1, 4, 5}), *v2 = random_t(4, (int64_t[]){1, 1, 4, 3});
    CHECK(sdp_vs_naive(q2, k2, v2, NULL, true, NAN) < 1e-5);
    as_tensor *y = as_sdp_attention(q2, k2, v2, NULL, &c, false);
    bool zeros = y != NULL;
    for (int64_t h = 0; zeros && h < 2; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t d = 0; d < 3; d++) zeros &= as_get_flat(y, (h * 6 + i) * 3 + d) == 0.0;
    CHECK(zeros);
    as_release(y), as_release(q2), as_release(k2), as_release(v2);
    as_release(q), as_release(k), as_release(v);
}

static void test_sdp_masks(void)
{
    const int64_t B = 2, H = 6, Hkv = 3, Lq = 5, Lk = 7, D = 4;
    as_tensor *q = random_t(4, (int64_t[]){B, H, Lq, D});
    as_tensor *k = random_t(4, (int64_t[]){B, Hkv, Lk, D}), *v = random_t(4, (int64_t[]){B, Hkv, Lk, D});

    /* bool (B, 1, Lq, Lk) with row 1 of batch 0 and row 3 of batch 1 fully masked */
    as_tensor *m = as_empty(4, (int64_t[]){B, 1, Lq, Lk}, AS_BOOL, AS_CPU);
    uint8_t *mp = as_data(m);
    for (int64_t i = 0; i < B * Lq * Lk; i++) mp[i] = as_test_randint(0, 2) != 0;
    for (int64_t j = 0; j < Lk; j++) mp[(0 * Lq + 1) * Lk + j] = 0, mp[(1 * Lq + 3) * Lk + j] = 0;
    CHECK(sdp_vs_naive(q, k, v, m, false, NAN) < 1e-5);
    CHECK(sdp_vs_naive(q, k, v, m, true, NAN) < 1e-5); /* with causal on top */
    as_attention_opts o = {.scale = NAN};
    as_tensor *y = as_sdp_attention(q, k, v, m, &o, false);
    bool zeros = y != NULL, finite = y != NULL;
    for (int64_t h = 0; zeros && h < H; h++)
        for (int64_t d = 0; d < D; d++) {
            zeros &= as_get_flat(y, ((0 * H + h) * Lq + 1) * D + d) == 0.0;
            zeros &= as_get_flat(y, ((1 * H + h) * Lq + 3) * D + d) == 0.0;
        }
    for (int64_t i = 0; finite && i < as_numel(y); i++) finite &= isfinite(as_get_flat(y, i));
    CHECK(zeros);
    CHECK(finite);
    as_release(y), as_release(m);

    /* bool (Lk) and (H, 1, Lk) broadcasts */
    m = as_empty(3, (int64_t[]){H, 1, Lk}, AS_BOOL, AS_CPU);
    mp = as_data(m);
    for (int64_t i = 0; i < H * Lk; i++) mp[i] = as_test_randint(0, 3) != 0;
    CHECK(sdp_vs_naive(q, k, v, m, false, NAN) < 1e-5);
    as_release(m);

    /* additive float (Lq, Lk) with a -inf column and a fully -inf row */
    double fm[5 * 7];
    for (int64_t i = 0; i < Lq * Lk; i++) fm[i] = 2 * as_test_randf();
    for (int64_t i = 0; i < Lq; i++) fm[i * Lk + 2] = -INFINITY;
    for (int64_t j = 0; j < Lk; j++) fm[4 * Lk + j] = -INFINITY;
    m = from_array(2, (int64_t[]){Lq, Lk}, fm);
    CHECK(sdp_vs_naive(q, k, v, m, false, 0.7) < 1e-5);
    y = as_sdp_attention(q, k, v, m, &o, false);
    zeros = y != NULL;
    for (int64_t d = 0; zeros && d < D; d++) zeros &= as_get_flat(y, 4 * D + d) == 0.0;
    CHECK(zeros);
    as_release(y), as_release(m);
    as_release(q), as_release(k), as_release(v);
}

static void test_sdp_strided(void)
{
    /* q as a transposed view (B, Lq, H, D) -> (B, H, Lq, D): GQA takes the broadcast path */
    const int64_t B = 2, H = 6, Hkv = 2, Lq = 5, Lk = 9, D = 8;
    as_tensor *base = random_t(4, (int64_t[]){B, Lq, H, D});
    as_tensor *q = as_transpose(base, 1, 2);
    CHECK(q && !as_is_contiguous(q));
    as_tensor *k = random_t(4, (int64_t[]){B, Hkv, Lk, D}), *v = random_t(4, (int64_t[]){B, Hkv, Lk, D});
    as_tensor *kt = random_t(4, (int64_t[]){B, Lk, Hkv, D}), *vt = as_transpose(kt, 1, 2);
    CHECK(sdp_vs_naive(q, k, v, NULL, false, NAN) < 1e-5);
    CHECK(sdp_vs_naive(q, k, v, NULL, true, NAN) < 1e-5);
    CHECK(sdp_vs_naive(q, vt, vt, NULL, false, NAN) < 1e-5); /* strided k and v too */
    as_tensor *qc = as_contiguous(q);
    as_attention_opts o = {.scale = NAN};
    as_tensor *y1 = as_sdp_attention(q, k, v, NULL, &o, false), *y2 = as_sdp_attention(qc, k, v, NULL, &o, false);
    CHECK(y1 && y2 && as_test_maxdiff(y1, y2) < 1e-6);
    as_release(y1), as_release(y2), as_release(qc), as_release(kt), as_release(vt);
    as_release(base), as_release(q), as_release(k), as_release(v);
}

static void test_sdp_dropout(void)
{
    const int64_t B = 1, H = 4, Hkv = 2, Lq = 3, Lk = 5, D = 4;
    as_tensor *q = random_t(4, (int64_t[]){B, H, Lq, D});
    as_tensor *k = random_t(4, (int64_t[]){B, Hkv, Lk, D}), *v = random_t(4, (int64_t[]){B, Hkv, Lk, D});
    as_attention_opts o = {.scale = NAN, .dropout = 0.4};
    /* eval: no dropout */
    as_tensor *ye = as_sdp_attention(q, k, v, NULL, &o, false);
    as_tensor *ref = naive_sdp(q, k, v, NULL, false, NAN, NULL, 0);
    CHECK(ye && as_test_maxdiff(ye, ref) < 1e-5);
    /* training: the same keep-mask as the seeded generator gives */
    as_manual_seed(99);
    as_tensor *yt = as_sdp_attention(q, k, v, NULL, &o, true);
    as_manual_seed(99);
    as_tensor *keep = as_bernoulli_keep(4, (int64_t[]){B, H, Lq, Lk}, 0.4, AS_CPU);
    as_tensor *refd = keep ? naive_sdp(q, k, v, NULL, false, NAN, keep, 0.4) : NULL;
    CHECK(yt && refd && as_test_maxdiff(yt, refd) < 1e-5);
    CHECK(yt && ye && as_test_maxdiff(yt, ye) > 1e-3);
    as_release(ye), as_release(ref), as_release(yt), as_release(keep), as_release(refd);
    as_release(q), as_release(k), as_release(v);
}

/* D = 0: every score is 0 whatever the scale, so each row averages the
 * values it sees; the materialising path, the fused one and the dispatch
 * agree (the default scale used to be 1/sqrt(0) = inf there: 0 * inf = NaN). */
static void test_sdp_empty_head_dim(void)
{
    as_tensor *q = as_empty(4, (int64_t[]){1, 2, 3, 0}, AS_F32, AS_CPU);
    as_tensor *k = as_empty(4, (int64_t[]){1, 2, 4, 0}, AS_F32, AS_CPU);
    as_tensor *v = random_t(4, (int64_t[]){1, 2, 4, 5});
    as_attention_opts o = {.causal = true, .scale = NAN};
    as_tensor *outs[3] = {as_sdp_attention(q, k, v, NULL, &o, false), as_flash_attention(q, k, v, NULL, &o, false),
                          as_sdpa(q, k, v, NULL, &o, AS_SDP_AUTO, false)};
    for (int t = 0; t < 3; t++) {
        CHECK_OK(outs[t]);
        if (!outs[t]) continue;
        /* causal, Lk - Lq = 1: query i averages keys 0 .. i + 1 */
        int bad = 0;
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 3; i++)
                for (int c = 0; c < 5; c++) {
                    double want = 0;
                    for (int j = 0; j <= i + 1; j++) want += as_get_flat(v, (h * 4 + j) * 5 + c);
                    want /= i + 2;
                    double got = as_get_flat(outs[t], (h * 3 + i) * 5 + c);
                    if (!(fabs(got - want) < 1e-5)) bad++;
                }
        CHECK(bad == 0);
        as_release(outs[t]);
    }
    as_release(q), as_release(k), as_release(v);
}

static void test_sdp_errors(void)
{
    as_tensor *q = random_t(4, (int64_t[]){1, 4, 3, 8}), *k = random_t(4, (int64_t[]){1, 2, 5, 8});
    as_tensor *v = random_t(4, (int64_t[]){1, 2, 5, 6}), *q3 = random_t(3, (int64_t[]){4, 3, 8});
    as_tensor *k3h = random_t(4, (int64_t[]){1, 3, 5, 8}), *kd = random_t(4, (int64_t[]){1, 2, 5, 7});
    as_tensor *kb = random_t(4, (int64_t[]){2, 2, 5, 8}), *vl = random_t(4, (int64_t[]){1, 2, 4, 6});
    as_tensor *badmask = random_t(2, (int64_t[]){3, 4}), *m5 = random_t(5, (int64_t[]){1, 1, 1, 3, 5});
    as_tensor *imask = as_zeros(2, (int64_t[]){3, 5}, AS_I64, AS_CPU);
    as_attention_opts o = {.scale = NAN};
    CHECK_ERR(as_sdp_attention(q3, k, v, NULL, &o, false), "scaled_dot_product: q must be 4-d (B, H, L, D), got shape (4, 3, 8)");
    CHECK_ERR(as_sdp_attention(q, k3h, k3h, NULL, &o, false), "scaled_dot_product: the query heads (4) must be a multiple of the key/value heads (3)");
    CHECK_ERR(as_sdp_attention(q, kd, v, NULL, &o, false), "scaled_dot_product: q (1, 4, 3, 8) and k (1, 2, 5, 7) must have the same head dimension");
    CHECK_ERR(as_sdp_attention(q, kb, v, NULL, &o, false), "scaled_dot_product: batch sizes differ");
    CHECK_ERR(as_sdp_attention(q, k, vl, NULL, &o, false), "scaled_dot_product: k (1, 2, 5, 8) and v (1, 2, 4, 6)");
    CHECK_ERR(as_sdp_attention(q, k, NULL, NULL, &o, false), "scaled_dot_product: v must be a Tensor, got nil");
    CHECK_ERR(as_sdp_attention(q, k, v, badmask, &o, false), "scaled_dot_product: mask of shape (3, 4) is not broadcastable to (B, H, Lq, Lk) = (1, 4, 3, 5)");
    CHECK_ERR(as_sdp_attention(q, k, v, m5, &o, false), "scaled_dot_product: mask of shape (1, 1, 1, 3, 5)");
    CHECK_ERR(as_sdp_attention(q, k, v, imask, &o, false), "scaled_dot_product: mask must be bool (keep) or floating point (additive), got int64");
    as_attention_opts bad = {.scale = NAN, .dropout = 1.5};
    CHECK_ERR(as_sdp_attention(q, k, v, NULL, &bad, false), "scaled_dot_product: dropout must be in [0, 1), got 1.5");
    CHECK_ERR(as_sdp_attention_new(&bad, AS_SDP_AUTO), "scaled_dot_product: dropout must be in [0, 1), got 1.5");

    /* the core module: forward(q, k, v [, mask]) with its opts */
    as_attention_opts co = {.causal = true, .scale = 0.25};
    as_module *core = as_sdp_attention_new(&co, AS_SDP_AUTO);
    CHECK_OK(core);
    CHECK(strcmp(core->type_name, "ScaledDotProductAttention") == 0);
    CHECK(repr_is(core, "causal=true, scale=0.25, dropout=0"));
    as_tensor *y = call(core, 3, q, k, v, NULL), *ref = naive_sdp(q, k, v, NULL, true, 0.25, NULL, 0);
    CHECK(y && as_test_maxdiff(y, ref) < 1e-5);
    as_release(y), as_release(ref);
    as_tensor *fm = random_t(2, (int64_t[]){3, 5});
    y = call(core, 4, q, k, v, fm), ref = naive_sdp(q, k, v, fm, true, 0.25, NULL, 0);
    CHECK(y && as_test_maxdiff(y, ref) < 1e-5);
    as_release(y), as_release(ref), as_release(fm);
    CHECK_ERR(call(core, 2, q, k, NULL, NULL), "scaled_dot_product: expected 3 to 4 arguments, got 2");
    CHECK_ERR(call(core, 3, q, k, q3, NULL), "scaled_dot_product: v must be 4-d");
    as_module_release(core);
    core = as_sdp_attention_new(NULL, AS_SDP_AUTO);
    CHECK(core && repr_is(core, "causal=false, dropout=0"));
    as_module_release(core);

    /* the default core runs the fused kernel; backend=math materialises,
     * and both agree with the naive reference */
    as_module *fused = as_sdp_attention_new(&co, AS_SDP_AUTO), *math = as_sdp_attention_new(&co, AS_SDP_MATH);
    CHECK(math && repr_is(math, "causal=true, scale=0.25, dropout=0, backend=math"));
    ref = naive_sdp(q, k, v, NULL, true, 0.25, NULL, 0);
    y = call(fused, 3, q, k, v, NULL);
    CHECK(y && strncmp(as_flash_backend(), "flash/", 6) == 0 && as_test_maxdiff(y, ref) < 1e-5);
    as_release(y);
    y = call(math, 3, q, k, v, NULL);
    CHECK(y && strcmp(as_flash_backend(), "math") == 0 && as_test_maxdiff(y, ref) < 1e-5);
    as_release(y), as_release(ref);
    as_tensor *y_auto = as_sdpa(q, k, v, NULL, &co, AS_SDP_AUTO, false);
    CHECK(y_auto && strncmp(as_flash_backend(), "flash/", 6) == 0);
    as_release(y_auto);
    CHECK_ERR(as_sdpa(q3, k, v, NULL, &co, AS_SDP_AUTO, false), "scaled_dot_product: q must be 4-d");
    as_module_release(fused), as_module_release(math);

    as_release(q), as_release(k), as_release(v), as_release(q3), as_release(k3h), as_release(kd);
    as_release(kb), as_release(vl), as_release(badmask), as_release(m5), as_release(imask);
}

/* ---- MultiheadAttention ---- */

/* The MHA forward composed by hand from its own weights: naive projections,
 * naive attention, naive output projection. */
static as_tensor *manual_mha(as_module *m, const as_tensor *x, const as_tensor *mask, bool causal)
{
    const as_mha_config *c = m->config;
    int64_t B = x->shape[0], L = x->shape[1], H = c->num_heads, Hkv = c->num_kv_heads, hd = c->head_dim;
    double *xv = to_array(x), *proj[3];
    int64_t width[3] = {H * hd, Hkv * hd, Hkv * hd}, off[3] = {0, 0, 0}, stride[3];
    if (c->fused_qkv) {
        double *all = naive_linear(xv, B * L, param(m, "qkv", "weight"), param(m, "qkv", "bias"));
        int64_t total = (H + 2 * Hkv) * hd;
        for (int i = 0; i < 3; i++) proj[i] = all, stride[i] = total;
        off[1] = H * hd, off[2] = (H + Hkv) * hd;
        proj[1] = proj[2] = all;
    } else {
        static const char *names[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++)
            proj[i] = naive_linear(xv, B * L, param(m, names[i], "weight"), param(m, names[i], "bias")), stride[i] = width[i];
    }
    as_tensor *heads[3];
    for (int i = 0; i < 3; i++) {
        int64_t n = i ? Hkv : H;
        double *hv = malloc(sizeof *hv * (size_t)(B * n * L * hd));
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < n; h++)
                for (int64_t l = 0; l < L; l++)
                    for (int64_t d = 0; d < hd; d++)
                        hv[((b * n + h) * L + l) * hd + d] = proj[i][(b * L + l) * stride[i] + off[i] + h * hd + d];
        heads[i] = from_array(4, (int64_t[]){B, n, L, hd}, hv);
        free(hv);
    }
    as_tensor *o = naive_sdp(heads[0], heads[1], heads[2], mask, causal, NAN, NULL, 0);
    double *flat = malloc(sizeof *flat * (size_t)(B * L * H * hd));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t l = 0; l < L; l++)
                for (int64_t d = 0; d < hd; d++)
                    flat[(b * L + l) * H * hd + h * hd + d] = as_get_flat(o, ((b * H + h) * L + l) * hd + d);
    double *y = naive_linear(flat, B * L, param(m, "out_proj", "weight"), param(m, "out_proj", "bias"));
    as_tensor *t = from_array(3, (int64_t[]){B, L, c->dim}, y);
    free(y), free(flat), free(xv), as_release(o);
    for (int i = 0; i < 3; i++) as_release(heads[i]);
    free(proj[0]);
    if (!c->fused_qkv) free(proj[1]), free(proj[2]);
    return t;
}

/* A test core that returns k: the wrong shape under GQA. */
static as_tensor *return_k(as_module *m, const as_args *a) { return as_retain(a->v[1]); }
static const as_module_class return_k_class = {.name = "ReturnK", .forward = return_k};

static void test_mha(void)
{
    static const struct {
        as_mha_config cfg;
        bool causal;
        const char *repr;
    } cases[] = {
        {{.dim = 12, .num_heads = 4, .num_kv_heads = 2, .qkv_bias = true, .out_bias = true, .fused_qkv = true}, false,
         "dim=12, num_heads=4, num_kv_heads=2"},
        {{.dim = 12, .num_heads = 3, .qkv_bias = true, .out_bias = false, .fused_qkv = false}, false,
         "dim=12, num_heads=3, num_kv_heads=3"},
        {{.dim = 10, .num_heads = 4, .num_kv_heads = 1, .head_dim = 3, .qkv_bias = false, .out_bias = true}, true,
         "dim=10, num_heads=4, num_kv_heads=1, head_dim=3"},
        {{.dim = 8, .num_heads = 2, .fused_qkv = true}, true, "dim=8, num_heads=2, num_kv_heads=2"},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        const as_mha_config *cfg = &cases[t].cfg;
        as_attention_opts o = {.causal = cases[t].causal, .scale = NAN};
        as_module *core = as_sdp_attention_new(&o, AS_SDP_AUTO);
        as_module *m = as_mha_new(cfg, core);
        as_module_release(core);
        CHECK_OK(m);
        if (!m) continue;
        CHECK(strcmp(m->type_name, "MultiheadAttention") == 0 && repr_is(m, cases[t].repr));
        if (cfg->fused_qkv)
            CHECK(child_names_are(m, 3, (const char *const[]){"qkv", "core", "out_proj"}));
        else
            CHECK(child_names_are(m, 5, (const char *const[]){"q_proj", "k_proj", "v_proj", "core", "out_proj"}));
        CHECK((param(m, cfg->fused_qkv ? "qkv" : "q_proj", "bias") != NULL) == cfg->qkv_bias);
        CHECK((param(m, "out_proj", "bias") != NULL) == cfg->out_bias);

        as_tensor *x = random_t(3, (int64_t[]){2, 5, cfg->dim});
        as_tensor *y = as_module_call1(m, x), *ref = manual_mha(m, x, NULL, cases[t].causal);
        CHECK_OK(y);
        CHECK(y && as_same_shape(y, ref) && as_test_maxdiff(y, ref) < 1e-5);
        as_release(y), as_release(ref);

        /* a bool mask (L, L) goes through to the core */
        as_tensor *mask = as_empty(2, (int64_t[]){5, 5}, AS_BOOL, AS_CPU);
        uint8_t *mp = as_data(mask);
        for (int i = 0; i < 25; i++) mp[i] = as_test_randint(0, 2) != 0;
        y = call(m, 2, x, mask, NULL, NULL), ref = manual_mha(m, x, mask, cases[t].causal);
        CHECK(y && as_test_maxdiff(y, ref) < 1e-5);
        as_release(y), as_release(ref), as_release(mask), as_release(x);
        as_module_release(m);
    }

    /* swapping the core: looked up by name at each forward */
    as_mha_config cfg = {.dim = 16, .num_heads = 4, .num_kv_heads = 2, .fused_qkv = true, .qkv_bias = true, .out_bias = true};
    as_attention_opts o = {.scale = NAN};
    as_module *core = as_sdp_attention_new(&o, AS_SDP_AUTO), *m = as_mha_new(&cfg, core);
    as_tensor *x = random_t(3, (int64_t[]){2, 6, 16});
    as_tensor *y0 = as_module_call1(m, x);
    as_module *same = as_sdp_attention_new(&o, AS_SDP_AUTO);
    CHECK(as_module_set_child(m, "core", same) == 0 && as_module_child(m, "core") == same);
    CHECK(child_names_are(m, 3, (const char *const[]){"qkv", "core", "out_proj"})); /* keeps its place */
    as_tensor *y1 = as_module_call1(m, x);
    CHECK(y0 && y1 && as_test_maxdiff(y0, y1) == 0);
    as_attention_opts causal = {.causal = true, .scale = NAN};
    as_module *other = as_sdp_attention_new(&causal, AS_SDP_AUTO);
    as_module_set_child(m, "core", other);
    as_tensor *y2 = as_module_call1(m, x), *ref = manual_mha(m, x, NULL, true);
    CHECK(y2 && as_test_maxdiff(y2, y1) > 1e-4 && as_test_maxdiff(y2, ref) < 1e-5);

    /* errors */
    as_tensor *bad = random_t(3, (int64_t[]){2, 6, 15});
    CHECK_ERR(as_module_call1(m, bad), "MultiheadAttention: expected input (B, L, 16), got shape (2, 6, 15)");
    as_module *rk = as_module_new(&return_k_class, NULL, NULL);
    as_module_set_child(m, "core", rk);
    CHECK_ERR(as_module_call1(m, x), "MultiheadAttention: core returned shape (2, 2, 6, 4), expected (2, 4, 6, 4)");
    as_module_set_child(m, "core", NULL);
    CHECK_ERR(as_module_call1(m, x), "MultiheadAttention: child 'core' is missing");
    as_mha_config c1 = {.dim = 10, .num_heads = 3}, c2 = {.dim = 12, .num_heads = 4, .num_kv_heads = 3};
    CHECK_ERR(as_mha_new(&c1, core), "MultiheadAttention: dim (10) must be divisible by num_heads (3)");
    CHECK_ERR(as_mha_new(&c2, core), "MultiheadAttention: num_kv_heads (3) must divide num_heads (4)");
    CHECK_ERR(as_mha_new(&cfg, NULL), "MultiheadAttention: core must be a module, got nil");
    CHECK(core->refcount == 1); /* failed constructors hold nothing */
    as_release(bad), as_release(y0), as_release(y1), as_release(y2), as_release(ref), as_release(x);
    as_module_release(rk), as_module_release(same), as_module_release(other), as_module_release(core);
    as_module_release(m);
}

/* ---- TransformerBlock ---- */

static as_tensor *add_release(as_tensor *a, as_tensor *b)
{
    as_tensor *r = as_binary(AS_ADD, a, b);
    as_release(a), as_release(b);
    return r;
}

/* The block by hand: its children's weights, ops called directly. */
static as_tensor *manual_block(as_module *blk, as_tensor *x, as_tensor *mask, bool pre, double eps, as_unop act)
{
    as_module *attn = as_module_child(blk, "attn");
    as_tensor *n1w = param(blk, "norm1", "weight"), *n1b = param(blk, "norm1", "bias");
    as_tensor *n2w = param(blk, "norm2", "weight"), *n2b = param(blk, "norm2", "bias");
    as_tensor *f1w = param(blk, "mlp.fc1", "weight"), *f1b = param(blk, "mlp.fc1", "bias");
    as_tensor *f2w = param(blk, "mlp.fc2", "weight"), *f2b = param(blk, "mlp.fc2", "bias");
#define MLP(in, out)                                                                               \
    do {                                                                                           \
        as_tensor *h1_ = as_linear(in, f1w, f1b), *a_ = as_unary(act, h1_);                        \
        out = as_linear(a_, f2w, f2b);                                                             \
        as_release(h1_), as_release(a_);                                                           \
    } while (0)
    as_tensor *y;
    if (pre) {
        as_tensor *n1 = as_layer_norm(x, n1w, n1b, eps);
        as_tensor *a = manual_mha(attn, n1, mask, false);
        as_tensor *h = add_release(as_retain(x), a);
        as_tensor *n2 = as_layer_norm(h, n2w, n2b, eps), *f;
        MLP(n2, f);
        y = add_release(h, f);
        as_release(n1), as_release(n2);
    } else {
        as_tensor *a = manual_mha(attn, x, mask, false);
        as_tensor *s = add_release(as_retain(x), a);
        as_tensor *h = as_layer_norm(s, n1w, n1b, eps), *f;
        MLP(h, f);
        as_tensor *s2 = add_release(as_retain(h), f);
        y = as_layer_norm(s2, n2w, n2b, eps);
        as_release(s), as_release(h), as_release(s2);
    }
#undef MLP
    return y;
}

static void randomise_norms(as_module *blk)
{
    static const char *paths[] = {"norm1", "norm2"}, *names[] = {"weight", "bias"};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) fill_random(param(blk, paths[i], names[j]));
}

static void test_block(void)
{
    for (int pre = 0; pre < 2; pre++) {
        as_block_config cfg = {.attn = {.dim = 12, .num_heads = 4, .num_kv_heads = 2, .fused_qkv = true,
                                        .qkv_bias = true, .out_bias = true},
                               .mlp_ratio = 2.5, .pre_norm = pre, .norm_eps = 1e-6,
                               .activation = pre ? AS_GELU : AS_SILU};
        as_attention_opts o = {.scale = NAN};
        as_module *core = as_sdp_attention_new(&o, AS_SDP_AUTO), *blk = as_transformer_block_new(&cfg, core);
        as_module_release(core);
        CHECK_OK(blk);
        if (!blk) continue;
        CHECK(strcmp(blk->type_name, "TransformerBlock") == 0);
        CHECK(repr_is(blk, pre ? "dim=12, mlp_ratio=2.5, norm='pre'" : "dim=12, mlp_ratio=2.5, norm='post'"));
        CHECK(child_names_are(blk, 4, (const char *const[]){"norm1", "attn", "norm2", "mlp"}));
        as_module *mlp = as_module_child(blk, "mlp");
        CHECK(mlp && strcmp(mlp->type_name, "Mlp") == 0 &&
              child_names_are(mlp, 3, (const char *const[]){"fc1", "act", "fc2"}));
        CHECK(strcmp(as_module_find(blk, "mlp.act")->type_name, pre ? "GELU" : "SiLU") == 0);
        CHECK(param(blk, "mlp.fc1", "weight")->shape[0] == 30); /* 12 * 2.5 */
        CHECK(strcmp(as_module_find(blk, "attn")->type_name, "MultiheadAttention") == 0);
        CHECK(strcmp(as_module_find(blk, "attn.core")->type_name, "ScaledDotProductAttention") == 0);
        randomise_norms(blk);

        as_tensor *x = random_t(3, (int64_t[]){2, 5, 12});
        as_tensor *y = as_module_call1(blk, x);
        as_tensor *ref = manual_block(blk, x, NULL, pre, 1e-6, cfg.activation);
        CHECK_OK(y);
        CHECK(y && ref && as_test_maxdiff(y, ref) < 1e-4);
        as_release(y), as_release(ref);

        /* the mask reaches attn */
        as_tensor *mask = as_empty(2, (int64_t[]){5, 5}, AS_BOOL, AS_CPU);
        uint8_t *mp = as_data(mask);
        for (int i = 0; i < 25; i++) mp[i] = (i % 5) <= (i / 5); /* causal */
        y = call(blk, 2, x, mask, NULL, NULL), ref = manual_block(blk, x, mask, pre, 1e-6, cfg.activation);
        as_tensor *plain = as_module_call1(blk, x);
        CHECK(y && ref && as_test_maxdiff(y, ref) < 1e-4);
        CHECK(y && plain && as_test_maxdiff(y, plain) > 1e-4);
        as_release(y), as_release(ref), as_release(plain), as_release(mask);

        as_tensor *bad = random_t(2, (int64_t[]){5, 12});
        CHECK_ERR(as_module_call1(blk, bad), "TransformerBlock: expected input (B, L, 12), got shape (5, 12)");
        as_release(bad), as_release(x), as_module_release(blk);
    }

    /* zero config fields take the defaults; dropout adds drop children that act in training only */
    as_block_config cfg = {.attn = {.dim = 8, .num_heads = 2}, .pre_norm = true, .dropout = 0.3};
    as_module *core = as_sdp_attention_new(NULL, AS_SDP_AUTO), *blk = as_transformer_block_new(&cfg, core);
    CHECK_OK(blk);
    CHECK(blk && child_names_are(blk, 5, (const char *const[]){"norm1", "attn", "drop", "norm2", "mlp"}));
    as_module *mlp = blk ? as_module_child(blk, "mlp") : NULL;
    CHECK(mlp && child_names_are(mlp, 4, (const char *const[]){"fc1", "act", "fc2", "drop"}));
    CHECK(mlp && strcmp(as_module_child(mlp, "act")->type_name, "GELU") == 0);
    CHECK(mlp && param(mlp, "fc1", "weight")->shape[0] == 32);
    as_tensor *x = random_t(3, (int64_t[]){1, 4, 8});
    as_module_train(blk, false);
    as_tensor *ye = as_module_call1(blk, x), *ref = manual_block(blk, x, NULL, true, 1e-5, AS_GELU);
    CHECK(ye && ref && as_test_maxdiff(ye, ref) < 1e-4);
    as_module_train(blk, true);
    as_tensor *yt = as_module_call1(blk, x);
    CHECK(yt && ye && as_test_maxdiff(yt, ye) > 1e-4);
    as_release(ye), as_release(yt), as_release(ref), as_release(x), as_module_release(blk);

    as_block_config badcfg = {.attn = {.dim = 10, .num_heads = 3}};
    CHECK_ERR(as_transformer_block_new(&badcfg, core), "TransformerBlock: dim (10) must be divisible by num_heads (3)");
    badcfg = (as_block_config){.attn = {.dim = 8, .num_heads = 2}, .dropout = 1};
    CHECK_ERR(as_transformer_block_new(&badcfg, core), "TransformerBlock: dropout must be in [0, 1)");
    badcfg = (as_block_config){.attn = {.dim = 8, .num_heads = 2}, .activation = AS_EXP};
    CHECK_ERR(as_transformer_block_new(&badcfg, core), "activation: ");
    CHECK(core->refcount == 1);
    as_module_release(core);
}

int main(void)
{
    as_manual_seed(0);
    test_linear();
    test_norms();
    test_embedding();
    test_dropout();
    test_activations();
    test_containers();
    test_sdp_random_shapes();
    test_sdp_causal();
    test_sdp_masks();
    test_sdp_strided();
    test_sdp_dropout();
    test_sdp_empty_head_dim();
    test_sdp_errors();
    test_mha();
    test_block();
    return as_test_report("test_layers");
}
