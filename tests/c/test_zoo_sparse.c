/* The sparse attention kernels (block-sparse layouts, sliding windows,
 * attention sinks, per-query top-k) against naive double-precision loops
 * written here: random shapes with odd lengths, Lq != Lk both ways, B and
 * H > 1, GQA, Dv != D, bool / float / broadcast masks, element and block
 * layouts (full, empty and partial blocks, per-head layouts, blocks larger
 * than the sequence), every vector path of the tile kernels; ties in top-k;
 * dropout against the flash kernel's; the pattern builders against their
 * definitions; and the errors. */
#include <string.h>

#include "as_test.h"
#include "attnswap/attention_sparse.h"
#include "zoo_sparse.h" /* the kernels' own helpers, tested directly */
#include "attention_flash.h"

/* ---- the naive reference ---- */

enum { SPARSE, LOCAL, SINK, TOPK };

typedef struct {
    int kind;
    bool causal;
    const as_tensor *mask;  /* user mask (bool or float), broadcast to (B, H, Lq, Lk) */
    const as_tensor *elem;  /* SPARSE: element layout (LH, Lr, Lk) as bool, contiguous */
    int64_t LH, Lr;
    int64_t w, sinks, top_k; /* LOCAL / SINK window, SINK sinks, TOPK k */
} ref_case;

/* t[i0, i1, i2, i3] as double, t right-aligned and broadcast to 4-d. */
static double get4(const as_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    int64_t idx[4] = {i0, i1, i2, i3}, o = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != 1) o += idx[4 - t->ndim + d] * t->stride[d];
    return as_load_elem(as_data(t), t->dtype, o);
}

/* Whether query i (at ip = i + Lk - Lq) of head h may see key j by the mechanism's structure. */
static bool structure(const ref_case *c, int64_t h, int64_t i, int64_t ip, int64_t j, int64_t Lq,
                      int64_t Lk)
{
    switch (c->kind) {
    case SPARSE: { /* the layout's row i + Lr - Lq */
        const uint8_t *e = as_data(c->elem);
        return e[((c->LH == 1 ? 0 : h) * c->Lr + i + c->Lr - Lq) * Lk + j] != 0;
    }
    case LOCAL: return j >= ip - c->w && j <= ip + c->w;
    case SINK: return j < c->sinks || j > ip - c->w;
    default: return true;
    }
}

/* The first k of the visible (finite) scores by value, ties to the lower index. */
static void naive_topk(double *s, int64_t n, int64_t k)
{
    bool *keep = calloc((size_t)n + 1, 1);
    for (int64_t t = 0; t < k; t++) {
        int64_t best = -1;
        for (int64_t j = 0; j < n; j++)
            if (!keep[j] && s[j] != -INFINITY && (best < 0 || s[j] > s[best])) best = j;
        if (best < 0) break;
        keep[best] = true;
    }
    for (int64_t j = 0; j < n; j++)
        if (!keep[j]) s[j] = -INFINITY;
    free(keep);
}

/* out (B, H, Lq, Dv) in double. */
static double *naive(const ref_case *c, const as_tensor *q, const as_tensor *k, const as_tensor *v)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv, off = Lk - Lq;
    double scale = 1 / sqrt((double)D);
    double *out = calloc((size_t)(B * H * Lq * Dv) + 1, sizeof(double));
    double *s = malloc(((size_t)Lk + 1) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double *o = out + ((b * H + h) * Lq + i) * Dv, mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    double x = 0;
                    for (int64_t d = 0; d < D; d++) x += get4(q, b, h, i, d) * get4(k, b, h / G, j, d);
                    x *= scale;
                    bool vis = structure(c, h, i, i + off, j, Lq, Lk);
                    if ((c->causal || c->kind == SINK) && j > i + off) vis = false;
                    if (c->mask && c->mask->dtype == AS_BOOL) vis = vis && get4(c->mask, b, h, i, j) != 0;
                    else if (c->mask) x += get4(c->mask, b, h, i, j);
                    s[j] = vis ? x : -INFINITY;
                }
                if (c->kind == TOPK) naive_topk(s, Lk, c->top_k);
                for (int64_t j = 0; j < Lk; j++) mx = s[j] > mx ? s[j] : mx;
                if (mx == -INFINITY) continue;
                for (int64_t j = 0; j < Lk; j++) s[j] = exp(s[j] - mx), sum += s[j];
                for (int64_t j = 0; j < Lk; j++)
                    for (int64_t e = 0; e < Dv; e++) o[e] += s[j] / sum * get4(v, b, h / G, j, e);
            }
    free(s);
    return out;
}

