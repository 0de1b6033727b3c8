/* flash_attention against a naive double-precision reference (a quadruple
 * loop written here), on every vector path the CPU has: odd sizes, Lq != Lk,
 * causal KV-cache alignment, GQA, strided views, broadcast masks, additive
 * bias, empty tensors, bf16/f16, dropout; and the kernel's exp. */
#include <float.h>
#include <string.h>

#include "as_test.h"
#include "attention_flash.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

static const char *isas[3] = {"scalar", "avx2", "avx512"};
static bool have_isa[3];

/* ---- the reference ---- */

/* t[i0, i1, i2, i3] as double, t right-aligned and broadcast to 4-d. */
static double get4(const as_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    int64_t idx[4] = {i0, i1, i2, i3}, o = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != 1) o += idx[4 - t->ndim + d] * t->stride[d];
    return as_load_elem(as_data(t), t->dtype, o);
}

typedef struct {
    const as_tensor *q, *k, *v, *mask;
    bool causal;
    double scale; /* NaN: 1/sqrt(D) */
    float dropout;
    uint64_t seed;
} ref_case;

/* out (B, H, Lq, Dv) row-major, in double. */
static double *reference(const ref_case *c)
{
    const as_tensor *q = c->q, *k = c->k, *v = c->v;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv;
    double scale = isnan(c->scale) ? 1 / sqrt((double)D) : c->scale;
    double *out = calloc((size_t)(B * H * Lq * Dv) + 1, sizeof(double));
    double *s = malloc(((size_t)Lk + 1) * sizeof(double));
    uint32_t thr = as_attn_drop_threshold(c->dropout);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    double x = 0;
                    for (int64_t d = 0; d < D; d++)
                        x += get4(q, b, h, i, d) * get4(k, b, h / G, j, d);
                    x *= scale;
                    if (c->mask && c->mask->dtype == AS_BOOL)
                        x = get4(c->mask, b, h, i, j) != 0 ? x : -INFINITY;
                    else if (c->mask)
                        x += get4(c->mask, b, h, i, j);
                    if (c->causal && j > i + Lk - Lq) x = -INFINITY;
                    s[j] = x;
                    if (x > mx) mx = x;
                }
                double *o = out + ((b * H + h) * Lq + i) * Dv;
                if (mx == -INFINITY) continue; /* nothing to attend to: zeros */
                for (int64_t j = 0; j < Lk; j++) sum += s[j] = exp(s[j] - mx);
                uint32_t rk = as_attn_row_key(c->seed, H, Lq, b, h, i);
                for (int64_t j = 0; j < Lk; j++) {
                    double p = s[j] / sum;
                    if (c->dropout > 0)
                        p = as_attn_keep(rk, j, thr) ? p / (1 - (double)c->dropout) : 0;
                    for (int64_t e = 0; e < Dv; e++) o[e] += p * get4(v, b, h / G, j, e);
                }
            }
    free(s);
    return out;
}

/* max |out - ref| / max |ref|; the absolute error when ref is all zeros. */
static double rel_err(const as_tensor *out, const double *ref)
{
    double num = 0, den = 0;
    for (int64_t i = 0, n = as_numel(out); i < n; i++) {
        double a = as_load_elem(as_data(out), out->dtype, i), d = fabs(a - ref[i]);
        num = d > num || isnan(d) ? (isnan(d) ? INFINITY : d) : num;
        den = fmax(den, fabs(ref[i]));
    }
    return den > 0 ? num / den : num;
}

static int64_t n_cases;

