/* sigmoid_attention (Ramapuram et al. 2024, "Theory, Analysis, and Best
 * Practices for Sigmoid Self-Attention"):
 *
 *   out = sigma(q k^T * scale + b) v,   b = -log(Lk) by default
 *
 * Each weight stands alone: no row normalisation, so a masked key (-inf)
 * contributes sigma(-inf) = 0 and a row with nothing to attend to is 0. */
#include <math.h>

#include "attention_flash.h"
#include "zoo_reweight.h"

static void sigmoid_rows(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t j0,
                         int64_t n, float *s, int64_t lds, void *scratch)
{
    const as_cpu_rw_sigmoid_ctx *c = p->mech.ctx;
    float *e = scratch; /* (n) */
    for (int64_t r = 0; r < m; r++) {
        float *row = s + r * lds;
        /* sigma(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|) <= 1 */
        for (int64_t col = 0; col < n; col++) {
            row[col] += c->bias;
            e[col] = -fabsf(row[col]);
        }
        as_cpu_flash_exp(e, e, n);
        for (int64_t col = 0; col < n; col++)
            row[col] = row[col] >= 0 ? 1.0f / (1.0f + e[col]) : e[col] / (1.0f + e[col]);
    }
}

static size_t sigmoid_scratch(const as_cpu_rw_params *p) { return (size_t)(p->a.Lk > 0 ? p->a.Lk : 1) * sizeof(float); }

const as_cpu_rw_mech as_cpu_rw_sigmoid_mech = {.rows = sigmoid_rows, .scratch_bytes = sigmoid_scratch};
