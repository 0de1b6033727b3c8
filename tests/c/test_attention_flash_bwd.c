/* The fused flash-attention backward (kernels/cpu/attention_flash_bwd.c)
 * against a naive double-precision backward written here, on every vector
 * path the CPU has: odd L and D, Lq != Lk, causal (and rows that see
 * nothing), GQA, bool masks with fully masked rows, additive bias and its
 * gradient, dropout replayed, strided and bf16 inputs, one (batch, head)
 * over several threads; bit-identical results run to run and across thread
 * counts; and the autograd node (as_flash_attention + as_backward). */
#include <omp.h>
#include <string.h>

#include "as_test.h"
#include "attention_flash.h"
#include "attnswap/attention.h"
#include "attnswap/autograd.h"

static const char *isas[3] = {"scalar", "avx2", "avx512"};
static bool have_isa[3];

/* t[i0, i1, i2, i3] as double, t right-aligned and broadcast to 4-d. */
static double get4(const as_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    int64_t idx[4] = {i0, i1, i2, i3}, o = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != 1) o += idx[4 - t->ndim + d] * t->stride[d];
    return as_load_elem(as_data(t), t->dtype, o);
}

/* t as a (B, H, L, D) kernel operand (size-1 and missing dims: stride 0). */
static as_attn_operand operand(const as_tensor *t)
{
    as_attn_operand o = {.data = as_data(t), .dtype = t->dtype};
    for (int d = 0; d < t->ndim; d++)
        o.stride[4 - t->ndim + d] = t->shape[d] == 1 ? 0 : t->stride[d];
    return o;
}

typedef struct {
    const as_tensor *q, *k, *v, *mask, *dout;
    bool causal;
    double scale;
    float dropout;
    uint64_t seed;
} bcase;

typedef struct {
    double *dq, *dk, *dv, *dbias;
} grads;

static void grads_free(grads *g) { free(g->dq), free(g->dk), free(g->dv), free(g->dbias); }

/* The backward in double, row by row: p = softmax(s), pd = p keep / (1 - r),
 * dpd = dO . v, dp = dpd keep / (1 - r), ds = p (dp - sum(p dp)). */
static grads reference(const bcase *c)
{
    const as_tensor *q = c->q, *k = c->k, *v = c->v;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv;
    grads g = {calloc((size_t)(B * H * Lq * D) + 1, sizeof(double)),
               calloc((size_t)(B * Hkv * Lk * D) + 1, sizeof(double)),
               calloc((size_t)(B * Hkv * Lk * Dv) + 1, sizeof(double)),
               calloc((size_t)(B * H * Lq * Lk) + 1, sizeof(double))};
    double *s = malloc(((size_t)Lk + 1) * sizeof(double)), *dp = malloc(((size_t)Lk + 1) * sizeof(double));
    uint32_t thr = as_attn_drop_threshold(c->dropout);
    double ks = 1 / (1 - (double)c->dropout);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int64_t hk = h / G;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    double x = 0;
                    for (int64_t d = 0; d < D; d++) x += get4(q, b, h, i, d) * get4(k, b, hk, j, d);
                    x *= c->scale;
                    if (c->mask && c->mask->dtype == AS_BOOL)
                        x = get4(c->mask, b, h, i, j) != 0 ? x : -INFINITY;
                    else if (c->mask)
                        x += get4(c->mask, b, h, i, j);
                    if (c->causal && j > i + Lk - Lq) x = -INFINITY;
                    s[j] = x;
                    if (x > mx) mx = x;
                }
                if (mx == -INFINITY) continue; /* nothing to attend: zero gradients */
                for (int64_t j = 0; j < Lk; j++) sum += s[j] = exp(s[j] - mx);
                uint32_t rk = as_attn_row_key(c->seed, H, Lq, b, h, i);
                double dsum = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    s[j] /= sum;
                    double keep = c->dropout > 0 ? (as_attn_keep(rk, j, thr) ? ks : 0) : 1, x = 0;
                    for (int64_t e = 0; e < Dv; e++) {
                        double go = get4(c->dout, b, h, i, e);
                        x += go * get4(v, b, hk, j, e);
                        g.dv[((b * Hkv + hk) * Lk + j) * Dv + e] += s[j] * keep * go;
                    }
                    dp[j] = x * keep;
                    dsum += s[j] * dp[j];
                }
                for (int64_t j = 0; j < Lk; j++) {
                    double ds = s[j] * (dp[j] - dsum);
                    g.dbias[((b * H + h) * Lq + i) * Lk + j] = ds;
                    for (int64_t d = 0; d < D; d++) {
                        g.dq[((b * H + h) * Lq + i) * D + d] += c->scale * ds * get4(k, b, hk, j, d);
                        g.dk[((b * Hkv + hk) * Lk + j) * D + d] += c->scale * ds * get4(q, b, h, i, d);
                    }
                }
            }
    free(s), free(dp);
    return g;
}