/* Runs c through as_flash_attention on every path and checks it. */
static void check_case(const char *what, const ref_case *c, double tol)
{
    double *ref = reference(c);
    as_attention_opts o = {.causal = c->causal, .scale = c->scale, .dropout = 0.3};
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        as_tensor *out = as_flash_attention(c->q, c->k, c->v, c->mask, &o, false);
        CHECK_OK(out);
        if (!out) continue;
        n_cases++;
        CHECK(out->ndim == 4 && as_is_contiguous(out) && out->dtype == c->q->dtype);
        CHECK(out->shape[0] == c->q->shape[0] && out->shape[1] == c->q->shape[1] &&
              out->shape[2] == c->q->shape[2] && out->shape[3] == c->v->shape[3]);
        CHECK(!strncmp(as_flash_backend(), "flash/", 6) &&
              !strcmp(as_flash_backend() + 6, isas[p]));
        double err = rel_err(out, ref);
        if (!(err <= tol)) {
            char s1[64], s2[64];
            fprintf(stderr, "  %s [%s] q %s k %s causal=%d: rel err %.3g > %.3g\n", what, isas[p],
                    as_shape_str(s1, sizeof s1, 4, c->q->shape),
                    as_shape_str(s2, sizeof s2, 4, c->k->shape), c->causal, err, tol);
        }
        CHECK(err <= tol);
        as_release(out);
    }
    as_cpu_flash_force_isa(NULL);
    free(ref);
}

/* Random float32 (shape) in [-amp, amp]. */
static as_tensor *rnd(int ndim, const int64_t *shape, float amp)
{
    as_tensor *t = as_test_random(ndim, shape);
    float *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) p[i] *= amp;
    return t;
}

/* A (B, H, L, D) view of a contiguous (B, L, H, D) tensor, as a model's
 * projection produces it. */
static as_tensor *rnd_bhld_view(int64_t B, int64_t H, int64_t L, int64_t D, float amp)
{
    as_tensor *t = rnd(4, (int64_t[]){B, L, H, D}, amp);
    as_tensor *v = as_transpose(t, 1, 2);
    as_release(t);
    return v;
}

/* A bool tensor with keep probability pk. */
static as_tensor *rnd_bool(int ndim, const int64_t *shape, double pk)
{
    as_tensor *t = as_empty(ndim, shape, AS_BOOL, AS_CPU);
    uint8_t *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++)
        p[i] = (as_test_rand_u64() >> 11) * 0x1p-53 < pk;
    return t;
}

/* ---- cases ---- */

static void test_shapes(void)
{
    const int64_t lqs[] = {1, 7, 65, 130}, lks[] = {1, 33, 257}, ds[] = {1, 3, 64, 80, 128};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int d = 0; d < 5; d++)
                for (int causal = 0; causal < 2; causal++) {
                    int64_t Lq = lqs[a], Lk = lks[b], D = ds[d], Dv = d == 1 ? 5 : D;
                    as_tensor *q = rnd(4, (int64_t[]){1, 2, Lq, D}, 2);
                    as_tensor *k = rnd(4, (int64_t[]){1, 2, Lk, D}, 2);
                    as_tensor *v = rnd(4, (int64_t[]){1, 2, Lk, Dv}, 1);
                    ref_case c = {q, k, v, NULL, causal, NAN, 0, 0};
                    check_case("shapes", &c, 1e-5);
                    as_release(q), as_release(k), as_release(v);
                }
}

/* Keys whose K and V outgrow L2 (4200 x 128 floats): items take more query
 * columns (the long-sequence layout), with a tail block and causal. */
static void test_long_keys(void)
{
    for (int causal = 0; causal < 2; causal++) {
        as_tensor *q = rnd(4, (int64_t[]){1, 2, 300, 64}, 2);
        as_tensor *k = rnd(4, (int64_t[]){1, 1, 4200, 64}, 2);
        as_tensor *v = rnd(4, (int64_t[]){1, 1, 4200, 64}, 1);
        ref_case c = {q, k, v, NULL, causal, NAN, 0, 0};
        check_case("long keys", &c, 1e-5);
        as_release(q), as_release(k), as_release(v);
    }
}

