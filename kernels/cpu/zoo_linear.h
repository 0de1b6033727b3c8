/* Kernels of the linear-cost attentions (linear, performer). */
#ifndef AS_CPU_ZOO_LINEAR_H
#define AS_CPU_ZOO_LINEAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "as_attention.h" /* as_feature_map */

/* Causal linear attention by a running prefix state (Katharopoulos et al.
 * 2020, eq. 10-12), per (batch x head) item n of N:
 *   S_i = sum_{j <= i + off} fk_j v_j^T  (F x Dv),  z_i = sum_{j <= i + off} fk_j
 *   out_i = fq_i^T S_i / (fq_i . z_i)     (zeros when nothing is visible or the denominator is 0)
 * fq (N, Lq, F), fk (N, Lk, F), v (N, Lk, Dv), out (N, Lq, Dv), contiguous,
 * all float32 (f64 false) or all float64; the sums in double either way.
 * off = Lk - Lq aligns the last query with the last key.  workspace: at
 * least as_cpu_linear_causal_workspace_size(F, Dv, nthreads) bytes, aligned
 * for double. */
size_t as_cpu_linear_causal_workspace_size(int64_t F, int64_t Dv, int nthreads);
void as_cpu_linear_causal(const void *fq, const void *fk, const void *v, void *out, bool f64, int64_t N, int64_t Lq,
                          int64_t Lk, int64_t F, int64_t Dv, void *workspace, int nthreads);

/* Its backward: from g = dL/dout and the forward's out (N, Lq, Dv), dq
 * (N, Lq, F), dk (N, Lk, F), dv (N, Lk, Dv) (each NULL when not wanted;
 * written, not accumulated), all in the inputs' dtype.  A forward scan for
 * dq and a reverse one for dk and dv, a chunk of rows at a time through
 * sgemm / dgemm: O(L F Dv) time, nothing kept per step or per chunk (the
 * derivation is in zoo_linear.c).  Rows the forward gave 0 (no key visible,
 * or a denominator of 0) pass no gradient.  workspace: at least
 * as_cpu_linear_causal_bwd_workspace_size(F, Dv, Lq, f64, nthreads) bytes,
 * aligned for double. */
typedef struct {
    const void *fq, *fk, *v, *out, *g;
    void *dq, *dk, *dv;
    bool f64;
    int64_t N, Lq, Lk, F, Dv;
} as_cpu_linear_causal_bwd_args;
size_t as_cpu_linear_causal_bwd_workspace_size(int64_t F, int64_t Dv, int64_t Lq, bool f64, int nthreads);
void as_cpu_linear_causal_bwd(const as_cpu_linear_causal_bwd_args *a, void *workspace, int nthreads);
/* The forward the same way (fq, fk, v -> out of a; g and the gradients
 * unread), for a call that records the backward: the products through gemm
 * where as_cpu_linear_causal sums num in double row by row; the same rows
 * are 0 (den is summed the same way), out agrees to the dtype's rounding. */
void as_cpu_linear_causal_blocked(const as_cpu_linear_causal_bwd_args *a, void *workspace, int nthreads);

/* The feature maps the fused non-causal kernel applies itself. */

typedef struct {
    const float *q, *k, *v; /* (B, H, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv), contiguous */
    const float *keep;      /* key weights (keep_B, Lk) multiplying phi(k), or NULL */
    int64_t keep_B;         /* 1 or B */
    const float *w;         /* AS_FEATURE_FAVOR: the projection (m, D) */
    int64_t m;
    float *out;             /* (B, H, Lq, Dv) */
    int64_t B, H, Hkv, Lq, Lk, D, Dv;
    as_feature_map feature;
    int causal;             /* query i sees keys j <= i + Lk - Lq (not with AS_FEATURE_SOFTMAX) */
} as_cpu_kernelized_params;

/* Kernelised attention, fused: out_i = phi(q_i)^T S / (phi(q_i) . z) with
 * S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) over the keys query i sees,
 * per (batch, head); zeros where the denominator is 0.  Features are made a
 * chunk of rows at a time in per-thread scratch, so nothing of size L x F is
 * ever allocated.  Causal: chunks of queries in order; the keys every row of a
 * chunk sees are in the running state, the chunk's own diagonal block is a
 * masked product phi(Q) phi(K)^T (the chunked form of Katharopoulos et al.'s
 * prefix sums).  Query heads share their KV head (H a multiple of Hkv). */
size_t as_cpu_kernelized_workspace_size(const as_cpu_kernelized_params *p, int nthreads);
void as_cpu_kernelized_attention(const as_cpu_kernelized_params *p, void *workspace, int nthreads);

#endif