static double maxdiff_ref(const as_tensor *out, const double *ref)
{
    double m = 0;
    for (int64_t i = 0, n = as_numel(out); i < n; i++) {
        double d = fabs(as_get_flat(out, i) - ref[i]);
        m = isnan(d) ? INFINITY : d > m ? d : m;
    }
    return m;
}

static as_tensor *rnd(int ndim, const int64_t *shape) { return as_test_random(ndim, shape); }

static as_tensor *rand_bool(int ndim, const int64_t *shape, double p)
{
    as_tensor *t = as_empty(ndim, shape, AS_BOOL, AS_CPU);
    uint8_t *d = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) d[i] = (as_test_rand_u64() % 1000) < p * 1000;
    return t;
}

typedef struct {
    int64_t B, H, Hkv, Lq, Lk, D, Dv;
} dims;

static dims random_dims(void)
{
    static const int64_t heads[][2] = {{1, 1}, {2, 1}, {4, 2}, {3, 3}, {6, 2}};
    dims d;
    int hp = (int)as_test_randint(0, 4);
    d.B = as_test_randint(1, 2), d.H = heads[hp][0], d.Hkv = heads[hp][1];
    d.Lk = as_test_randint(1, 90);
    int shape = (int)as_test_randint(0, 3);
    d.Lq = shape == 0 ? d.Lk : shape == 1 ? as_test_randint(1, d.Lk) : as_test_randint(1, 90);
    d.D = as_test_randint(1, 20), d.Dv = as_test_randint(1, 12);
    return d;
}

/* A user mask of one of several shapes: none, bool (B, 1, Lq, Lk), float (H, Lq, Lk), bool (Lk). */
static as_tensor *random_mask(const dims *d, int which)
{
    switch (which) {
    case 1: return rand_bool(4, (int64_t[]){d->B, 1, d->Lq, d->Lk}, 0.8);
    case 2: {
        as_tensor *m = rnd(3, (int64_t[]){d->H, d->Lq, d->Lk});
        float *p = as_data(m);
        for (int64_t i = 0, n = as_numel(m); i < n; i++) p[i] = as_test_rand_u64() % 7 == 0 ? -INFINITY : 2 * p[i];
        return m;
    }
    case 3: return rand_bool(1, (int64_t[]){d->Lk}, 0.7);
    default: return NULL;
    }
}

/* An element layout (LH, Lr, Lk) with block structure: per bs-block empty, full or random. */
static as_tensor *random_layout(int64_t LH, int64_t Lr, int64_t Lk, int64_t bs)
{
    as_tensor *t = as_empty(3, (int64_t[]){LH, Lr, Lk}, AS_BOOL, AS_CPU);
    uint8_t *e = as_data(t);
    int64_t R = (Lr + bs - 1) / bs, C = (Lk + bs - 1) / bs;
    for (int64_t h = 0; h < LH; h++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) {
                int kind = (int)(as_test_rand_u64() % 3);
                for (int64_t i = r * bs; i < Lr && i < (r + 1) * bs; i++)
                    for (int64_t j = c * bs; j < Lk && j < (c + 1) * bs; j++)
                        e[(h * Lr + i) * Lk + j] = kind == 1 || (kind == 2 && as_test_rand_u64() % 2);
            }
    return t;
}

static const char *isas[] = {"scalar", "avx2", "avx512"};

static void check_against_naive(const char *what, as_tensor *out, const ref_case *c, const as_tensor *q,
                                const as_tensor *k, const as_tensor *v, double tol)
{
    CHECK_OK(out);
    if (!out) return;
    double *ref = naive(c, q, k, v);
    double err = maxdiff_ref(out, ref);
    if (!(err <= tol)) {
        fprintf(stderr, "%s: max error %g (B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld Dv=%lld)\n",
                what, err, (long long)q->shape[0], (long long)q->shape[1], (long long)k->shape[1],
                (long long)q->shape[2], (long long)k->shape[2], (long long)q->shape[3],
                (long long)v->shape[3]);
    }
    CHECK(err <= tol);
    free(ref);
}