static void test_gqa_and_views(void)
{
    const int64_t hkvs[] = {2, 1, 6};
    for (int g = 0; g < 3; g++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t B = 2, H = 6, Hkv = hkvs[g], Lq = 37, Lk = 150, D = 64;
            /* q, k, v as transposed views of (B, L, H, D) */
            as_tensor *q = rnd_bhld_view(B, H, Lq, D, 2);
            as_tensor *k = rnd_bhld_view(B, Hkv, Lk, D, 2);
            as_tensor *v = rnd_bhld_view(B, Hkv, Lk, 48, 1);
            CHECK(!as_is_contiguous(q) && (Hkv == 1 || !as_is_contiguous(k)));
            ref_case c = {q, k, v, NULL, causal, 0.2, 0, 0};
            check_case("gqa/strided", &c, 1e-5);
            as_release(q), as_release(k), as_release(v);
        }
    /* last dim not unit-stride: k from a (B, H, D, L) tensor; v a narrowed view */
    as_tensor *q = rnd(4, (int64_t[]){1, 4, 20, 16}, 2);
    as_tensor *kt = rnd(4, (int64_t[]){1, 2, 16, 300}, 2);
    as_tensor *k = as_transpose(kt, 2, 3);
    as_tensor *vw = rnd(4, (int64_t[]){1, 2, 300, 40}, 1);
    as_tensor *v = as_narrow(vw, 3, 5, 24);
    ref_case c = {q, k, v, NULL, true, NAN, 0, 0};
    check_case("k last-dim strided", &c, 1e-5);
    /* causal with Lq > Lk: the first Lq - Lk queries see nothing */
    as_tensor *k2 = as_narrow(k, 2, 0, 9), *v2 = as_narrow(v, 2, 0, 9);
    ref_case c2 = {q, k2, v2, NULL, true, NAN, 0, 0};
    check_case("causal Lq > Lk", &c2, 1e-5);
    as_tensor *out = as_flash_attention(q, k2, v2, NULL,
                                        &(as_attention_opts){.causal = true, .scale = NAN}, false);
    CHECK(out && as_get_flat(out, 0) == 0 && as_get_flat(out, 10 * 24 - 1) == 0);
    as_release(out), as_release(k2), as_release(v2);
    as_release(q), as_release(kt), as_release(k), as_release(vw), as_release(v);
}