/* The kernels' results, float32. */
typedef struct {
    float *dq, *dk, *dv, *dbias;
    int64_t nq, nk, nv, nb;
} kgrads;

static void kgrads_free(kgrads *g) { free(g->dq), free(g->dk), free(g->dv), free(g->dbias); }

/* Forward (saving lse) and backward through the kernels on the current path. */
static kgrads run_kernels(const bcase *c, bool want_bias, int nthreads)
{
    const as_tensor *q = c->q, *k = c->k, *v = c->v;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3];
    as_attn_bwd_params bp = {
        .f = {.B = B, .H = H, .Hkv = Hkv, .Lq = Lq, .Lk = Lk, .D = D, .Dv = Dv, .q = operand(q),
              .k = operand(k), .v = operand(v), .causal = c->causal, .scale = (float)c->scale,
              .dropout = c->dropout, .seed = c->seed, .out_dtype = AS_F32},
        .dout = operand(c->dout)};
    if (c->mask) bp.f.mask = operand(c->mask);
    kgrads g = {.nq = B * H * Lq * D, .nk = B * Hkv * Lk * D, .nv = B * Hkv * Lk * Dv,
                .nb = want_bias ? B * H * Lq * Lk : 0};
    float *out = malloc((size_t)(B * H * Lq * Dv + 1) * sizeof(float));
    float *lse = malloc((size_t)(B * H * Lq + 1) * sizeof(float));
    g.dq = malloc((size_t)(g.nq + 1) * sizeof(float));
    g.dk = malloc((size_t)(g.nk + 1) * sizeof(float));
    g.dv = malloc((size_t)(g.nv + 1) * sizeof(float));
    g.dbias = want_bias ? malloc((size_t)(g.nb + 1) * sizeof(float)) : NULL;
    bp.f.out = out, bp.f.lse = lse;
    bp.dq = g.dq, bp.dk = g.dk, bp.dv = g.dv, bp.dbias = g.dbias;
    void *ws = malloc(as_cpu_flash_workspace_size(&bp.f, nthreads));
    if (B * H * Lq * Dv != 0) as_cpu_flash_attention(&bp.f, ws, nthreads);
    free(ws);
    ws = malloc(as_cpu_flash_bwd_workspace_size(&bp, nthreads));
    as_cpu_flash_backward(&bp, ws, nthreads);
    free(ws), free(out), free(lse);
    return g;
}

/* max |x - ref| / max |ref| (absolute when ref is all zeros); NaN: inf. */
static double rel_err(const float *x, const double *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(x[i] - ref[i]);
        num = isnan(d) ? INFINITY : fmax(num, d);
        den = fmax(den, fabs(ref[i]));
    }
    return den > 0 ? num / den : num;
}

static int64_t n_cases;

