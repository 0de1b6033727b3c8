/* dynamic_attention: per-query top-k (Zhao et al. 2019, "Explicit Sparse
 * Transformer", eq. 4-6; Gupta et al. 2021 chunk queries the same way).
 * Per (batch, head, block of BQ queries):
 *
 *   S (m, n) = Q_blk K^T * scale              sgemm; n = the keys the block may see
 *   S        = masked (-inf) / biased         causal, bool keep, float bias
 *   keep_i   = the k largest of row i         O(n): a heap for small k, else a
 *              (of equal scores the lower        branch-free quickselect for the
 *              key index)                        k-th largest and one scan
 *   o_i      = sum_keep softmax_keep(s_i) v_j  a gather of k value rows, O(k Dv),
 *              or, when k is a sizeable part of n, the weights scattered
 *              into S and O_blk = P V by sgemm
 *
 * A thread holds BQ x n scores, never Lq x Lk. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attention_flash.h"
#include "parallel.h"
#include "zoo_sparse.h"

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t scores_bytes(const as_attn_f32_params *p)
{
    return align64((size_t)AS_CPU_TOPK_BQ * (size_t)(p->Lk > 0 ? p->Lk : 1) * sizeof(float));
}

/* scores, then a copy of one row, the kept indices and their weights */
static size_t per_thread(const as_attn_f32_params *p)
{
    size_t n = (size_t)(p->Lk > 0 ? p->Lk : 1);
    return scores_bytes(p) + align64(3 * n * sizeof(float)) + align64(n * sizeof(int32_t)) +
           align64(n * sizeof(float));
}

size_t as_cpu_topk_workspace_size(const as_attn_f32_params *p, int nthreads)
{
    return per_thread(p) * (size_t)(nthreads > 0 ? nthreads : 1) + 64;
}

/* A heap of the best k so far, its root the worst of them: the smallest
 * score, and of equal scores the later key (ties go to the lower index). */
static inline bool worse(float va, int32_t ia, float vb, int32_t ib)
{
    return va < vb || (va == vb && ia > ib);
}

static void sift_down(float *hv, int32_t *hi, int64_t k, int64_t at)
{
    float v = hv[at];
    int32_t i = hi[at];
    for (;;) {
        int64_t c = 2 * at + 1;
        if (c >= k) break;
        if (c + 1 < k && worse(hv[c + 1], hi[c + 1], hv[c], hi[c])) c++;
        if (!worse(hv[c], hi[c], v, i)) break;
        hv[at] = hv[c], hi[at] = hi[c];
        at = c;
    }
    hv[at] = v, hi[at] = i;
}

/* The k-th smallest (0-based) of a[0..n), with b and c as scratch of n
 * each (a is overwritten).  Quickselect whose partition is branch-free:
 * every element is written to both the low and the high buffer and only
 * the counts move, so random scores cost no mispredictions; elements equal
 * to the pivot drop out, so runs of ties end it at once. */
static float kth_smallest(float *a, float *b, float *c, int64_t n, int64_t k)
{
    float *cur = a, *lo = b, *hi = c;
    bool first = n > 128;
    while (n > 16) {
        float piv;
        if (first) {
            /* the first pivot from 16 sorted samples, two samples past the
             * target's quantile on the side away from the middle: the part
             * that keeps the target is then about 3/16 of n, not half */
            float smp[16];
            for (int i = 0; i < 16; i++) {
                float e = cur[(int64_t)i * n / 16];
                int j = i;
                for (; j > 0 && smp[j - 1] > e; j--) smp[j] = smp[j - 1];
                smp[j] = e;
            }
            int q = (int)(k * 16 / n);
            q = 2 * k >= n ? q - 2 : q + 2;
            piv = smp[q < 0 ? 0 : q > 15 ? 15 : q];
            first = false;
        } else {
            float x = cur[0], y = cur[n / 2], z = cur[n - 1];
            piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        }
        int64_t nl = 0, nh = 0;
        for (int64_t i = 0; i < n; i++) {
            float e = cur[i];
            lo[nl] = e, hi[nh] = e;
            nl += e < piv, nh += e > piv;
        }
        if (k < nl) {
            float *t = cur;
            cur = lo, lo = t, n = nl;
        } else if (k >= n - nh) {
            float *t = cur;
            k -= n - nh;
            cur = hi, hi = t, n = nh;
        } else {
            return piv;
        }
    }
    for (int64_t i = 1; i < n; i++) { /* insertion sort of the last few */
        float e = cur[i];
        int64_t j = i;
        for (; j > 0 && cur[j - 1] > e; j--) cur[j] = cur[j - 1];
        cur[j] = e;
    }
    return cur[k];
}

/* Large k: the k-th largest value T by quickselect over a copy, then the
 * keys above T and the first of those equal to T.  The passes are
 * branch-free (stores always made, counts advanced by the comparison). */
