/* The reweight attention kernels (relative/T5/ALiBi, adaptive span, entmax,
 * sigmoid, gated, cosine, flex's tile step) against naive double-precision
 * loops written here: odd lengths, Lq != Lk (both ways), several query
 * blocks, B and H > 1, GQA, Dv != D, bool / float / broadcast masks, rows
 * with nothing to attend to, float16 inputs; plus T5's bucket table,
 * ALiBi's slopes, entmax's sort-based paths against bisection, and errors. */
#include <string.h>

#include "as_test.h"
#include "attnswap/attention_reweight.h"
#include "zoo_reweight.h" /* the kernels' own helpers, tested directly */

enum { SOFT, REL, ADA, ENT, SIG, GATE, COS };

typedef struct {
    int kind;
    bool causal;
    double scale;
    const as_tensor *mask;
    /* REL: bias(h, rel) = table[h * W + rel + Lk - 1] */
    const double *table;
    /* ADA */
    const double *span;
    double ramp;
    /* ENT */
    double alpha;
    /* SIG */
    double bias;
    /* GATE: w (H, D, G), b (H, G) */
    const float *gw, *gb;
    int64_t G;
    /* COS: per-head gain */
    const double *gain;
} naive_case;

/* t[i0, i1, i2, i3] as double, t right-aligned and broadcast to 4-d. */
static double get4(const as_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    int64_t idx[4] = {i0, i1, i2, i3}, o = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != 1) o += idx[4 - t->ndim + d] * t->stride[d];
    return as_load_elem(as_data(t), t->dtype, o);
}

/* ---- naive normalisers, in double ---- */

static void naive_softmax(double *s, int64_t n)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    for (int64_t j = 0; j < n; j++) s[j] = mx == -INFINITY ? 0 : exp(s[j] - mx), sum += s[j];
    for (int64_t j = 0; j < n; j++) s[j] = sum > 0 ? s[j] / sum : 0;
}

/* Sparsemax without sorting (Martins & Astudillo 2016): z_i is in the
 * support iff 1 + k_i z_i > sum_{z_j >= z_i} z_j, k_i = #{j : z_j >= z_i}. */
static void naive_sparsemax(double *z, int64_t n)
{
    double tot = 0, mx = -INFINITY;
    int64_t cnt = 0;
    for (int64_t j = 0; j < n; j++) mx = z[j] > mx ? z[j] : mx;
    if (mx == -INFINITY) {
        for (int64_t j = 0; j < n; j++) z[j] = 0;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        if (z[i] == -INFINITY) continue;
        double S = 0;
        int64_t k = 0;
        for (int64_t j = 0; j < n; j++)
            if (z[j] >= z[i]) S += z[j], k++;
        if (1 + (double)k * z[i] > S) tot += z[i], cnt++;
    }
    double tau = (tot - 1) / (double)cnt;
    for (int64_t j = 0; j < n; j++) z[j] = z[j] - tau > 0 ? z[j] - tau : 0;
}

/* alpha-entmax by plain bisection on tau over every entry, 200 steps. */
static void naive_entmax_bisect(double *z, int64_t n, double alpha)
{
    double mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = z[j] > mx ? z[j] : mx;
    if (mx == -INFINITY) {
        for (int64_t j = 0; j < n; j++) z[j] = 0;
        return;
    }
    double am1 = alpha - 1, lo = am1 * mx - 1, hi = am1 * mx, sum = 0;
    for (int it = 0; it < 200; it++) {
        double mid = (lo + hi) / 2, f = -1;
        for (int64_t j = 0; j < n; j++) {
            double d = am1 * z[j] - mid;
            if (d > 0) f += pow(d, 1 / am1);
        }
        if (f >= 0) lo = mid; else hi = mid;
    }
    for (int64_t j = 0; j < n; j++) {
        double d = am1 * z[j] - lo;
        z[j] = d > 0 ? pow(d, 1 / am1) : 0;
        sum += z[j];
    }
    for (int64_t j = 0; j < n; j++) z[j] /= sum;
}