/* ---- sparse_attention ---- */

static void test_sparse_random(void)
{
    for (int trial = 0; trial < 40; trial++) {
        dims d = random_dims();
        static const int64_t sizes[] = {1, 3, 4, 7, 16, 32, 200};
        int64_t bs = sizes[as_test_randint(0, 6)];
        int64_t LH = as_test_randint(0, 1) ? d.H : 1;
        int64_t Lr = d.Lk > d.Lq && as_test_randint(0, 1) ? d.Lk : d.Lq;
        as_tensor *q = rnd(4, (int64_t[]){d.B, d.H, d.Lq, d.D});
        as_tensor *k = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.D});
        as_tensor *v = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.Dv});
        as_tensor *elem = random_layout(LH, Lr, d.Lk, bs > 8 ? bs / 2 : bs);
        as_tensor *mask = random_mask(&d, trial % 4);
        bool causal = trial % 3 == 0;
        ref_case c = {.kind = SPARSE, .causal = causal, .mask = mask, .elem = elem, .LH = LH, .Lr = Lr};
        as_attention_opts o = {.causal = causal, .scale = NAN};
        /* as an element layout (2-d when shared) */
        as_tensor *lay = LH == 1 ? as_select(elem, 0, 0) : as_retain(elem);
        as_cpu_flash_force_isa(isas[trial % 3]); /* -1 (ignored) where the CPU lacks it */
        as_tensor *out = as_sparse_attention(q, k, v, mask, &o, lay, bs, false);
        check_against_naive("sparse/element", out, &c, q, k, v, 2e-5);
        as_release(out);
        /* as a block layout: the naive reference sees its element expansion */
        as_tensor *blk = as_pattern_to_blocks(lay, bs);
        as_tensor *full = as_pattern_from_blocks(blk, bs, Lr, d.Lk);
        as_tensor *full3 = LH == 1 ? as_unsqueeze(full, 0) : as_retain(full);
        ref_case cb = c;
        cb.elem = full3;
        out = as_sparse_attention(q, k, v, mask, &o, blk, bs, false);
        check_against_naive("sparse/block", out, &cb, q, k, v, 2e-5);
        as_release(out), as_release(blk), as_release(full), as_release(full3);
        as_release(lay), as_release(elem), as_release(mask), as_release(q), as_release(k), as_release(v);
    }
    as_cpu_flash_force_isa(NULL);
}

/* A full layout is exact attention; an empty one gives zeros. */
static void test_sparse_full_and_empty(void)
{
    as_tensor *q = rnd(4, (int64_t[]){2, 4, 45, 16}), *k = rnd(4, (int64_t[]){2, 2, 45, 16});
    as_tensor *v = rnd(4, (int64_t[]){2, 2, 45, 8});
    as_tensor *ones = as_full(2, (int64_t[]){45, 45}, 1, AS_BOOL, AS_CPU);
    as_tensor *zeros = as_zeros(2, (int64_t[]){2, 2}, AS_BOOL, AS_CPU);
    as_attention_opts o = {.causal = true, .scale = NAN};
    as_tensor *a = as_sparse_attention(q, k, v, NULL, &o, ones, 8, false);
    as_tensor *b = as_sdp_attention(q, k, v, NULL, &o, false);
    CHECK_OK(a);
    CHECK(a && b && as_test_maxdiff(a, b) < 1e-5);
    as_tensor *z = as_sparse_attention(q, k, v, NULL, &o, zeros, 32, false);
    CHECK_OK(z);
    bool all_zero = z != NULL;
    for (int64_t i = 0; z && i < as_numel(z); i++) all_zero &= as_get_flat(z, i) == 0;
    CHECK(all_zero);
    as_release(a), as_release(b), as_release(z), as_release(ones), as_release(zeros);
    as_release(q), as_release(k), as_release(v);
}

/* ---- local_attention and sink_attention ---- */