static void test_masks(void)
{
    int64_t B = 2, H = 4, Lq = 70, Lk = 300, D = 32;
    as_tensor *q = rnd(4, (int64_t[]){B, H, Lq, D}, 2);
    as_tensor *k = rnd(4, (int64_t[]){B, 2, Lk, D}, 2);
    as_tensor *v = rnd(4, (int64_t[]){B, 2, Lk, D}, 1);

    /* full (B, H, Lq, Lk) keep-mask with some rows fully masked */
    as_tensor *m = rnd_bool(4, (int64_t[]){B, H, Lq, Lk}, 0.7);
    uint8_t *mp = as_data(m);
    for (int64_t r = 0; r < B * H * Lq; r += 7) memset(mp + r * Lk, 0, (size_t)Lk);
    ref_case c = {q, k, v, m, false, NAN, 0, 0};
    check_case("mask (B,H,Lq,Lk)", &c, 1e-5);
    c.causal = true;
    check_case("mask (B,H,Lq,Lk) causal", &c, 1e-5);
    as_tensor *out = as_flash_attention(q, k, v, m, NULL, false);
    CHECK(out && as_get_flat(out, 0) == 0 && as_get_flat(out, D - 1) == 0); /* row 0 masked */
    bool finite = true;
    for (int64_t i = 0; out && i < as_numel(out); i++) finite &= isfinite(as_get_flat(out, i));
    CHECK(finite);
    as_release(out), as_release(m);

    /* (Lq, Lk) shared by every batch and head */
    m = rnd_bool(2, (int64_t[]){Lq, Lk}, 0.5);
    c = (ref_case){q, k, v, m, true, NAN, 0, 0};
    check_case("mask (Lq,Lk)", &c, 1e-5);
    as_release(m);

    /* (B, 1, 1, Lk) padding: batch 0 keeps its first 200 keys, batch 1 none */
    m = as_zeros(4, (int64_t[]){B, 1, 1, Lk}, AS_BOOL, AS_CPU);
    memset(as_data(m), 1, 200);
    c = (ref_case){q, k, v, m, false, NAN, 0, 0};
    check_case("padding (B,1,1,Lk)", &c, 1e-5);
    out = as_flash_attention(q, k, v, m, NULL, false);
    double mx = 0;
    for (int64_t i = H * Lq * D; out && i < 2 * H * Lq * D; i++)
        mx = fmax(mx, fabs(as_get_flat(out, i)));
    CHECK(out && mx == 0); /* batch 1: zeros, not NaN */
    as_release(out), as_release(m);

    /* (B, 1, Lq, 1) and a 1-d (Lk) mask */
    m = rnd_bool(4, (int64_t[]){B, 1, Lq, 1}, 0.8);
    c = (ref_case){q, k, v, m, true, NAN, 0, 0};
    check_case("mask (B,1,Lq,1)", &c, 1e-5);
    as_release(m);
    /* per head, shared over queries: with GQA the G heads of a kv-head differ */
    m = rnd_bool(4, (int64_t[]){1, H, 1, Lk}, 0.6);
    c = (ref_case){q, k, v, m, false, NAN, 0, 0};
    check_case("mask (1,H,1,Lk)", &c, 1e-5);
    as_release(m);
    m = rnd_bool(1, (int64_t[]){Lk}, 0.6);
    c = (ref_case){q, k, v, m, false, NAN, 0, 0};
    check_case("mask (Lk)", &c, 1e-5);
    as_release(m);

    /* additive bias (H, Lq, Lk) with -inf entries and one all -inf row */
    as_tensor *bias = rnd(3, (int64_t[]){H, Lq, Lk}, 3);
    float *bp = as_data(bias);
    for (int64_t i = 0; i < H * Lq * Lk; i += 5) bp[i] = -INFINITY;
    for (int64_t j = 0; j < Lk; j++) bp[3 * Lk + j] = -INFINITY;
    c = (ref_case){q, k, v, bias, false, 0.5, 0, 0};
    check_case("bias (H,Lq,Lk)", &c, 1e-5);
    c.causal = true;
    check_case("bias causal", &c, 1e-5);
    /* the same bias as a strided view (transposed storage) */
    as_tensor *bt = rnd(3, (int64_t[]){H, Lk, Lq}, 3), *btv = as_transpose(bt, 1, 2);
    c = (ref_case){q, k, v, btv, false, NAN, 0, 0};
    check_case("bias strided", &c, 1e-5);
    /* bf16 bias with float32 inputs */
    as_tensor *b16 = as_to_dtype(bias, AS_BF16);
    c = (ref_case){q, k, v, b16, true, NAN, 0, 0};
    check_case("bias bf16", &c, 1e-5);
    as_release(bias), as_release(bt), as_release(btv), as_release(b16);
    as_release(q), as_release(k), as_release(v);
}