static void naive_entmax(double *z, int64_t n, double alpha)
{
    if (alpha == 1) naive_softmax(z, n);
    else if (alpha == 2) naive_sparsemax(z, n);
    else naive_entmax_bisect(z, n, alpha);
}

/* out (B, H, Lq, Dv) in double. */
static double *naive(const naive_case *c, const as_tensor *q, const as_tensor *k, const as_tensor *v)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv, off = Lk - Lq;
    double scale = isnan(c->scale) ? 1 / sqrt((double)D) : c->scale;
    double *out = calloc((size_t)(B * H * Lq * Dv) + 1, sizeof(double));
    double *s = malloc(((size_t)Lk + 1) * sizeof(double)), *mz = malloc(((size_t)Lk + 1) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double qn = 0, *o = out + ((b * H + h) * Lq + i) * Dv;
                for (int64_t d = 0; d < D; d++) qn += get4(q, b, h, i, d) * get4(q, b, h, i, d);
                for (int64_t j = 0; j < Lk; j++) {
                    double x = 0, kn = 0;
                    for (int64_t d = 0; d < D; d++) {
                        x += get4(q, b, h, i, d) * get4(k, b, h / G, j, d);
                        kn += get4(k, b, h / G, j, d) * get4(k, b, h / G, j, d);
                    }
                    if (c->kind == COS) x = x / fmax(sqrt(qn), 1e-12) / fmax(sqrt(kn), 1e-12) * c->gain[h];
                    else x *= scale;
                    if (c->kind == REL) x += c->table[h * (Lq + Lk - 1) + (j - (i + off)) + Lk - 1];
                    if (c->mask && c->mask->dtype == AS_BOOL) x = get4(c->mask, b, h, i, j) != 0 ? x : -INFINITY;
                    else if (c->mask) x += get4(c->mask, b, h, i, j);
                    if (c->causal && j > i + off) x = -INFINITY;
                    s[j] = x;
                }
                switch (c->kind) {
                case ADA: {
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < Lk; j++) {
                        double x = (double)(i + off - j);
                        if (!c->causal) x = fabs(x);
                        mz[j] = fmin(fmax((c->ramp + c->span[h] - x) / c->ramp, 0), 1);
                        if (mz[j] > 0 && s[j] > mx) mx = s[j];
                    }
                    for (int64_t j = 0; j < Lk; j++) {
                        s[j] = mx == -INFINITY || mz[j] == 0 ? 0 : mz[j] * exp(s[j] - mx);
                        sum += s[j];
                    }
                    for (int64_t j = 0; j < Lk; j++) s[j] = sum > 0 ? s[j] / sum : 0;
                    break;
                }
                case ENT: naive_entmax(s, Lk, c->alpha); break;
                case SIG:
                    for (int64_t j = 0; j < Lk; j++) s[j] = 1 / (1 + exp(-(s[j] + c->bias)));
                    break;
                default: naive_softmax(s, Lk);
                }
                for (int64_t j = 0; j < Lk; j++)
                    for (int64_t e = 0; e < Dv; e++) o[e] += s[j] * get4(v, b, h / G, j, e);
                if (c->kind == GATE) {
                    for (int64_t e = 0; e < Dv; e++) {
                        int64_t g = c->G == 1 ? 0 : e;
                        double a = c->gb[h * c->G + g];
                        for (int64_t d = 0; d < D; d++) a += get4(q, b, h, i, d) * c->gw[(h * D + d) * c->G + g];
                        o[e] *= 1 / (1 + exp(-a));
                    }
                }
            }
    free(s), free(mz);
    return out;
}