static void test_band_random(void)
{
    for (int trial = 0; trial < 60; trial++) {
        dims d = random_dims();
        bool sink = trial % 2 == 1;
        static const int64_t ws[] = {1, 2, 3, 5, 17, 64, 1000};
        int64_t w = ws[as_test_randint(0, 6)];
        if (!sink && trial % 10 == 0) w = 0;
        int64_t sinks = as_test_randint(0, 6);
        as_tensor *q = rnd(4, (int64_t[]){d.B, d.H, d.Lq, d.D});
        as_tensor *k = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.D});
        as_tensor *v = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.Dv});
        as_tensor *mask = random_mask(&d, trial % 4);
        bool causal = trial % 4 < 2;
        as_attention_opts o = {.causal = causal, .scale = NAN};
        ref_case c = {.kind = sink ? SINK : LOCAL, .causal = causal, .mask = mask, .w = w, .sinks = sinks};
        as_cpu_flash_force_isa(isas[trial % 3]);
        as_tensor *out = sink ? as_sink_attention(q, k, v, mask, &o, w, sinks, false)
                              : as_local_attention(q, k, v, mask, &o, w, false);
        check_against_naive(sink ? "sink" : "local", out, &c, q, k, v, 2e-5);
        as_release(out), as_release(mask), as_release(q), as_release(k), as_release(v);
    }
    as_cpu_flash_force_isa(NULL);
}

/* Longer sequences: many tiles and items, the band far narrower than L. */
static void test_band_long(void)
{
    as_tensor *q = rnd(4, (int64_t[]){1, 2, 300, 32}), *k = rnd(4, (int64_t[]){1, 1, 333, 32});
    as_tensor *v = rnd(4, (int64_t[]){1, 1, 333, 24});
    for (int causal = 0; causal < 2; causal++) {
        as_attention_opts o = {.causal = causal, .scale = NAN};
        ref_case c = {.kind = LOCAL, .causal = causal, .w = 40};
        as_tensor *out = as_local_attention(q, k, v, NULL, &o, 40, false);
        check_against_naive("local/long", out, &c, q, k, v, 2e-5);
        as_release(out);
        c = (ref_case){.kind = SINK, .causal = true, .w = 70, .sinks = 4};
        out = as_sink_attention(q, k, v, NULL, &o, 70, 4, false);
        check_against_naive("sink/long", out, &c, q, k, v, 2e-5);
        as_release(out);
    }
    as_release(q), as_release(k), as_release(v);
}

/* ---- dynamic_attention ---- */

static void test_topk_random(void)
{
    for (int trial = 0; trial < 40; trial++) {
        dims d = random_dims();
        static const int64_t ks[] = {1, 2, 3, 8, 31, 1000};
        int64_t top_k = ks[as_test_randint(0, 5)];
        as_tensor *q = rnd(4, (int64_t[]){d.B, d.H, d.Lq, d.D});
        as_tensor *k = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.D});
        as_tensor *v = rnd(4, (int64_t[]){d.B, d.Hkv, d.Lk, d.Dv});
        as_tensor *mask = random_mask(&d, trial % 4);
        bool causal = trial % 3 == 1;
        as_attention_opts o = {.causal = causal, .scale = NAN};
        ref_case c = {.kind = TOPK, .causal = causal, .mask = mask, .top_k = top_k};
        as_tensor *out = as_dynamic_attention(q, k, v, mask, &o, top_k, false);
        check_against_naive("topk", out, &c, q, k, v, 2e-5);
        as_release(out), as_release(mask), as_release(q), as_release(k), as_release(v);
    }
}

/* Whether idx[0..n) holds exactly the positions want[0..n). */
static bool same_set(const int32_t *idx, int64_t n, const int32_t *want)
{
    for (int64_t a = 0; a < n; a++) {
        bool found = false;
        for (int64_t b = 0; b < n; b++) found |= idx[b] == want[a];
        if (!found) return false;
    }
    return true;
}

