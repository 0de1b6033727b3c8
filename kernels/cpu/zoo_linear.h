/* Kernels of the linear-cost attentions (linear, performer). */
#ifndef AS_CPU_ZOO_LINEAR_H
#define AS_CPU_ZOO_LINEAR_H

#include <stdint.h>

/* Causal linear attention by a running prefix state (Katharopoulos et al.
 * 2020, eq. 10-12), per (batch x head) item n of N:
 *   S_i = sum_{j <= i + off} fk_j v_j^T  (F x Dv),  z_i = sum_{j <= i + off} fk_j
 *   out_i = fq_i^T S_i / (fq_i . z_i)     (zeros when nothing is visible)
 * fq (N, Lq, F), fk (N, Lk, F), v (N, Lk, Dv), out (N, Lq, Dv), contiguous;
 * off = Lk - Lq aligns the last query with the last key. */
void as_cpu_linear_causal(const float *fq, const float *fk, const float *v, float *out, int64_t N, int64_t Lq,
                          int64_t Lk, int64_t F, int64_t Dv);

#endif