static double maxdiff_ref(const as_tensor *got, const double *ref)
{
    double m = 0;
    for (int64_t i = 0, n = as_numel(got); i < n; i++) {
        double d = fabs(as_get_flat(got, i) - ref[i]);
        m = isnan(d) || d > m ? (isnan(d) ? INFINITY : d) : m;
    }
    return m;
}

/* ---- shapes ---- */

typedef struct {
    int64_t B, H, Hkv, Lq, Lk, D, Dv;
    bool causal;
    int mask; /* 0 none, 1 bool (B, 1, Lq, Lk) with an empty row, 2 float (H, Lq, Lk), 3 bool (Lk) */
} shape_case;

static const shape_case shapes[] = {
    {2, 4, 2, 37, 53, 12, 9, false, 0},  {2, 4, 2, 37, 53, 12, 9, true, 1},
    {1, 3, 3, 77, 101, 8, 8, true, 2},   {2, 2, 1, 45, 30, 16, 5, true, 0},
    {2, 4, 4, 66, 66, 7, 11, false, 1},  {1, 6, 2, 13, 140, 10, 10, false, 3},
    {1, 2, 2, 130, 129, 6, 6, true, 3},  {3, 2, 1, 1, 57, 16, 16, true, 2},
};

typedef struct {
    as_tensor *q, *k, *v, *mask;
} inputs;

static inputs make_inputs(const shape_case *s)
{
    inputs in = {0};
    in.q = as_test_random(4, (int64_t[]){s->B, s->H, s->Lq, s->D});
    in.k = as_test_random(4, (int64_t[]){s->B, s->Hkv, s->Lk, s->D});
    in.v = as_test_random(4, (int64_t[]){s->B, s->Hkv, s->Lk, s->Dv});
    /* scores of a useful spread */
    as_tensor *t = as_binary_scalar(AS_MUL, in.q, 3.0, false);
    as_release(in.q), in.q = t;
    if (s->mask == 1) {
        in.mask = as_empty(4, (int64_t[]){s->B, 1, s->Lq, s->Lk}, AS_BOOL, AS_CPU);
        bool *m = as_data(in.mask);
        for (int64_t i = 0, n = as_numel(in.mask); i < n; i++) m[i] = as_test_randint(0, 3) != 0;
        for (int64_t j = 0; j < s->Lk; j++) m[2 * s->Lk + j] = false; /* row 2 of batch 0: nothing */
    } else if (s->mask == 2) {
        in.mask = as_test_random(3, (int64_t[]){s->H, s->Lq, s->Lk});
        float *m = as_data(in.mask);
        for (int64_t i = 0, n = as_numel(in.mask); i < n; i++) m[i] = m[i] < -0.8f ? -INFINITY : 2 * m[i];
    } else if (s->mask == 3) {
        in.mask = as_empty(1, (int64_t[]){s->Lk}, AS_BOOL, AS_CPU);
        bool *m = as_data(in.mask);
        for (int64_t j = 0; j < s->Lk; j++) m[j] = j % 5 != 3;
    }
    return in;
}

static void free_inputs(inputs *in)
{
    as_release(in->q), as_release(in->k), as_release(in->v), as_release(in->mask);
}

static void check_against(const char *what, const as_tensor *got, naive_case *nc, const inputs *in,
                          const shape_case *s, double tol)
{
    CHECK_OK(got);
    if (!got) return;
    CHECK(got->ndim == 4 && got->shape[0] == s->B && got->shape[1] == s->H && got->shape[2] == s->Lq &&
          got->shape[3] == s->Dv);
    double *ref = naive(nc, in->q, in->k, in->v);
    double d = maxdiff_ref(got, ref);
    if (!(d <= tol)) {
        as_test_failures++;
        fprintf(stderr, "%s: B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld causal=%d mask=%d: max diff %g > %g\n",
                what, (long long)s->B, (long long)s->H, (long long)s->Hkv, (long long)s->Lq, (long long)s->Lk,
                (long long)s->D, s->causal, s->mask, d, tol);
    }
    as_test_checks++;
    free(ref);
}