/* Scores with many exact ties (small integers): the first k by index win. */
static void test_topk_ties(void)
{
    int64_t Lk = 40;
    as_tensor *q = as_zeros(4, (int64_t[]){1, 1, 3, 1}, AS_F32, AS_CPU);
    as_tensor *k = as_empty(4, (int64_t[]){1, 1, Lk, 1}, AS_F32, AS_CPU);
    as_tensor *v = rnd(4, (int64_t[]){1, 1, Lk, 5});
    float *qp = as_data(q), *kp = as_data(k);
    qp[0] = 1, qp[1] = -1, qp[2] = 0; /* the last row: every score ties at 0 */
    for (int64_t j = 0; j < Lk; j++) kp[j] = (float)(j % 4);
    as_attention_opts o = {.scale = 1.0};
    for (int64_t top_k = 1; top_k <= 12; top_k += 3) {
        ref_case c = {.kind = TOPK, .top_k = top_k};
        as_tensor *out = as_dynamic_attention(q, k, v, NULL, &o, top_k, false);
        /* scale 1 and D = 1: the reference's 1/sqrt(D) is 1 too */
        check_against_naive("topk/ties", out, &c, q, k, v, 1e-5);
        as_release(out);
    }
    /* the selection itself: the set of positions, ties to the lower index */
    float x[9] = {1, 3, 3, -INFINITY, 2, 3, 0, 3, -INFINITY};
    float scratch[27];
    int32_t idx[9];
    CHECK(as_cpu_topk_select(x, 9, 2, idx, scratch) == 2 && same_set(idx, 2, (int32_t[]){1, 2}));
    CHECK(as_cpu_topk_select(x, 9, 5, idx, scratch) == 5 && same_set(idx, 5, (int32_t[]){1, 2, 4, 5, 7}));
    CHECK(as_cpu_topk_select(x, 9, 6, idx, scratch) == 6 && same_set(idx, 6, (int32_t[]){0, 1, 2, 4, 5, 7}));
    CHECK(as_cpu_topk_select(x, 9, 3, idx, scratch) == 3 && same_set(idx, 3, (int32_t[]){1, 2, 5}));
    CHECK(as_cpu_topk_select(x, 9, 100, idx, scratch) == 7);
    CHECK(as_cpu_topk_select(x, 9, 0, idx, scratch) == 0);
    /* many equal values after the heap is full */
    float y[12] = {5, 5, 1, 5, 5, 9, 5, 5, 5, 9, 5, 5};
    /* the quickselect path (k > AS_CPU_TOPK_HEAP_MAX): 0..4 eight times each;
     * the top 20 are the fours, the threes and the first four twos */
    float big[40], scr[120];
    int32_t idx40[40], want[20];
    for (int j = 0; j < 40; j++) big[j] = (float)(j % 5);
    for (int t = 0; t < 8; t++) want[t] = 5 * t + 4, want[8 + t] = 5 * t + 3;
    for (int t = 0; t < 4; t++) want[16 + t] = 5 * t + 2;
    CHECK(as_cpu_topk_select(big, 40, 20, idx40, scr) == 20 && same_set(idx40, 20, want));
    CHECK(as_cpu_topk_select(y, 12, 4, idx, scratch) == 4 && same_set(idx, 4, (int32_t[]){0, 1, 5, 9}));
    as_release(q), as_release(k), as_release(v);
}

/* ---- dropout: the same hash as the flash kernel, so the same result ---- */

static void test_dropout(void)
{
    as_tensor *q = rnd(4, (int64_t[]){2, 4, 33, 16}), *k = rnd(4, (int64_t[]){2, 2, 41, 16});
    as_tensor *v = rnd(4, (int64_t[]){2, 2, 41, 8});
    as_attention_opts o = {.causal = true, .scale = NAN, .dropout = 0.3};
    as_tensor *band = as_pattern(AS_PATTERN_LOCAL, 41, 5, 0, false);
    as_tensor *band_q = as_narrow(band, 0, 8, 33); /* rows of queries 0..32 at i' = i + 8 */
    as_manual_seed(99);
    as_tensor *a = as_local_attention(q, k, v, NULL, &o, 5, true);
    as_manual_seed(99);
    as_tensor *b = as_flash_attention(q, k, v, band_q, &o, true);
    as_manual_seed(99);
    as_tensor *c = as_sparse_attention(q, k, v, NULL, &o, band, 4, true);
    CHECK_OK(a);
    CHECK_OK(c);
    CHECK(a && b && c && as_test_maxdiff(a, b) < 2e-5 && as_test_maxdiff(c, b) < 2e-5);
    as_tensor *e = as_local_attention(q, k, v, NULL, &o, 5, false); /* eval: no dropout */
    CHECK(e && a && as_test_maxdiff(a, e) > 1e-3);
    as_manual_seed(99);
    as_tensor *t = as_dynamic_attention(q, k, v, NULL, &o, 1000, true);
    as_manual_seed(99);
    as_tensor *f = as_flash_attention(q, k, v, NULL, &o, true);
    CHECK(t && f && as_test_maxdiff(t, f) < 2e-5);
    as_release(a), as_release(b), as_release(c), as_release(e), as_release(t), as_release(f);
    as_release(band), as_release(band_q), as_release(q), as_release(k), as_release(v);
}

