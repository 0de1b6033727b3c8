/* adaptive_attention: adaptive attention span (Sukhbaatar et al. 2019).
 *
 *   m_z(x) = clamp((R + z - x) / R, 0, 1)      x: distance from query to key
 *   a_ij   = m_z(x_ij) exp(s_ij) / sum_j' m_z(x_ij') exp(s_ij')
 *
 * with a learned span z per head and a ramp R.  x = i' - j (causal: keys in
 * the past) or |i' - j| (non-causal), i' = i + Lk - Lq.  Keys with
 * x >= z + R have m = 0: the range callback trims each block to the keys
 * within z + R of some row, so they are never visited. */
#include <math.h>
#include <string.h>

#include "attention_flash.h"
#include "zoo_reweight.h"

/* Distances with m > 0: x < z + R, i.e. x <= ceil(z + R) - 1. */
static int64_t reach(const as_cpu_rw_adaptive_ctx *c, int64_t h)
{
    double w = ceil((double)c->span[h] + (double)c->ramp);
    return w < 1 ? 1 : (int64_t)w;
}

static void adaptive_range(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t *j0,
                           int64_t *n)
{
    const as_cpu_rw_adaptive_ctx *c = p->mech.ctx;
    int64_t W = reach(c, h), off = p->a.Lk - p->a.Lq;
    int64_t first = i0 + off, last = i0 + m - 1 + off;
    int64_t lo = first - W + 1, hi = p->a.causal ? last : last + W - 1; /* inclusive */
    if (lo < *j0) lo = *j0;
    if (hi > *j0 + *n - 1) hi = *j0 + *n - 1;
    *j0 = lo;
    *n = hi >= lo ? hi - lo + 1 : 0;
}

static void adaptive_rows(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t j0,
                          int64_t n, float *s, int64_t lds, void *scratch)
{
    const as_cpu_rw_adaptive_ctx *c = p->mech.ctx;
    float *mz = scratch; /* (n): the soft mask of one row */
    float z = c->span[h], R = c->ramp;
    int64_t off = p->a.Lk - p->a.Lq;
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * lds;
        int64_t iq = i0 + r + off;
        float mx = -INFINITY;
        for (int64_t col = 0; col < n; col++) {
            int64_t x = iq - (j0 + col);
            if (!p->a.causal && x < 0) x = -x;
            float w = (R + z - (float)x) / R;
            w = w < 0 ? 0 : w > 1 ? 1 : w;
            mz[col] = w;
            if (w > 0 && row[col] > mx) mx = row[col];
        }
        if (mx == -INFINITY) {
            memset(row, 0, (size_t)n * sizeof *row);
            continue;
        }
        for (int64_t col = 0; col < n; col++) row[col] = mz[col] > 0 ? row[col] - mx : -INFINITY;
        as_cpu_flash_exp(row, row, n);
        double sum = 0;
        for (int64_t col = 0; col < n; col++) {
            row[col] *= mz[col];
            sum += row[col];
        }
        float inv = sum > 0 ? (float)(1.0 / sum) : 0.0f;
        for (int64_t col = 0; col < n; col++) row[col] *= inv;
    }
}

static size_t adaptive_scratch(const as_cpu_rw_params *p) { return (size_t)(p->a.Lk > 0 ? p->a.Lk : 1) * sizeof(float); }

const as_cpu_rw_mech as_cpu_rw_adaptive_mech = {
    .range = adaptive_range, .rows = adaptive_rows, .scratch_bytes = adaptive_scratch,
};