/* ---- per mechanism ---- */

static void test_relative(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    int64_t H = s->H, W = s->Lq + s->Lk - 1, nb = 32;
    /* T5: random bias per bucket and head */
    as_tensor *bias = as_test_random(2, (int64_t[]){nb, H});
    const float *bw = as_data(bias);
    double *table = malloc((size_t)(H * W) * sizeof(double));
    bool bidir = !s->causal;
    for (int64_t t = 0; t < W; t++)
        for (int64_t h = 0; h < H; h++)
            table[h * W + t] = bw[as_cpu_t5_bucket(t - (s->Lk - 1), bidir, nb, 128) * H + h];
    as_relative_opts r = {.bidirectional = bidir, .num_buckets = nb, .max_distance = 128};
    naive_case nc = {.kind = REL, .causal = s->causal, .scale = NAN, .mask = in->mask, .table = table};
    as_tensor *got = as_relative_attention(in->q, in->k, in->v, in->mask, &o, &r, bias, false);
    check_against("relative/t5", got, &nc, in, s, 2e-5);
    as_release(got);
    /* ALiBi: -slope_h |j - i'| */
    float slopes[16];
    as_cpu_alibi_slopes(H, slopes);
    for (int64_t t = 0; t < W; t++)
        for (int64_t h = 0; h < H; h++) table[h * W + t] = -(double)slopes[h] * fabs((double)(t - (s->Lk - 1)));
    r.alibi = true;
    got = as_relative_attention(in->q, in->k, in->v, in->mask, &o, &r, NULL, false);
    check_against("relative/alibi", got, &nc, in, s, 2e-5);
    as_release(got);
    as_release(bias);
    free(table);
}

static void test_adaptive(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    double max_span = 40, ramp = 7, span[16];
    as_tensor *sp = as_empty(1, (int64_t[]){s->H}, AS_F32, AS_CPU);
    float *f = as_data(sp);
    for (int64_t h = 0; h < s->H; h++) {
        f[h] = h == 0 ? -0.5f : h == 1 ? 1.5f : (float)h / (float)s->H * 0.9f; /* clamped to [0, 1] */
        span[h] = fmin(fmax(f[h], 0), 1) * max_span;
        span[h] = (double)(float)span[h];
    }
    naive_case nc = {.kind = ADA, .causal = s->causal, .scale = NAN, .mask = in->mask, .span = span, .ramp = ramp};
    as_tensor *got = as_adaptive_attention(in->q, in->k, in->v, in->mask, &o, sp, max_span, ramp, false);
    check_against("adaptive", got, &nc, in, s, 2e-5);
    as_release(got);
    /* a span covering every distance is softmax attention */
    for (int64_t h = 0; h < s->H; h++) f[h] = 1;
    as_tensor *full = as_adaptive_attention(in->q, in->k, in->v, in->mask, &o, sp, 400, 1, false);
    as_tensor *ref = as_sdp_attention(in->q, in->k, in->v, in->mask, &o, false);
    CHECK_OK(full);
    CHECK_OK(ref);
    if (full && ref) CHECK(as_test_maxdiff(full, ref) < 1e-5);
    as_release(full), as_release(ref), as_release(sp);
}