/* ---- inputs in other dtypes and layouts ---- */

static void test_views_and_half(void)
{
    /* q as a transposed view of (B, L, H, D); float16 inputs give float16 */
    as_tensor *x = rnd(4, (int64_t[]){2, 29, 4, 8}), *q = as_transpose(x, 1, 2);
    as_tensor *k = rnd(4, (int64_t[]){2, 4, 29, 8}), *v = rnd(4, (int64_t[]){2, 4, 29, 8});
    as_attention_opts o = {.scale = NAN};
    ref_case c = {.kind = LOCAL, .w = 4};
    as_tensor *out = as_local_attention(q, k, v, NULL, &o, 4, false);
    check_against_naive("local/view", out, &c, q, k, v, 2e-5);
    as_release(out);
    as_tensor *qh = as_to_dtype(q, AS_F16), *kh = as_to_dtype(k, AS_F16), *vh = as_to_dtype(v, AS_F16);
    out = as_dynamic_attention(qh, kh, vh, NULL, &o, 5, false);
    CHECK_OK(out);
    CHECK(out && out->dtype == AS_F16);
    c = (ref_case){.kind = TOPK, .top_k = 5};
    if (out) {
        as_tensor *o32 = as_to_dtype(out, AS_F32);
        check_against_naive("topk/f16", o32, &c, qh, kh, vh, 3e-3);
        as_release(o32);
    }
    as_release(out), as_release(qh), as_release(kh), as_release(vh);
    as_release(x), as_release(q), as_release(k), as_release(v);
}

/* ---- patterns against their definitions ---- */

