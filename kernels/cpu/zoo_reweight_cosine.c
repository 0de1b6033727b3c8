/* cosine_attention's one extra pass (Swin Transformer V2, Liu et al. 2022,
 * eq. 2): rows of q and k scaled to unit length, as F.normalize does, the
 * query rows also by the head's inverse temperature, so that the exact
 * fused kernel then computes softmax(cos(q_i, k_j) / tau_h + bias) v. */
#include <math.h>

#include "zoo_reweight.h"

void as_cpu_rw_l2_normalize(float *dst, const float *src, int64_t B, int64_t H, int64_t L,
                            int64_t D, const float *gain)
{
    int64_t rows = B * H * L;
#pragma omp parallel for schedule(static) if (rows * D > 65536)
    for (int64_t row = 0; row < rows; row++) {
        const float *x = src + row * D;
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += (double)x[d] * x[d];
        double norm = sqrt(ss);
        float f = (float)((gain ? gain[(row / L) % H] : 1.0) / (norm > 1e-12 ? norm : 1e-12));
        for (int64_t d = 0; d < D; d++) dst[row * D + d] = x[d] * f;
    }
}