static void check_case(const char *what, const bcase *c, bool want_bias, double tol)
{
    grads r = reference(c);
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        kgrads g = run_kernels(c, want_bias, 2);
        double e[4] = {rel_err(g.dq, r.dq, g.nq), rel_err(g.dk, r.dk, g.nk), rel_err(g.dv, r.dv, g.nv),
                       want_bias ? rel_err(g.dbias, r.dbias, g.nb) : 0};
        n_cases++;
        for (int i = 0; i < 4; i++) {
            if (!(e[i] <= tol)) {
                char s1[64], s2[64];
                fprintf(stderr, "  %s [%s] q %s k %s causal=%d: %s rel err %.3g > %.3g\n", what, isas[p],
                        as_shape_str(s1, sizeof s1, 4, c->q->shape),
                        as_shape_str(s2, sizeof s2, 4, c->k->shape), c->causal,
                        (const char *[]){"dq", "dk", "dv", "dbias"}[i], e[i], tol);
            }
            CHECK(e[i] <= tol);
        }
        kgrads_free(&g);
    }
    as_cpu_flash_force_isa(NULL);
    grads_free(&r);
}

static as_tensor *rnd(int ndim, const int64_t *shape, float amp)
{
    as_tensor *t = as_test_random(ndim, shape);
    float *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) p[i] *= amp;
    return t;
}

/* A (B, H, L, D) view of a contiguous (B, L, H, D) tensor. */
static as_tensor *rnd_bhld_view(int64_t B, int64_t H, int64_t L, int64_t D, float amp)
{
    as_tensor *t = rnd(4, (int64_t[]){B, L, H, D}, amp);
    as_tensor *v = as_transpose(t, 1, 2);
    as_release(t);
    return v;
}

static as_tensor *rnd_bool(int ndim, const int64_t *shape, double pk)
{
    as_tensor *t = as_empty(ndim, shape, AS_BOOL, AS_CPU);
    uint8_t *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) p[i] = (as_test_rand_u64() >> 11) * 0x1p-53 < pk;
    return t;
}

/* q, k, v, dO of the given sizes (contiguous) into c; release with release_case. */
static bcase make_case(int64_t B, int64_t H, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t D, int64_t Dv)
{
    bcase c = {.q = rnd(4, (int64_t[]){B, H, Lq, D}, 2), .k = rnd(4, (int64_t[]){B, Hkv, Lk, D}, 2),
               .v = rnd(4, (int64_t[]){B, Hkv, Lk, Dv}, 1), .dout = rnd(4, (int64_t[]){B, H, Lq, Dv}, 1),
               .scale = D ? 1 / sqrt((double)D) : 1};
    return c;
}

static void release_case(bcase *c)
{
    as_release((as_tensor *)c->q), as_release((as_tensor *)c->k), as_release((as_tensor *)c->v);
    as_release((as_tensor *)c->dout), as_release((as_tensor *)c->mask);
}

/* ---- cases ---- */

static void test_shapes(void)
{
    const int64_t lqs[] = {1, 17, 80}, lks[] = {1, 3, 65, 130}, ds[] = {1, 3, 17, 64, 80, 128};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++)
            for (int d = 0; d < 6; d++)
                for (int causal = 0; causal < 2; causal++) {
                    if (ds[d] >= 64 && (a + b + causal) % 2) continue; /* the wide ones on half the grid */
                    bcase c = make_case(1, 2, 2, lqs[a], lks[b], ds[d], d == 1 ? 5 : ds[d]);
                    c.causal = causal;
                    check_case("shapes", &c, false, 2e-5);
                    release_case(&c);
                }
}