static int64_t select_threshold(const float *x, int64_t n, int64_t k, int32_t *idx, float *scratch)
{
    int64_t cnt = 0;
    for (int64_t j = 0; j < n; j++) {
        scratch[cnt] = x[j];
        cnt += x[j] != -INFINITY;
    }
    if (cnt <= k) {
        int64_t t = 0;
        for (int64_t j = 0; j < n; j++) {
            idx[t] = (int32_t)j;
            t += x[j] != -INFINITY;
        }
        return t;
    }
    float T = kth_smallest(scratch, scratch + n, scratch + 2 * n, cnt, cnt - k);
    int32_t *eq = (int32_t *)scratch; /* keys equal to T, in order */
    int64_t above = 0, ne = 0;
    for (int64_t j = 0; j < n; j++) {
        idx[above] = (int32_t)j, eq[ne] = (int32_t)j;
        above += x[j] > T, ne += x[j] == T;
    }
    for (int64_t t = 0; above < k; t++) idx[above++] = eq[t];
    return k;
}

int64_t as_cpu_topk_select(const float *x, int64_t n, int64_t k, int32_t *idx, float *scratch)
{
    int64_t t = 0, j = 0;
    if (k <= 0) return 0;
    if (k > AS_CPU_TOPK_HEAP_MAX) return select_threshold(x, n, k, idx, scratch);
    for (; j < n && t < k; j++) /* the first k visible keys fill the heap */
        if (x[j] != -INFINITY) scratch[t] = x[j], idx[t++] = (int32_t)j;
    if (t < k || j == n) return t;
    for (int64_t a = k / 2 - 1; a >= 0; a--) sift_down(scratch, idx, k, a);
    /* a later key enters only when strictly greater than the worst kept one;
     * after the first few hundred keys that is rare, so the branch predicts */
    for (; j < n; j++)
        if (x[j] > scratch[0]) {
            scratch[0] = x[j], idx[0] = (int32_t)j;
            sift_down(scratch, idx, k, 0);
        }
    return k;
}

/* Masks rows [i0, i0 + m) x keys [0, n) of (b, h) in s. */
static void apply_mask(const as_attn_f32_params *p, int64_t b, int64_t h, int64_t i0, int64_t m,
                       int64_t n, float *s)
{
    const int64_t off = p->Lk - p->Lq;
    const as_attn_operand *mk = &p->mask;
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * n;
        int64_t i = i0 + r;
        if (p->causal)
            for (int64_t j = i + off + 1 < 0 ? 0 : i + off + 1; j < n; j++) row[j] = -INFINITY;
        if (!mk->data) continue;
        int64_t base = b * mk->stride[0] + h * mk->stride[1] + i * mk->stride[2], sj = mk->stride[3];
        if (mk->dtype == AS_BOOL) {
            const uint8_t *keep = (const uint8_t *)mk->data + base;
            for (int64_t j = 0; j < n; j++)
                if (!keep[j * sj]) row[j] = -INFINITY;
        } else {
            const float *add = (const float *)mk->data + base;
            for (int64_t j = 0; j < n; j++) row[j] += add[j * sj];
        }
    }
}