static void test_entmax(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    const double alphas[] = {1.5, 2, 1.25, 1.8, 1};
    for (int a = 0; a < 5; a++) {
        naive_case nc = {.kind = ENT, .causal = s->causal, .scale = NAN, .mask = in->mask, .alpha = alphas[a]};
        as_tensor *got = as_entmax_attention(in->q, in->k, in->v, in->mask, &o, alphas[a], NULL, false);
        char what[32];
        snprintf(what, sizeof what, "entmax alpha=%g", alphas[a]);
        check_against(what, got, &nc, in, s, 2e-5);
        as_release(got);
    }
    /* learned per head: pre_alpha = 0 is alpha = 1.5 exactly */
    as_tensor *pre = as_zeros(1, (int64_t[]){s->H}, AS_F32, AS_CPU);
    as_tensor *a = as_entmax_attention(in->q, in->k, in->v, in->mask, &o, 1.5, pre, false);
    as_tensor *b = as_entmax_attention(in->q, in->k, in->v, in->mask, &o, 1.5, NULL, false);
    CHECK_OK(a);
    if (a && b) CHECK(as_test_maxdiff(a, b) == 0);
    as_release(a), as_release(b), as_release(pre);
}

static void test_sigmoid(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    naive_case nc = {.kind = SIG, .causal = s->causal, .scale = NAN, .mask = in->mask, .bias = -log((double)s->Lk)};
    as_tensor *got = as_sigmoid_attention(in->q, in->k, in->v, in->mask, &o, NAN, false);
    check_against("sigmoid", got, &nc, in, s, 2e-5);
    as_release(got);
    nc.bias = 1.5;
    got = as_sigmoid_attention(in->q, in->k, in->v, in->mask, &o, 1.5, false);
    check_against("sigmoid bias", got, &nc, in, s, 2e-5);
    as_release(got);
}

static void test_gated(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    int64_t Gs[2] = {1, s->Dv};
    for (int gi = 0; gi < 2; gi++) {
        int64_t G = Gs[gi];
        as_tensor *w = as_test_random(3, (int64_t[]){s->H, s->D, G});
        as_tensor *b = as_test_random(2, (int64_t[]){s->H, G});
        naive_case nc = {.kind = GATE, .causal = s->causal, .scale = NAN, .mask = in->mask,
                         .gw = as_data(w), .gb = as_data(b), .G = G};
        as_tensor *got = as_gated_attention(in->q, in->k, in->v, in->mask, &o, w, b, false);
        check_against(G == 1 ? "gated/headwise" : "gated/elementwise", got, &nc, in, s, 2e-5);
        as_release(got), as_release(w), as_release(b);
    }
}

static void test_cosine(const shape_case *s, const inputs *in)
{
    as_attention_opts o = {.causal = s->causal, .scale = NAN};
    as_tensor *ls = as_empty(3, (int64_t[]){s->H, 1, 1}, AS_F32, AS_CPU);
    float *l = as_data(ls);
    double gain[16];
    for (int64_t h = 0; h < s->H; h++) {
        l[h] = (float)(h == 0 ? 7.0 : log(10.0) + 0.3 * (double)h); /* head 0 clamped at log(100) */
        gain[h] = exp(fmin((double)l[h], log(100.0)));
    }
    naive_case nc = {.kind = COS, .causal = s->causal, .scale = NAN, .mask = in->mask, .gain = gain};
    as_tensor *got = as_cosine_attention(in->q, in->k, in->v, in->mask, &o, ls, log(100.0), false);
    check_against("cosine", got, &nc, in, s, 5e-5);
    as_release(got), as_release(ls);
}