static void test_gqa_and_views(void)
{
    const int64_t hkvs[] = {1, 2, 3};
    for (int g = 0; g < 3; g++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t B = 2, H = 6, Hkv = hkvs[g], Lq = 37, Lk = 150;
            bcase c = {.q = rnd_bhld_view(B, H, Lq, 64, 2), .k = rnd_bhld_view(B, Hkv, Lk, 64, 2),
                       .v = rnd_bhld_view(B, Hkv, Lk, 48, 1), .dout = rnd_bhld_view(B, H, Lq, 48, 1),
                       .causal = causal, .scale = 0.2};
            CHECK(!as_is_contiguous(c.q) && !as_is_contiguous(c.dout));
            check_case("gqa/strided", &c, false, 2e-5);
            release_case(&c);
        }
    /* k with a strided last dim, f16 q, bf16 v, dO broadcast over queries (the
     * gradient of a sum over positions), causal with Lq > Lk */
    bcase c = make_case(1, 4, 2, 20, 9, 16, 24);
    as_tensor *kt = rnd(4, (int64_t[]){1, 2, 16, 9}, 2);
    as_release((as_tensor *)c.k), c.k = as_transpose(kt, 2, 3), as_release(kt);
    as_tensor *v16 = as_to_dtype(c.v, AS_BF16), *q16 = as_to_dtype(c.q, AS_F16);
    as_release((as_tensor *)c.v), c.v = v16;
    as_release((as_tensor *)c.q), c.q = q16;
    as_tensor *row = rnd(4, (int64_t[]){1, 4, 1, 24}, 1);
    as_release((as_tensor *)c.dout), c.dout = as_expand(row, 4, (int64_t[]){1, 4, 20, 24}), as_release(row);
    c.causal = true;
    check_case("strided k, f16 q, bf16 v, broadcast dO, Lq > Lk", &c, false, 2e-5);
    release_case(&c);
}

static void test_masks(void)
{
    /* a full keep-mask with fully masked rows */
    bcase c = make_case(2, 4, 2, 70, 200, 32, 32);
    as_tensor *m = rnd_bool(4, (int64_t[]){2, 4, 70, 200}, 0.7);
    uint8_t *mp = as_data(m);
    for (int64_t r = 0; r < 2 * 4 * 70; r += 7) memset(mp + r * 200, 0, 200);
    c.mask = m;
    check_case("mask (B,H,Lq,Lk)", &c, false, 2e-5);
    c.causal = true;
    check_case("mask causal", &c, false, 2e-5);
    as_release(m);
    /* key padding: batch 1 keeps nothing */
    m = as_zeros(4, (int64_t[]){2, 1, 1, 200}, AS_BOOL, AS_CPU);
    memset(as_data(m), 1, 120);
    c.mask = m, c.causal = false;
    check_case("padding (B,1,1,Lk)", &c, false, 2e-5);
    as_release(m);
    /* additive bias with -inf entries, a -inf row; its gradient */
    as_tensor *bias = rnd(4, (int64_t[]){2, 4, 70, 200}, 3);
    float *bp = as_data(bias);
    for (int64_t i = 0; i < 2 * 4 * 70 * 200; i += 5) bp[i] = -INFINITY;
    for (int64_t j = 0; j < 200; j++) bp[3 * 200 + j] = -INFINITY;
    c.mask = bias;
    check_case("bias + dbias", &c, true, 2e-5);
    c.causal = true;
    check_case("bias + dbias causal", &c, true, 2e-5);
    as_release(bias);
    /* a broadcast (Lq, Lk) bias as a strided view (the kernel's dbias is full) */
    as_tensor *bt = rnd(2, (int64_t[]){200, 70}, 2);
    c.mask = as_transpose(bt, 0, 1), c.causal = false;
    check_case("bias (Lq,Lk) strided", &c, true, 2e-5);
    as_release((as_tensor *)c.mask), as_release(bt);
    c.mask = NULL;
    release_case(&c);
}

static void test_dropout(void)
{
    for (int causal = 0; causal < 2; causal++) {
        bcase c = make_case(1, 4, 2, 45, 140, 40, 24);
        c.causal = causal, c.dropout = 0.3f, c.seed = 0x1234567u + (uint64_t)causal;
        check_case("dropout", &c, false, 2e-5);
        as_tensor *bias = rnd(4, (int64_t[]){1, 1, 45, 140}, 1);
        c.mask = bias;
        check_case("dropout + bias", &c, true, 2e-5);
        release_case(&c);
    }
}

/* Empty sizes: no queries, no keys (zero gradients), D = 0 (scores all 0,
 * dV still flows), Dv = 0. */
static void test_empty(void)
{
    const int64_t sizes[4][4] = {{0, 9, 8, 8}, {7, 0, 8, 8}, {7, 9, 0, 5}, {7, 9, 8, 0}}; /* Lq Lk D Dv */
    for (int i = 0; i < 4; i++) {
        bcase c = make_case(1, 2, 1, sizes[i][0], sizes[i][1], sizes[i][2], sizes[i][3]);
        c.scale = 0.5;
        check_case("empty", &c, false, 2e-5);
        release_case(&c);
    }
}