static void test_empty_and_half(void)
{
    /* Lq = 0, B = 0: empty results; Lk = 0: zeros */
    const int64_t shapes[3][3] = {{1, 0, 5}, {0, 4, 5}, {1, 4, 0}};
    for (int s = 0; s < 3; s++) {
        int64_t B = shapes[s][0], Lq = shapes[s][1], Lk = shapes[s][2];
        as_tensor *q = rnd(4, (int64_t[]){B, 2, Lq, 8}, 1);
        as_tensor *k = rnd(4, (int64_t[]){B, 2, Lk, 8}, 1);
        as_tensor *v = rnd(4, (int64_t[]){B, 2, Lk, 8}, 1);
        as_tensor *out = as_flash_attention(q, k, v, NULL, NULL, false);
        CHECK_OK(out);
        CHECK(out && out->shape[0] == B && out->shape[2] == Lq && out->shape[3] == 8);
        for (int64_t i = 0; out && i < as_numel(out); i++) CHECK(as_get_flat(out, i) == 0);
        as_release(out), as_release(q), as_release(k), as_release(v);
    }

    /* bf16 and f16: the reference reads the rounded inputs; the output is
     * rounded to the input dtype (half an ulp: 2^-9 and 2^-12) */
    as_dtype dts[2] = {AS_BF16, AS_F16};
    double tols[2] = {1.0 / 256, 1.0 / 2048};
    for (int t = 0; t < 2; t++) {
        as_tensor *q32 = rnd(4, (int64_t[]){2, 6, 65, 64}, 2),
                  *k32 = rnd_bhld_view(2, 2, 257, 64, 2);
        as_tensor *v32 = rnd(4, (int64_t[]){2, 2, 257, 80}, 1);
        as_tensor *q = as_to_dtype(q32, dts[t]), *k = as_to_dtype(k32, dts[t]),
                  *v = as_to_dtype(v32, dts[t]);
        ref_case c = {q, k, v, NULL, true, NAN, 0, 0};
        check_case(as_dtype_name(dts[t]), &c, tols[t]);
        /* k with a strided last dim: a transposed (B, Hkv, D, L) tensor */
        as_tensor *kt32 = rnd(4, (int64_t[]){2, 2, 64, 257}, 2), *kh = as_to_dtype(kt32, dts[t]);
        as_tensor *kv = as_transpose(kh, 2, 3);
        c.k = kv, c.causal = false;
        check_case("half, k last dim strided", &c, tols[t]);
        as_release(kt32), as_release(kh), as_release(kv);
        as_release(q32), as_release(k32), as_release(v32);
        as_release(q), as_release(k), as_release(v);
    }
}

/* Calls the kernel directly with a known dropout seed. */
static as_tensor *kernel_call(const as_tensor *q, const as_tensor *k, const as_tensor *v, float p,
                              uint64_t seed, int nthreads)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3], Dv = v->shape[3];
    as_tensor *out = as_empty(4, (int64_t[]){B, H, Lq, Dv}, AS_F32, AS_CPU);
    as_attn_params pr = {.B = B, .H = H, .Hkv = k->shape[1], .Lq = Lq, .Lk = k->shape[2],
                              .D = D, .Dv = Dv, .scale = 1 / sqrtf((float)D), .dropout = p,
                              .seed = seed, .out = as_data(out), .out_dtype = AS_F32};
    const as_tensor *in[3] = {q, k, v};
    as_attn_operand *op[3] = {&pr.q, &pr.k, &pr.v};
    for (int i = 0; i < 3; i++) {
        op[i]->data = as_data(in[i]), op[i]->dtype = in[i]->dtype;
        memcpy(op[i]->stride, in[i]->stride, sizeof op[i]->stride);
    }
    void *ws = malloc(as_cpu_flash_workspace_size(&pr, nthreads));
    as_cpu_flash_attention(&pr, ws, nthreads);
    free(ws);
    return out;
}