static void run_item(const as_attn_f32_params *p, int64_t top_k, int64_t item, char *ws)
{
    const int64_t nblk = (p->Lq + AS_CPU_TOPK_BQ - 1) / AS_CPU_TOPK_BQ;
    const int64_t bh = item / nblk, i0 = (nblk - 1 - item % nblk) * AS_CPU_TOPK_BQ;
    const int64_t b = bh / p->H, h = bh % p->H, hk = h / (p->H / p->Hkv);
    const int64_t m = p->Lq - i0 < AS_CPU_TOPK_BQ ? p->Lq - i0 : AS_CPU_TOPK_BQ;
    const int64_t D = p->D, Dv = p->Dv, off = p->Lk - p->Lq;
    float *out = p->out + (bh * p->Lq + i0) * Dv;
    int64_t n = p->Lk;
    if (p->causal) n = i0 + m + off < n ? i0 + m + off : n; /* the last row's keys */
    if (n <= 0) {
        memset(out, 0, (size_t)(m * Dv) * sizeof *out);
        return;
    }
    float *s = (float *)ws;
    float *copy = (float *)(ws + scores_bytes(p));
    int32_t *idx = (int32_t *)((char *)copy + align64(3 * (size_t)p->Lk * sizeof(float)));
    float *w = (float *)((char *)idx + align64((size_t)p->Lk * sizeof(int32_t)));

    const float *q = p->q + (bh * p->Lq + i0) * D;
    const float *k = p->k + (b * p->Hkv + hk) * p->Lk * D;
    const float *v = p->v + (b * p->Hkv + hk) * p->Lk * Dv;
    if (D > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)D, p->scale, q,
                    (int)D, k, (int)D, 0.0f, s, (int)n);
    else
        memset(s, 0, (size_t)(m * n) * sizeof *s);
    apply_mask(p, b, h, i0, m, n, s);

    const uint32_t thr = p->dropout > 0 ? as_attn_drop_threshold(p->dropout) : 0;
    const float keep_scale = p->dropout > 0 ? 1.0f / (1.0f - p->dropout) : 1.0f;
    /* gather k rows of V per query, or scatter the weights into S for one sgemm */
    const bool dense = top_k * 8 >= n && Dv > 0;
    bool nan_rows = false;
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * n;
        float *o = out + r * Dv;
        bool nan = false;
        for (int64_t j = 0; j < n; j++) nan |= row[j] != row[j];
        int64_t cnt = nan ? 0 : as_cpu_topk_select(row, n, top_k, idx, copy);
        float mx = -INFINITY;
        for (int64_t t = 0; t < cnt; t++) mx = row[idx[t]] > mx ? row[idx[t]] : mx;
        for (int64_t t = 0; t < cnt; t++) w[t] = row[idx[t]] - mx;
        as_cpu_flash_exp(w, w, cnt);
        double sum = 0;
        for (int64_t t = 0; t < cnt; t++) sum += w[t];
        float inv = cnt > 0 ? (float)(1.0 / sum) : 0.0f;
        uint32_t key = p->dropout > 0 ? as_attn_row_key(p->seed, p->H, p->Lq, b, h, i0 + r) : 0;
        for (int64_t t = 0; t < cnt; t++) {
            w[t] *= inv;
            if (p->dropout > 0) w[t] = as_attn_keep(key, idx[t], thr) ? w[t] * keep_scale : 0.0f;
        }
        if (dense) { /* row becomes P's row */
            memset(row, 0, (size_t)n * sizeof *row);
            for (int64_t t = 0; t < cnt; t++) row[idx[t]] = w[t];
            nan_rows |= nan;
            if (nan) row[0] = NAN; /* marks the row; fixed after the sgemm */
            continue;
        }
        memset(o, 0, (size_t)Dv * sizeof *o);
        if (nan) {
            for (int64_t c = 0; c < Dv; c++) o[c] = NAN;
            continue;
        }
        for (int64_t t = 0; t < cnt; t++) {
            float a = w[t];
            if (a == 0.0f) continue;
            const float *vr = v + (int64_t)idx[t] * Dv;
            for (int64_t c = 0; c < Dv; c++) o[c] += a * vr[c];
        }
    }
    if (!dense) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)Dv, (int)n, 1.0f, s, (int)n, v,
                (int)Dv, 0.0f, out, (int)Dv);
    for (int64_t r = 0; nan_rows && r < m; r++)
        if (s[r * n] != s[r * n])
            for (int64_t c = 0; c < Dv; c++) out[r * Dv + c] = NAN;
}

typedef struct {
    const as_attn_f32_params *p;
    int64_t top_k;
    char *ws;
    size_t stride;
} topk_items;

static void topk_item(void *ctx, int64_t it, int t)
{
    const topk_items *c = ctx;
    run_item(c->p, c->top_k, it, c->ws + (size_t)t * c->stride);
}

void as_cpu_topk_attention(const as_attn_f32_params *p, int64_t top_k, void *workspace, int nthreads)
{
    if (p->B == 0 || p->H == 0 || p->Lq == 0) return;
    const int64_t nblk = (p->Lq + AS_CPU_TOPK_BQ - 1) / AS_CPU_TOPK_BQ;
    topk_items c = {p, top_k, (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63), per_thread(p)};
    as_cpu_parallel_items(p->B * p->H * nblk, nthreads, topk_item, &c);
}

int as_cpu_topk_keep_rows(const float *x, int64_t rows, int64_t n, int64_t k, uint8_t *keep)
{
    int bad = 0;
#pragma omp parallel reduction(| : bad) if (rows * n >= 65536 && rows > 1)
    {
        int32_t *idx = malloc(sizeof *idx * (size_t)(n > 0 ? n : 1));
        float *scratch = malloc(sizeof *scratch * 3 * (size_t)(n > 0 ? n : 1));
        if (!idx || !scratch) bad = 1;
#pragma omp for
        for (int64_t r = 0; r < rows; r++) {
            if (!idx || !scratch) continue;
            uint8_t *kr = keep + r * n;
            memset(kr, 0, (size_t)n);
            int64_t got = as_cpu_topk_select(x + r * n, n, k, idx, scratch);
            for (int64_t t = 0; t < got; t++) kr[idx[t]] = 1;
        }
        free(idx), free(scratch);
    }
    return bad ? -1 : 0;
}