/* One (batch, head), long keys: the key blocks spread over lanes; the same
 * bits run to run and for 1, 2, 3 and 5 threads, on every path. */
static void test_threads_determinism(void)
{
    bcase c = make_case(1, 1, 1, 300, 700, 64, 64);
    c.causal = true;
    check_case("B*H = 1", &c, false, 2e-5);
    as_tensor *bias = rnd(2, (int64_t[]){300, 700}, 1);
    c.mask = bias, c.causal = false, c.dropout = 0.1f, c.seed = 99;
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        kgrads a = run_kernels(&c, true, 2);
        const int threads[] = {2, 1, 3, 5};
        for (int t = 0; t < 4; t++) {
            kgrads b = run_kernels(&c, true, threads[t]);
            bool same = !memcmp(a.dq, b.dq, (size_t)a.nq * 4) && !memcmp(a.dk, b.dk, (size_t)a.nk * 4) &&
                        !memcmp(a.dv, b.dv, (size_t)a.nv * 4) && !memcmp(a.dbias, b.dbias, (size_t)a.nb * 4);
            if (!same) fprintf(stderr, "  [%s] %d threads: not bit-identical\n", isas[p], threads[t]);
            CHECK(same);
            kgrads_free(&b);
        }
        kgrads_free(&a);
    }
    as_cpu_flash_force_isa(NULL);
    release_case(&c);
}

/* B * Hkv >= 16: one lane, so each unit meets every query tile once per key
 * block and keeps the tiles' packed states (attention_flash_bwd.c): GQA with
 * a partial last tile, D and Dv not multiples of 16, causal with Lq < Lk, a
 * keep-mask, an additive bias with its gradient, dropout; and the same bits
 * for 1, 2, 3 and 5 threads. */
static void test_tile_cache(void)
{
    bcase c = make_case(2, 16, 8, 70, 300, 40, 24);
    for (int causal = 0; causal < 2; causal++) {
        c.causal = causal;
        check_case("kept tiles", &c, false, 2e-5);
    }
    as_tensor *keep = rnd_bool(4, (int64_t[]){2, 16, 70, 300}, 0.8);
    c.mask = keep;
    check_case("kept tiles, mask causal", &c, false, 2e-5);
    as_release(keep);
    as_tensor *bias = rnd(4, (int64_t[]){2, 1, 70, 300}, 1);
    c.mask = bias, c.causal = false, c.dropout = 0.2f, c.seed = 7;
    check_case("kept tiles, bias + dbias, dropout", &c, true, 2e-5);
    for (int p = 0; p < 3; p++) {
        if (!have_isa[p]) continue;
        as_cpu_flash_force_isa(isas[p]);
        kgrads a = run_kernels(&c, true, 2);
        const int threads[] = {1, 3, 5};
        for (int t = 0; t < 3; t++) {
            kgrads b = run_kernels(&c, true, threads[t]);
            bool same = !memcmp(a.dq, b.dq, (size_t)a.nq * 4) && !memcmp(a.dk, b.dk, (size_t)a.nk * 4) &&
                        !memcmp(a.dv, b.dv, (size_t)a.nv * 4) && !memcmp(a.dbias, b.dbias, (size_t)a.nb * 4);
            if (!same) fprintf(stderr, "  kept tiles [%s] %d threads: not bit-identical\n", isas[p], threads[t]);
            CHECK(same);
            kgrads_free(&b);
        }
        kgrads_free(&a);
    }
    as_cpu_flash_force_isa(NULL);
    release_case(&c);
}

/* Through autograd: as_flash_attention records the fused backward; the
 * gradients match the reference, a broadcast bias's summed by the engine. */
