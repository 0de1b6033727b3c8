/* flex_attention's inner step: the online softmax of FlashAttention
 * (Dao et al. 2022, Algorithm 1) applied to one tile of scores that Lua
 * code produced (score_mod, mask_mod), so the loop over tiles can live in
 * Lua while the per-element work stays here:
 *
 *   m' = max(m, rowmax S)    P = exp(S - m')    l' = l e^(m - m') + rowsum P
 *   acc' = acc e^(m - m') + P V
 *
 * A row whose scores are all -inf so far keeps m = -inf, l = 0, acc = 0. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attention_flash.h"
#include "parallel.h"
#include "zoo_reweight.h"

static void step_head(const as_cpu_rw_flex_args *a, int64_t r)
{
    int64_t b = r / a->H, h = r % a->H, hk = h / (a->H / a->Hkv);
    int64_t Bq = a->Bq, Bk = a->Bk, Dv = a->Dv;
    float *s = a->s + r * Bq * Bk, *acc = a->acc + r * Bq * Dv;
    float *m = a->m + r * Bq, *l = a->l + r * Bq;
    const bool *keep = a->keep ? a->keep + r * Bq * Bk : NULL;
    const float *v = a->v + b * a->vs[0] + hk * a->vs[1];
    bool any = false;
    for (int64_t i = 0; i < Bq; i++) {
        float *row = s + i * Bk, mx = m[i];
        for (int64_t j = 0; j < Bk; j++) mx = row[j] > mx ? row[j] : mx;
        if (mx == -INFINITY) { /* nothing visible yet: P = 0 */
            memset(row, 0, (size_t)Bk * sizeof *row);
            continue;
        }
        any = true;
        float alpha = m[i] == -INFINITY ? 0.0f : expf(m[i] - mx);
        for (int64_t j = 0; j < Bk; j++) row[j] -= mx;
        as_cpu_flash_exp(row, row, Bk);
        double sum = 0;
        for (int64_t j = 0; j < Bk; j++) sum += row[j];
        l[i] = l[i] * alpha + (float)sum;
        m[i] = mx;
        if (alpha != 1.0f)
            for (int64_t e = 0; e < Dv; e++) acc[i * Dv + e] *= alpha;
        if (keep)
            for (int64_t j = 0; j < Bk; j++) row[j] = keep[i * Bk + j] ? row[j] * a->keep_scale : 0.0f;
    }
    if (any && Dv > 0 && Bk > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Bq, (int)Dv, (int)Bk, 1.0f, s, (int)Bk,
                    v, (int)a->vs[2], 1.0f, acc, (int)Dv);
}

static void flex_item(void *ctx, int64_t r, int t)
{
    (void)t;
    step_head(ctx, r);
}

void as_cpu_rw_flex_step(const as_cpu_rw_flex_args *a)
{
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    as_cpu_parallel_items(a->B * a->H, nthreads, flex_item, (void *)a);
}

void as_cpu_rw_flex_finish(float *out, const float *acc, const float *l, int64_t rows, int64_t Dv)
{
    for (int64_t i = 0; i < rows; i++) {
        float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f;
        for (int64_t e = 0; e < Dv; e++) out[i * Dv + e] = acc[i * Dv + e] * inv;
    }
}