/* flex's step, driven over tiles of 16 keys like the Lua loop, vs softmax */
static void test_flex_step(const shape_case *s, const inputs *in)
{
    if (s->mask) return; /* the Lua side applies masks; the step only sees scores */
    int64_t B = s->B, H = s->H, Hkv = s->Hkv, Lq = s->Lq, Lk = s->Lk, D = s->D, Dv = s->Dv, G = H / Hkv;
    int64_t off = Lk - Lq, bk = 16;
    double scale = 1 / sqrt((double)D);
    as_tensor *acc = as_zeros(4, (int64_t[]){B, H, Lq, Dv}, AS_F32, AS_CPU);
    as_tensor *m = as_full(3, (int64_t[]){B, H, Lq}, -INFINITY, AS_F32, AS_CPU);
    as_tensor *l = as_zeros(3, (int64_t[]){B, H, Lq}, AS_F32, AS_CPU);
    const float *q = as_data(in->q), *k = as_data(in->k);
    for (int64_t j0 = 0; j0 < Lk; j0 += bk) {
        int64_t n = Lk - j0 < bk ? Lk - j0 : bk;
        as_tensor *st = as_empty(4, (int64_t[]){B, H, Lq, n}, AS_F32, AS_CPU);
        float *sp = as_data(st);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < Lq; i++)
                    for (int64_t c = 0; c < n; c++) {
                        double x = 0;
                        for (int64_t d = 0; d < D; d++)
                            x += q[((b * H + h) * Lq + i) * D + d] * k[((b * Hkv + h / G) * Lk + j0 + c) * D + d];
                        bool vis = !s->causal || j0 + c <= i + off;
                        sp[((b * H + h) * Lq + i) * n + c] = vis ? (float)(x * scale) : -INFINITY;
                    }
        as_tensor *vt = as_narrow(in->v, 2, j0, n); /* a strided view */
        CHECK(as_flex_step(acc, m, l, st, vt, NULL, 1.0) == 0);
        as_release(st), as_release(vt);
    }
    as_tensor *got = as_flex_finish(acc, l, AS_F32);
    naive_case nc = {.kind = SOFT, .causal = s->causal, .scale = NAN};
    inputs plain = {in->q, in->k, in->v, NULL};
    check_against("flex step", got, &nc, &plain, s, 2e-5);
    as_release(got), as_release(acc), as_release(m), as_release(l);
}

/* ---- pieces ---- */

static void test_t5_buckets(void)
{
    /* transformers' _relative_position_bucket, num_buckets 32, max_distance 128 */
    const int64_t rel[] = {0, 1, -1, -7, -8, -9, 7, 8, 20, -20, 127, -128, -1000, 1000};
    const int64_t bi[] = {0, 17, 1, 7, 8, 8, 23, 24, 26, 10, 31, 15, 15, 31};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) CHECK(as_cpu_t5_bucket(rel[i], true, 32, 128) == bi[i]);
    const int64_t rel1[] = {0, 1, 5, -1, -15, -16, -17, -50, -127, -128, -1000};
    const int64_t uni[] = {0, 0, 0, 1, 15, 16, 16, 24, 31, 31, 31};
    for (size_t i = 0; i < sizeof rel1 / sizeof rel1[0]; i++) CHECK(as_cpu_t5_bucket(rel1[i], false, 32, 128) == uni[i]);
}

static void test_alibi_slopes(void)
{
    float s[16];
    as_cpu_alibi_slopes(8, s);
    for (int i = 0; i < 8; i++) CHECK(s[i] == ldexpf(1, -(i + 1)));
    /* 6 heads: the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8, then 8-head slopes 0 and 2: 2^-1, 2^-3 */
    as_cpu_alibi_slopes(6, s);
    const float want6[6] = {0.25f, 0.0625f, 0.015625f, 0.00390625f, 0.5f, 0.125f};
    for (int i = 0; i < 6; i++) CHECK(s[i] == want6[i]);
    as_cpu_alibi_slopes(1, s);
    CHECK(s[0] == ldexpf(1, -8));
    as_cpu_alibi_slopes(12, s); /* 8 heads' slopes, then 16 heads' 0, 2, 4, 6 */
    CHECK(s[7] == ldexpf(1, -8));
    CHECK_NEAR(s[8], pow(2, -0.5), 1e-7);
    CHECK_NEAR(s[11], pow(2, -3.5), 1e-7);
}