static void test_autograd(void)
{
    int64_t B = 2, H = 4, Hkv = 2, Lq = 33, Lk = 51, D = 24;
    bcase c = make_case(B, H, Hkv, Lq, Lk, D, D);
    as_tensor *bias = rnd(2, (int64_t[]){Lq, Lk}, 1);
    c.mask = bias, c.causal = true, c.scale = 0.3;
    grads r = reference(&c);
    as_tensor *q = as_detach(c.q), *k = as_detach(c.k), *v = as_detach(c.v), *bm = as_detach(bias);
    as_requires_grad_(q, true), as_requires_grad_(k, true), as_requires_grad_(v, true);
    as_requires_grad_(bm, true);
    as_tensor *out = as_flash_attention(q, k, v, bm, &(as_attention_opts){.causal = true, .scale = 0.3}, true);
    CHECK_OK(out);
    CHECK(out && as_grad_fn_name(out) && !strcmp(as_grad_fn_name(out), "flash_attention"));
    CHECK(out && as_backward(out, c.dout, false) == 0);
    const as_tensor *gs[3] = {as_grad(q), as_grad(k), as_grad(v)};
    const double *rs[3] = {r.dq, r.dk, r.dv};
    for (int i = 0; i < 3; i++) {
        CHECK(gs[i] && gs[i]->dtype == AS_F32);
        if (!gs[i]) continue;
        double num = 0, den = 0;
        for (int64_t j = 0; j < as_numel(gs[i]); j++)
            num = fmax(num, fabs(as_get_flat(gs[i], j) - rs[i][j])), den = fmax(den, fabs(rs[i][j]));
        CHECK(num <= 2e-5 * den);
    }
    /* the (Lq, Lk) bias: dS summed over batch and heads */
    const as_tensor *gb = as_grad(bm);
    CHECK(gb && gb->ndim == 2 && gb->shape[0] == Lq && gb->shape[1] == Lk);
    double num = 0, den = 0;
    for (int64_t i = 0; gb && i < Lq * Lk; i++) {
        double want = 0;
        for (int64_t bh = 0; bh < B * H; bh++) want += r.dbias[bh * Lq * Lk + i];
        num = fmax(num, fabs(as_get_flat(gb, i) - want)), den = fmax(den, fabs(want));
    }
    CHECK(gb && num <= 2e-5 * den);
    as_release(out), as_release(q), as_release(k), as_release(v), as_release(bm);
    grads_free(&r);
    release_case(&c);

    /* a query row with nothing to attend: zero gradients, never NaN */
    q = rnd(4, (int64_t[]){1, 1, 4, 8}, 1), k = rnd(4, (int64_t[]){1, 1, 6, 8}, 1);
    v = rnd(4, (int64_t[]){1, 1, 6, 8}, 1);
    as_tensor *keep = as_full(4, (int64_t[]){1, 1, 4, 6}, 1.0, AS_BOOL, AS_CPU);
    memset((uint8_t *)as_data(keep) + 6, 0, 6); /* row 1 sees nothing */
    as_requires_grad_(q, true);
    out = as_flash_attention(q, k, v, keep, NULL, false);
    as_tensor *ones = as_full(4, (int64_t[]){1, 1, 4, 8}, 1.0, AS_F32, AS_CPU);
    CHECK(out && as_backward(out, ones, false) == 0);
    bool ok = as_grad(q) != NULL;
    for (int64_t i = 0; ok && i < 32; i++) {
        double x = as_get_flat(as_grad(q), i);
        ok &= isfinite(x) && (i / 8 != 1 || x == 0);
    }
    CHECK(ok);
    as_release(out), as_release(ones), as_release(keep), as_release(q), as_release(k), as_release(v);
}

int main(void)
{
    for (int p = 0; p < 3; p++) {
        have_isa[p] = as_cpu_flash_force_isa(isas[p]) == 0;
        if (have_isa[p]) printf("path %s\n", isas[p]);
    }
    as_cpu_flash_force_isa(NULL);
    CHECK(have_isa[0]);
    test_shapes();
    test_gqa_and_views();
    test_masks();
    test_dropout();
    test_empty();
    test_threads_determinism();
    test_tile_cache();
    test_autograd();
    printf("%lld case runs\n", (long long)n_cases);
    return as_test_report("test_attention_flash_bwd");
}
