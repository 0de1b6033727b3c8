#include "zoo_linear.h"

#include <stdlib.h>
#include <string.h>

void as_cpu_linear_causal(const float *fq, const float *fk, const float *v, float *out, int64_t N, int64_t Lq,
                          int64_t Lk, int64_t F, int64_t Dv)
{
    int64_t off = Lk - Lq;
#pragma omp parallel
    {
        /* the state of one item: S (F x Dv) and z (F), in double so long
         * sequences do not drift */
        double *S = malloc(sizeof(double) * (size_t)(F * Dv + F));
#pragma omp for schedule(dynamic, 1)
        for (int64_t n = 0; n < N; n++) {
            if (!S) continue;
            double *z = S + F * Dv;
            memset(S, 0, sizeof(double) * (size_t)(F * Dv + F));
            const float *q = fq + n * Lq * F, *k = fk + n * Lk * F, *vv = v + n * Lk * Dv;
            float *o = out + n * Lq * Dv;
            int64_t seen = 0; /* keys folded into the state so far */
            for (int64_t i = 0; i < Lq; i++) {
                int64_t upto = i + off + 1; /* keys 0 .. upto-1 are visible */
                if (upto > Lk) upto = Lk;
                for (; seen < upto; seen++) {
                    const float *kj = k + seen * F, *vj = vv + seen * Dv;
                    for (int64_t f = 0; f < F; f++) {
                        double kf = kj[f];
                        z[f] += kf;
                        double *row = S + f * Dv;
                        for (int64_t d = 0; d < Dv; d++) row[d] += kf * vj[d];
                    }
                }
                const float *qi = q + i * F;
                double den = 0;
                for (int64_t f = 0; f < F; f++) den += qi[f] * z[f];
                float *oi = o + i * Dv;
                if (seen == 0 || den == 0) {
                    memset(oi, 0, sizeof(float) * (size_t)Dv);
                    continue;
                }
                for (int64_t d = 0; d < Dv; d++) {
                    double acc = 0;
                    for (int64_t f = 0; f < F; f++) acc += qi[f] * S[f * Dv + d];
                    oi[d] = (float)(acc / den);
                }
            }
        }
        free(S);
    }
}