static void test_entmax_rows(void)
{
    enum { N = 300 };
    static double scratch[2 * N], ref[N];
    static float x[N], y[N];
    for (int trial = 0; trial < 200; trial++) {
        int64_t n = as_test_randint(1, trial % 2 ? 64 : N); /* long rows: the quicksort path */
        double spread = trial % 3 == 0 ? 0.2 : trial % 3 == 1 ? 3 : 20;
        for (int64_t j = 0; j < n; j++) {
            x[j] = (float)(as_test_randf() * spread);
            if (trial % 5 == 0) x[j] = roundf(x[j] * 4) / 4; /* ties */
            if (n > 2 && as_test_randint(0, 9) == 0) x[j] = -INFINITY;
        }
        const double alphas[] = {1.5, 2, 1.1, 1.7};
        for (int a = 0; a < 4; a++) {
            memcpy(y, x, sizeof y);
            for (int64_t j = 0; j < n; j++) ref[j] = x[j];
            as_cpu_entmax_row(y, n, alphas[a], scratch);
            naive_entmax(ref, n, alphas[a]);
            double d = 0, sum = 0;
            bool zeros_ok = true;
            for (int64_t j = 0; j < n; j++) {
                d = fmax(d, fabs(y[j] - ref[j]));
                sum += y[j];
                if (x[j] == -INFINITY && y[j] != 0) zeros_ok = false;
            }
            bool all_masked = true;
            for (int64_t j = 0; j < n; j++) all_masked = all_masked && x[j] == -INFINITY;
            CHECK(d < 2e-6);
            CHECK(zeros_ok);
            if (!all_masked) CHECK_NEAR(sum, 1.0, 1e-6);
        }
    }
    /* sparsemax of a clear winner is one-hot; entmax-1.5 of (0, 0) is (1/2, 1/2) */
    float a[3] = {5, 0, 0.5f}, b[2] = {0, 0};
    as_cpu_entmax_row(a, 3, 2, scratch);
    CHECK(a[0] == 1 && a[1] == 0 && a[2] == 0);
    as_cpu_entmax_row(b, 2, 1.5, scratch);
    CHECK_NEAR(b[0], 0.5, 1e-7);
    CHECK_NEAR(b[1], 0.5, 1e-7);
    float c[3] = {-INFINITY, -INFINITY, -INFINITY};
    as_cpu_entmax_row(c, 3, 1.5, scratch);
    CHECK(c[0] == 0 && c[1] == 0 && c[2] == 0);

    /* the tensor op along a non-last dim */
    as_tensor *t = as_test_random(3, (int64_t[]){3, 7, 2});
    as_tensor *e = as_entmax(t, 1, 2.0);
    CHECK_OK(e);
    if (e) {
        for (int64_t i = 0; i < 3; i++)
            for (int64_t kk = 0; kk < 2; kk++) {
                double sum = 0;
                for (int64_t j = 0; j < 7; j++) sum += as_get_flat(e, (i * 7 + j) * 2 + kk);
                CHECK_NEAR(sum, 1.0, 1e-6);
            }
    }
    as_release(e), as_release(t);
}