static void test_dropout(void)
{
    int64_t B = 2, H = 4, Lq = 100, Lk = 300, D = 16;
    as_tensor *q = rnd(4, (int64_t[]){B, H, Lq, D}, 2), *k = rnd(4, (int64_t[]){B, 2, Lk, D}, 2);
    as_tensor *v = rnd(4, (int64_t[]){B, 2, Lk, D}, 1);
    as_attention_opts o = {.scale = NAN, .dropout = 0.25};

    /* eval ignores dropout */
    as_tensor *ev = as_flash_attention(q, k, v, NULL, &o, false);
    as_tensor *plain = as_flash_attention(q, k, v, NULL, &(as_attention_opts){.scale = NAN}, false);
    CHECK(ev && plain && as_test_maxdiff(ev, plain) == 0);

    /* training: a function of the seed, whatever the path and threads */
    as_manual_seed(1234);
    as_tensor *t1 = as_flash_attention(q, k, v, NULL, &o, true);
    as_tensor *t2 = as_flash_attention(q, k, v, NULL, &o, true); /* the generator moved on */
    as_manual_seed(1234);
    as_tensor *t3 = as_flash_attention(q, k, v, NULL, &o, true);
    CHECK(t1 && t2 && t3);
    CHECK(t1 && t3 && as_test_maxdiff(t1, t3) == 0);
    CHECK(t1 && t2 && as_test_maxdiff(t1, t2) > 0.01);
    CHECK(t1 && as_test_maxdiff(t1, plain) > 0.01);
    as_release(ev), as_release(plain), as_release(t1), as_release(t2), as_release(t3);

    /* exact: the kernel with a known seed on every path against the reference */
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        ref_case c = {q, k, v, NULL, false, NAN, 0.25f, 99};
        double *ref = reference(&c);
        as_tensor *out = kernel_call(q, k, v, 0.25f, 99, 2);
        double err = rel_err(out, ref);
        if (!(err <= 1e-5)) fprintf(stderr, "  dropout [%s]: rel err %.3g\n", isas[p], err);
        CHECK(err <= 1e-5);
        /* more threads make smaller work items: the same bits all the same */
        as_tensor *o1 = kernel_call(q, k, v, 0.25f, 99, 1), *o8 = kernel_call(q, k, v, 0.25f, 99, 8);
        CHECK(!memcmp(as_data(o1), as_data(out), (size_t)as_numel(out) * sizeof(float)));
        CHECK(!memcmp(as_data(o8), as_data(out), (size_t)as_numel(out) * sizeof(float)));
        as_release(out), as_release(o1), as_release(o8), free(ref);
    }
    as_cpu_flash_force_isa(NULL);

    /* keep rate: equal scores and v = 1 make each output kept / (Lk (1 - p)) */
    as_tensor *q0 = as_zeros(4, (int64_t[]){B, H, Lq, D}, AS_F32, AS_CPU);
    as_tensor *v1 = as_full(4, (int64_t[]){B, 2, Lk, 1}, 1.0, AS_F32, AS_CPU);
    const double ps[3] = {0.1, 0.5, 0.9};
    for (int i = 0; i < 3; i++) {
        o.dropout = ps[i];
        as_tensor *out = as_flash_attention(q0, k, v1, NULL, &o, true);
        double mean = 0, zeros = 0;
        for (int64_t r = 0; out && r < as_numel(out); r++) mean += as_get_flat(out, r);
        mean /= (double)(B * H * Lq);
        /* n = 240000 draws: the kept fraction's sd is sqrt(p (1-p) / n) < 0.0011 */
        CHECK(out && fabs(mean - 1) * (1 - ps[i]) < 0.006);
        for (int64_t r = 0; out && r < as_numel(out); r++) zeros += as_get_flat(out, r) == 0;
        CHECK(ps[i] < 0.9 || zeros < 5); /* 0.9^300 */
        as_release(out);
    }
    as_release(q0), as_release(v1), as_release(q), as_release(k), as_release(v);
}