static void test_patterns(void)
{
    int64_t L = 23;
    for (int causal = 0; causal < 2; causal++) {
        as_tensor *lo = as_pattern(AS_PATTERN_LOCAL, L, 3, 0, causal);
        as_tensor *st = as_pattern(AS_PATTERN_STRIDED, L, 4, 0, causal);
        as_tensor *fx = as_pattern(AS_PATTERN_FIXED, L, 5, 2, causal);
        as_tensor *ax = as_pattern(AS_PATTERN_AXIAL, 0, 4, 5, causal);
        CHECK_OK(lo);
        CHECK_OK(st);
        CHECK_OK(fx);
        CHECK_OK(ax);
        if (!lo || !st || !fx || !ax) return;
        int bad = 0;
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                bool cz = !causal || j <= i;
                bad += (as_get_flat(lo, i * L + j) != 0) != (llabs(i - j) <= 3 && cz);
                bad += (as_get_flat(st, i * L + j) != 0) != ((llabs(i - j) <= 4 || (i - j) % 4 == 0) && cz);
                bad += (as_get_flat(fx, i * L + j) != 0) != ((i / 5 == j / 5 || j % 5 >= 3) && cz);
            }
        for (int64_t i = 0; i < 20; i++)
            for (int64_t j = 0; j < 20; j++)
                bad += (as_get_flat(ax, i * 20 + j) != 0) != ((i / 5 == j / 5 || i % 5 == j % 5) && (!causal || j <= i));
        CHECK(bad == 0);
        as_release(lo), as_release(st), as_release(fx), as_release(ax);
    }
    /* random: the right density, the same for the same seed, different otherwise */
    as_tensor *r1 = as_pattern_random(200, 0.25, 5), *r2 = as_pattern_random(200, 0.25, 5);
    as_tensor *r3 = as_pattern_random(200, 0.25, 6);
    double kept = 0, same = 0, diff = 0;
    for (int64_t i = 0; i < 200 * 200; i++) {
        kept += as_get_flat(r1, i);
        same += as_get_flat(r1, i) == as_get_flat(r2, i);
        diff += as_get_flat(r1, i) != as_get_flat(r3, i);
    }
    CHECK(fabs(kept / 40000 - 0.25) < 0.01 && same == 40000 && diff > 1000);
    as_release(r1), as_release(r2), as_release(r3);
    /* global tokens */
    as_tensor *idx = as_empty(1, (int64_t[]){2}, AS_I64, AS_CPU);
    ((int64_t *)as_data(idx))[0] = 0, ((int64_t *)as_data(idx))[1] = 6;
    as_tensor *g = as_pattern_global(9, idx);
    int bad = 0;
    for (int64_t i = 0; i < 9; i++)
        for (int64_t j = 0; j < 9; j++)
            bad += (as_get_flat(g, i * 9 + j) != 0) != (i == 0 || i == 6 || j == 0 || j == 6);
    CHECK(bad == 0);
    ((int64_t *)as_data(idx))[1] = 9;
    CHECK(as_pattern_global(9, idx) == NULL && strstr(as_error_get(), "global_tokens"));
    as_release(g), as_release(idx);
    /* bigbird: window, globals, `randoms` extra blocks per row, causal */
    for (int causal = 0; causal < 2; causal++) {
        as_tensor *bb = as_pattern_bigbird(100, 10, 3, 1, 2, 3, causal, true);
        CHECK_OK(bb);
        if (!bb) continue;
        bad = 0;
        for (int64_t r = 0; r < 10; r++) {
            int64_t extra = 0;
            for (int64_t c = 0; c < 10; c++) {
                bool base = llabs(r - c) <= 1 || r == 0 || c == 0;
                bool kept1 = as_get_flat(bb, r * 10 + c) != 0;
                if (causal && c > r) bad += kept1;
                else if (base) bad += !kept1;
                else extra += kept1;
            }
            if (r >= 1 && !causal) bad += extra != 2;
            if (r >= 1 && causal) bad += extra != (r - 2 > 2 ? 2 : r - 2 > 0 ? r - 2 : 0);
        }
        CHECK(bad == 0);
        as_tensor *el = as_pattern_bigbird(95, 10, 3, 1, 2, 3, causal, false);
        as_tensor *tb = el ? as_pattern_to_blocks(el, 10) : NULL;
        CHECK(tb && as_test_maxdiff(tb, bb) == 0);
        as_release(el), as_release(tb), as_release(bb);
    }
    /* to_blocks / from_blocks */
    as_tensor *m = rand_bool(3, (int64_t[]){2, 13, 17}, 0.05);
    as_tensor *b = as_pattern_to_blocks(m, 4);
    CHECK(b && b->ndim == 3 && b->shape[1] == 4 && b->shape[2] == 5);
    as_tensor *e = b ? as_pattern_from_blocks(b, 4, 13, 17) : NULL;
    bad = 0;
    for (int64_t h = 0; e && h < 2; h++)
        for (int64_t i = 0; i < 13; i++)
            for (int64_t j = 0; j < 17; j++) {
                bool any = false;
                for (int64_t a = i / 4 * 4; a < 13 && a < i / 4 * 4 + 4; a++)
                    for (int64_t c = j / 4 * 4; c < 17 && c < j / 4 * 4 + 4; c++)
                        any |= as_get_flat(m, (h * 13 + a) * 17 + c) != 0;
                bad += (as_get_flat(e, (h * 13 + i) * 17 + j) != 0) != any;
            }
    CHECK(e && bad == 0);
    as_release(m), as_release(b), as_release(e);
}

/* ---- errors name the implementation ---- */

static void expect_error(as_tensor *r, const char *text)
{
    CHECK(r == NULL);
    if (r) {
        as_release(r);
        return;
    }
    if (!strstr(as_error_get(), text)) fprintf(stderr, "error was: %s (expected %s)\n", as_error_get(), text);
    CHECK(strstr(as_error_get(), text) != NULL);
}

