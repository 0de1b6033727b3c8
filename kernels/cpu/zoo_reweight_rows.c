/* The reweight driver: per (batch, head, block of BQ queries)
 *
 *   S (m, n) = Q_blk (m, D) K_rng^T (D, n) * scale    sgemm
 *   S        = masked (-inf) / biased by the mask    causal, bool, float
 *   P        = mech.rows(S)                          the mechanism's reweighting
 *   P        = P * keep / (1 - p)                    dropout, training only
 *   O_blk    = P (m, n) V_rng (n, Dv)                sgemm
 *
 * Only BQ x n scores live at a time (per thread). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>


#include "attention_flash.h"
#include "parallel.h"
#include "zoo_reweight.h"

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t per_thread(const as_cpu_rw_params *p)
{
    size_t s = align64((size_t)AS_CPU_RW_BQ * (size_t)(p->a.Lk > 0 ? p->a.Lk : 1) * sizeof(float));
    if (p->mech.scratch_bytes) s += align64(p->mech.scratch_bytes(p));
    return s;
}

size_t as_cpu_rw_workspace_size(const as_cpu_rw_params *p, int nthreads)
{
    return per_thread(p) * (size_t)(nthreads > 0 ? nthreads : 1) + 64;
}

void as_cpu_rw_softmax_row(float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    for (int64_t j = 0; j < n; j++) x[j] -= mx;
    as_cpu_flash_exp(x, x, n); /* exp(-inf) = 0 */
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += x[j];
    /* weights below FLT_MIN flushed to 0: subnormals would slow the P V product */
    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) {
        float w = x[j] * inv;
        x[j] = w < FLT_MIN ? 0.0f : w;
    }
}

/* Masks rows [i0, i0 + m) x keys [j0, j0 + n) of (b, h) in s. */
static void apply_mask(const as_cpu_rw_params *p, int64_t b, int64_t h, int64_t i0, int64_t m,
                       int64_t j0, int64_t n, float *s, int64_t lds)
{
    int64_t off = p->a.Lk - p->a.Lq;
    const as_attn_operand *mk = &p->a.mask;
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * lds;
        int64_t i = i0 + r;
        if (p->a.causal) {
            int64_t last = i + off - j0; /* columns past last are in the future */
            for (int64_t c = last + 1 < 0 ? 0 : last + 1; c < n; c++) row[c] = -INFINITY;
        }
        if (!mk->data) continue;
        int64_t base = b * mk->stride[0] + h * mk->stride[1] + i * mk->stride[2];
        int64_t sj = mk->stride[3];
        if (mk->dtype == AS_BOOL) {
            const bool *keep = (const bool *)mk->data + base;
            for (int64_t c = 0; c < n; c++)
                if (!keep[(j0 + c) * sj]) row[c] = -INFINITY;
        } else {
            const float *add = (const float *)mk->data + base;
            for (int64_t c = 0; c < n; c++) row[c] += add[(j0 + c) * sj];
        }
    }
}

static void drop(const as_cpu_rw_params *p, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t j0,
                 int64_t n, float *s, int64_t lds)
{
    uint32_t thr = as_attn_drop_threshold(p->a.dropout);
    float ks = 1.0f / (1.0f - p->a.dropout);
    for (int64_t r = 0; r < m; r++) {
        uint32_t key = as_attn_row_key(p->a.seed, p->a.H, p->a.Lq, b, h, i0 + r);
        float *row = s + r * lds;
        for (int64_t c = 0; c < n; c++)
            row[c] = as_attn_keep(key, j0 + c, thr) ? row[c] * ks : 0.0f;
    }
}

static int64_t block_rows(const as_cpu_rw_params *p)
{
    int64_t bq = p->mech.bq;
    return bq >= 1 && bq <= AS_CPU_RW_BQ ? bq : AS_CPU_RW_BQ;
}

static void run_item(const as_cpu_rw_params *p, int64_t item, float *s, void *scratch)
{
    int64_t BQ = block_rows(p), nblk = (p->a.Lq + BQ - 1) / BQ;
    int64_t bh = item / nblk, i0 = (item % nblk) * BQ;
    int64_t b = bh / p->a.H, h = bh % p->a.H, hk = h / (p->a.H / p->a.Hkv);
    int64_t m = p->a.Lq - i0 < BQ ? p->a.Lq - i0 : BQ;
    int64_t D = p->a.D, Dv = p->a.Dv;
    float *out = p->a.out + ((bh * p->a.Lq) + i0) * Dv;

    int64_t j0 = 0, n = p->a.Lk;
    if (p->a.causal) { /* the last row sees keys up to i0 + m - 1 + Lk - Lq */
        int64_t end = i0 + m + p->a.Lk - p->a.Lq;
        n = end < n ? end : n;
    }
    if (n > 0 && p->mech.range) p->mech.range(p, h, i0, m, &j0, &n);
    if (n <= 0) {
        memset(out, 0, (size_t)(m * Dv) * sizeof *out);
        return;
    }
    const float *q = p->a.q + (bh * p->a.Lq + i0) * D;
    const float *k = p->a.k + ((b * p->a.Hkv + hk) * p->a.Lk + j0) * D;
    const float *v = p->a.v + ((b * p->a.Hkv + hk) * p->a.Lk + j0) * Dv;
    int64_t lds = n;
    int ld = D > 0 ? (int)D : 1;
    if (D > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)D, p->a.scale, q, ld, k,
                    ld, 0.0f, s, (int)lds);
    } else {
        memset(s, 0, (size_t)(m * lds) * sizeof *s);
    }
    apply_mask(p, b, h, i0, m, j0, n, s, lds);
    p->mech.rows(p, h, i0, m, j0, n, s, lds, scratch);
    if (p->a.dropout > 0) drop(p, b, h, i0, m, j0, n, s, lds);
    if (Dv > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)Dv, (int)n, 1.0f, s, (int)lds,
                    v, (int)Dv, 0.0f, out, (int)Dv);
}

typedef struct {
    const as_cpu_rw_params *p;
    char *ws;
    size_t stride, sbytes;
} rw_items;

static void rw_item(void *ctx, int64_t it, int t)
{
    const rw_items *c = ctx;
    char *mine = c->ws + (size_t)t * c->stride;
    run_item(c->p, it, (float *)mine, mine + c->sbytes);
}

void as_cpu_rw_attention(const as_cpu_rw_params *p, void *workspace, int nthreads)
{
    if (p->a.B == 0 || p->a.H == 0 || p->a.Lq == 0) return;
    int64_t BQ = block_rows(p), nblk = (p->a.Lq + BQ - 1) / BQ;
    rw_items c = {p, (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63), per_thread(p),
                  align64((size_t)AS_CPU_RW_BQ * (size_t)(p->a.Lk > 0 ? p->a.Lk : 1) * sizeof(float))};
    as_cpu_parallel_items(p->a.B * p->a.H * nblk, nthreads, rw_item, &c);
}
