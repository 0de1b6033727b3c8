/* gated_attention: head-wise output gating (Qiu et al. 2025, "Gated
 * Attention for Large Language Models", position G1): the attention output
 * of each head is multiplied by sigma(x W_g + b_g).  The core sees only q,
 * k and v, so the gate reads the query of its own head (the head's
 * projection of the block's input, which is what the paper's x feeds):
 *
 *   out[b, h, i, e] *= sigma(q[b, h, i, :] . W_g[h, :, g] + b_g[h, g]),
 *   g = 0 (headwise, G = 1) or g = e (elementwise, G = Dv). */
#include <math.h>

#include "zoo_reweight.h"

void as_cpu_rw_gate(float *out, const float *q, const float *w, const float *b, int64_t B,
                    int64_t H, int64_t Lq, int64_t D, int64_t Dv, int64_t G)
{
    int64_t rows = B * H * Lq;
#pragma omp parallel for schedule(static) if (rows * D * G > 32768)
    for (int64_t row = 0; row < rows; row++) {
        int64_t h = (row / Lq) % H;
        const float *qi = q + row * D, *wh = w + h * D * G, *bh = b + h * G;
        float *o = out + row * Dv;
        for (int64_t g = 0; g < G; g++) {
            double a = bh[g];
            for (int64_t d = 0; d < D; d++) a += (double)qi[d] * wh[d * G + g];
            float gate = (float)(1.0 / (1.0 + exp(-a)));
            if (G == 1) {
                for (int64_t e = 0; e < Dv; e++) o[e] *= gate;
            } else {
                o[g] *= gate;
            }
        }
    }
}