static void test_errors(void)
{
    as_tensor *q = rnd(4, (int64_t[]){1, 4, 10, 8}), *k = rnd(4, (int64_t[]){1, 3, 10, 8});
    as_tensor *k2 = rnd(4, (int64_t[]){1, 2, 10, 8}), *v2 = rnd(4, (int64_t[]){1, 2, 10, 8});
    as_tensor *q3 = rnd(3, (int64_t[]){4, 10, 8});
    as_tensor *lay = as_full(2, (int64_t[]){10, 10}, 1, AS_BOOL, AS_CPU);
    as_tensor *lay_bad = as_full(2, (int64_t[]){3, 7}, 1, AS_BOOL, AS_CPU);
    as_tensor *lay_f = as_full(2, (int64_t[]){10, 10}, 1, AS_F32, AS_CPU);
    as_tensor *lay_h = as_full(3, (int64_t[]){3, 10, 10}, 1, AS_BOOL, AS_CPU);
    as_tensor *mask_bad = as_full(2, (int64_t[]){3, 10}, 1, AS_BOOL, AS_CPU);
    as_attention_opts o = {.scale = NAN};
    expect_error(as_sparse_attention(q, k, k, NULL, &o, lay, 4, false), "sparse_attention: the query heads (4)");
    expect_error(as_sparse_attention(q3, k2, v2, NULL, &o, lay, 4, false), "sparse_attention: q must be 4-d");
    expect_error(as_sparse_attention(q, k2, v2, NULL, &o, lay_bad, 4, false), "fits neither the elements (10, 10) nor the 4-blocks (3, 3)");
    expect_error(as_sparse_attention(q, k2, v2, NULL, &o, lay_f, 4, false), "sparse_attention: layout must be a 2-d or 3-d bool");
    expect_error(as_sparse_attention(q, k2, v2, NULL, &o, lay_h, 4, false), "first dim must be 1 or 4");
    expect_error(as_sparse_attention(q, k2, v2, NULL, &o, NULL, 4, false), "sparse_attention: layout must be a bool Tensor");
    expect_error(as_sparse_attention(q, k2, v2, NULL, &o, lay, 0, false), "sparse_attention: block_size must be a positive integer, got 0");
    expect_error(as_local_attention(q, k2, v2, mask_bad, &o, 3, false), "local_attention: mask of shape (3, 10) is not broadcastable");
    expect_error(as_local_attention(q, k2, v2, NULL, &o, -1, false), "local_attention: window_size must be a non-negative integer, got -1");
    expect_error(as_sink_attention(q, k2, v2, NULL, &o, 0, 4, false), "sink_attention: window_size must be a positive integer, got 0");
    expect_error(as_sink_attention(q, k2, v2, NULL, &o, 8, -2, false), "sink_attention: num_sinks must be a non-negative integer");
    expect_error(as_dynamic_attention(q, k2, v2, NULL, &o, 0, false), "dynamic_attention: top_k must be a positive integer, got 0");
    as_attention_opts bad = {.scale = NAN, .dropout = 1.5};
    expect_error(as_dynamic_attention(q, k2, v2, NULL, &bad, 3, false), "dynamic_attention: dropout must be in [0, 1)");
    expect_error(as_pattern(AS_PATTERN_STRIDED, 10, 0, 0, false), "patterns.strided: stride must be a positive integer");
    expect_error(as_pattern(AS_PATTERN_LOCAL, -3, 1, 0, false), "patterns.local_1d: L must be an integer in [0, 65536]");
    expect_error(as_pattern_random(10, 1.5, 0), "patterns.random: p must be a probability");
    expect_error(as_pattern_to_blocks(lay_f, 2), "patterns.to_blocks: mask must be a 2-d or 3-d bool");
    expect_error(as_pattern_from_blocks(lay, 4, 10, 10), "does not cover (10, 10) in blocks of 4");
    as_release(q), as_release(k), as_release(k2), as_release(v2), as_release(q3), as_release(lay);
    as_release(lay_bad), as_release(lay_f), as_release(lay_h), as_release(mask_bad);
}

/* The NaN of a NaN score shows in top-k's output, as in exact attention. */
static void test_topk_nan(void)
{
    as_tensor *q = rnd(4, (int64_t[]){1, 1, 2, 4}), *k = rnd(4, (int64_t[]){1, 1, 5, 4});
    as_tensor *v = rnd(4, (int64_t[]){1, 1, 5, 3});
    ((float *)as_data(k))[0] = NAN;
    as_attention_opts o = {.scale = NAN};
    as_tensor *out = as_dynamic_attention(q, k, v, NULL, &o, 2, false);
    CHECK(out && isnan(as_get_flat(out, 0)) && isnan(as_get_flat(out, 5)));
    as_release(out), as_release(q), as_release(k), as_release(v);
}

int main(void)
{
    as_manual_seed(11);
    test_sparse_random();
    test_sparse_full_and_empty();
    test_band_random();
    test_band_long();
    test_topk_random();
    test_topk_ties();
    test_topk_nan();
    test_dropout();
    test_views_and_half();
    test_patterns();
    test_errors();
    printf("tile kernels ran on %s\n", as_cpu_sp_isa_name());
    return as_test_report("test_zoo_sparse");
}