static void test_errors(void)
{
    as_tensor *q = as_test_random(4, (int64_t[]){1, 4, 5, 8});
    as_tensor *k = as_test_random(4, (int64_t[]){1, 3, 5, 8});
    as_tensor *k2 = as_test_random(4, (int64_t[]){1, 2, 5, 8});
    as_attention_opts o = {.scale = NAN};
    CHECK(!as_sigmoid_attention(q, k, k, NULL, &o, NAN, false));
    CHECK(strstr(as_error_get(), "sigmoid_attention: the query heads (4) must be a multiple") != NULL);
    as_tensor *bias = as_zeros(2, (int64_t[]){32, 8}, AS_F32, AS_CPU);
    as_relative_opts r = {.bidirectional = true, .num_buckets = 32, .max_distance = 128};
    CHECK(!as_relative_attention(q, k2, k2, NULL, &o, &r, bias, false));
    CHECK(strstr(as_error_get(), "relative_attention: the bias was made for 8 heads") != NULL);
    as_tensor *span = as_zeros(1, (int64_t[]){3}, AS_F32, AS_CPU);
    CHECK(!as_adaptive_attention(q, k2, k2, NULL, &o, span, 10, 2, false));
    CHECK(strstr(as_error_get(), "adaptive_attention: the span was made for 3 heads") != NULL);
    CHECK(!as_adaptive_attention(q, k2, k2, NULL, &o, span, 10, 0, false));
    CHECK(strstr(as_error_get(), "adaptive_attention: ramp must be") != NULL);
    CHECK(!as_entmax_attention(q, k2, k2, NULL, &o, 2.5, NULL, false));
    CHECK(strstr(as_error_get(), "entmax_attention: alpha must be a number in [1, 2]") != NULL);
    as_tensor *badmask = as_zeros(2, (int64_t[]){4, 4}, AS_BOOL, AS_CPU);
    CHECK(!as_entmax_attention(q, k2, k2, badmask, &o, 1.5, NULL, false));
    CHECK(strstr(as_error_get(), "entmax_attention: mask of shape (4, 4) is not broadcastable") != NULL);
    as_tensor *w = as_zeros(3, (int64_t[]){4, 8, 3}, AS_F32, AS_CPU), *b = as_zeros(2, (int64_t[]){4, 3}, AS_F32, AS_CPU);
    CHECK(!as_gated_attention(q, k2, k2, NULL, &o, w, b, false));
    CHECK(strstr(as_error_get(), "gated_attention: the gate has 3 outputs per head") != NULL);
    CHECK(!as_cosine_attention(q, k2, k2, NULL, &o, NULL, log(100.0), false));
    CHECK(strstr(as_error_get(), "cosine_attention: logit_scale must be a Tensor") != NULL);
    as_tensor *q3 = as_test_random(3, (int64_t[]){4, 5, 8});
    CHECK(!as_sigmoid_attention(q3, k2, k2, NULL, &o, NAN, false));
    CHECK(strstr(as_error_get(), "sigmoid_attention: q must be 4-d") != NULL);
    as_release(q), as_release(k), as_release(k2), as_release(bias), as_release(span), as_release(badmask);
    as_release(w), as_release(b), as_release(q3);
}

/* float16 in, float16 out, same numbers as float32 in up to rounding */
static void test_half(void)
{
    as_tensor *q = as_test_random(4, (int64_t[]){1, 2, 9, 8}), *k = as_test_random(4, (int64_t[]){1, 2, 11, 8});
    as_tensor *qh = as_to_dtype(q, AS_F16), *kh = as_to_dtype(k, AS_F16);
    as_tensor *q2 = as_to_dtype(qh, AS_F32), *k2 = as_to_dtype(kh, AS_F32);
    as_attention_opts o = {.causal = true, .scale = NAN};
    as_tensor *a = as_sigmoid_attention(qh, kh, kh, NULL, &o, NAN, false);
    as_tensor *b = as_sigmoid_attention(q2, k2, k2, NULL, &o, NAN, false);
    CHECK_OK(a);
    if (a && b) {
        CHECK(a->dtype == AS_F16);
        CHECK(as_test_maxdiff(a, b) < 2e-3);
    }
    as_release(q), as_release(k), as_release(qh), as_release(kh), as_release(q2), as_release(k2);
    as_release(a), as_release(b);
}

int main(void)
{
    as_manual_seed(7);
    test_t5_buckets();
    test_alibi_slopes();
    test_entmax_rows();
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        inputs in = make_inputs(&shapes[i]);
        test_relative(&shapes[i], &in);
        test_adaptive(&shapes[i], &in);
        test_entmax(&shapes[i], &in);
        test_sigmoid(&shapes[i], &in);
        test_gated(&shapes[i], &in);
        test_cosine(&shapes[i], &in);
        test_flex_step(&shapes[i], &in);
        free_inputs(&in);
    }
    test_errors();
    test_half();
    return as_test_report("test_zoo_reweight");
}
