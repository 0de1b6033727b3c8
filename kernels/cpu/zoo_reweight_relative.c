/* relative_attention: softmax(q k^T * scale + b_h(j - i) + mask) v.
 *
 * T5 (Raffel et al. 2020, sec. 2.1): b_h is a learned scalar per head and
 * bucket of the relative position, the buckets exact for small offsets and
 * log-spaced up to max_distance.  ALiBi (Press et al. 2022, sec. 3):
 * b_h(j - i) = -slope_h |j - i|, fixed slopes.  Either way the caller tables
 * b_h over every relative position the inputs have (Lq + Lk - 1 of them), so
 * the row loop is one gather-add before the softmax. */
#include <math.h>

#include "zoo_reweight.h"

/* transformers' T5Attention._relative_position_bucket, computed as it is
 * (the log in float32, truncated toward zero). */
int64_t as_cpu_t5_bucket(int64_t rel, bool bidirectional, int64_t num_buckets, int64_t max_distance)
{
    int64_t bucket = 0;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket += num_buckets;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0; /* -min(rel, 0) */
    }
    int64_t max_exact = num_buckets / 2;
    if (rel < max_exact) return bucket + rel;
    float ratio = logf((float)rel / (float)max_exact) / (float)log((double)max_distance / (double)max_exact);
    int64_t large = max_exact + (int64_t)(ratio * (float)(num_buckets - max_exact));
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

/* Press et al.'s get_slopes: for n = 2^k heads slope_i = 2^(-8 (i + 1) / n);
 * otherwise the slopes of the largest power of two p2 <= H, then every other
 * slope of 2 p2 heads (get_slopes(2 p2)[0::2][:H - p2]). */
static double slope_pow2(int64_t n, int64_t i) { return exp2(-8.0 * (double)(i + 1) / (double)n); }

void as_cpu_alibi_slopes(int64_t H, float *slopes)
{
    int64_t p2 = 1;
    while (p2 * 2 <= H) p2 *= 2;
    for (int64_t i = 0; i < p2 && i < H; i++) slopes[i] = (float)slope_pow2(p2, i);
    for (int64_t i = 0; p2 + i < H; i++) slopes[p2 + i] = (float)slope_pow2(2 * p2, 2 * i);
}

static void relative_rows(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t j0,
                          int64_t n, float *s, int64_t lds, void *scratch)
{
    const as_cpu_rw_relative_ctx *c = p->mech.ctx;
    int64_t width = p->a.Lq + p->a.Lk - 1, off = p->a.Lk - p->a.Lq;
    const float *tab = c->table + h * width + (p->a.Lk - 1);
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * lds;
        const float *t = tab + j0 - (i0 + r + off); /* t[c] = b_h(j0 + c - i') */
        for (int64_t col = 0; col < n; col++) row[col] += t[col];
        as_cpu_rw_softmax_row(row, n);
    }
}

const as_cpu_rw_mech as_cpu_rw_relative_mech = {.rows = relative_rows};