static void test_exp(void)
{
    static float x[1 << 16], y[1 << 16];
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        double worst = 0, at = 0;
        /* a dense sweep of [-87.3, 88] in blocks, odd lengths for the tails */
        const int64_t N = 4000000;
        for (int64_t i0 = 0; i0 < N; i0 += 65535) {
            int64_t n = N - i0 < 65535 ? N - i0 : 65535;
            for (int64_t i = 0; i < n; i++)
                x[i] = (float)(-87.33 + (88.0 + 87.33) * (double)(i0 + i) / (double)N);
            as_cpu_flash_exp(x, y, n);
            for (int64_t i = 0; i < n; i++) {
                double e = exp((double)x[i]), r = fabs(y[i] - e) / e;
                if (r > worst) worst = r, at = x[i];
            }
        }
        /* float32 rounding is 2^-24 = 6e-8 relative; allow two ulps */
        if (!(worst <= 2.4e-7))
            fprintf(stderr, "  exp [%s]: rel err %.3g at %.7g\n", isas[p], worst, at);
        CHECK(worst <= 2.4e-7);
        float sp[7] = {-INFINITY, -1000, -87.5f, 0, NAN, -0.0f, 1}, r[7];
        as_cpu_flash_exp(sp, r, 7);
        CHECK(r[0] == 0 && r[1] == 0 && r[2] == 0 && r[3] == 1 && isnan(r[4]) && r[5] == 1);
        CHECK(fabs(r[6] - 2.718281828) < 3e-7);
        printf("  exp [%s]: max rel err %.3g (%.2f ulp of 2^-24)\n", isas[p], worst,
               worst / 0x1p-24);
    }
    as_cpu_flash_force_isa(NULL);
}

static void test_errors(void)
{
    as_tensor *q = rnd(4, (int64_t[]){1, 4, 8, 16}, 1), *k = rnd(4, (int64_t[]){1, 3, 8, 16}, 1);
    as_tensor *k2 = rnd(4, (int64_t[]){1, 2, 8, 16}, 1), *k3 = rnd(4, (int64_t[]){1, 2, 8, 8}, 1);
    as_tensor *bad = rnd(3, (int64_t[]){4, 8, 16}, 1), *m = rnd(2, (int64_t[]){8, 5}, 1);
    as_tensor *mi = as_zeros(2, (int64_t[]){8, 8}, AS_I32, AS_CPU);
    struct {
        as_tensor *q, *k, *v, *m;
        double dropout;
        const char *msg;
    } cases[] = {
        {q, k, k, NULL, 0, "multiple of the key/value heads"},
        {q, k3, k3, NULL, 0, "same head dimension"},
        {bad, k2, k2, NULL, 0, "must be 4-d"},
        {q, k2, k2, m, 0, "not broadcastable"},
        {q, k2, k2, mi, 0, "bool (keep) or floating point"},
        {q, k2, k2, NULL, 1.0, "dropout must be in [0, 1)"},
        {q, NULL, k2, NULL, 0, "k must be a Tensor"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        as_attention_opts o = {.scale = NAN, .dropout = cases[i].dropout};
        as_tensor *r = as_flash_attention(cases[i].q, cases[i].k, cases[i].v, cases[i].m, &o, true);
        CHECK(r == NULL);
        CHECK(!strncmp(as_error_get(), "flash_attention: ", 17) &&
              strstr(as_error_get(), cases[i].msg));
        if (r || !strstr(as_error_get(), cases[i].msg))
            fprintf(stderr, "  got: %s\n", as_error_get());
    }
    as_tensor *qi = as_zeros(4, (int64_t[]){1, 2, 8, 16}, AS_I32, AS_CPU);
    CHECK(as_flash_attention(qi, qi, qi, NULL, NULL, false) == NULL);
    CHECK(strstr(as_error_get(), "floating point of one dtype") != NULL);
    CHECK(as_cpu_flash_force_isa("sse9") == -1);
    as_release(q), as_release(k), as_release(k2), as_release(k3), as_release(bad), as_release(m);
    as_release(mi), as_release(qi);
}

int main(void)
{
    for (int p = 0; p < 3; p++) {
        have_isa[p] = as_cpu_flash_force_isa(isas[p]) == 0;
        printf("  path %s: %s\n", isas[p], have_isa[p] ? "tested" : "not on this CPU, skipped");
    }
    as_cpu_flash_force_isa(NULL);
    CHECK(have_isa[0]);
    test_exp();
    test_shapes();
    test_long_keys();
    test_gqa_and_views();
    test_masks();
    test_empty_and_half();
    test_dropout();
    test_errors();
    printf("  %lld kernel runs compared with the reference\n", (long long)n_cases);
    return as_test_report("test_attention_flash");
}
