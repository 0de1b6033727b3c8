/* The causal prefix scan of the linear-cost attentions (runtime/attention/linear.c). */
#ifndef AS_ATTENTION_LINEAR_H
#define AS_ATTENTION_LINEAR_H

#include "attnswap/tensor.h"
#include "as_attention.h" /* as_feature_map (shared with the kernels) */

/* phi_q (B, H, Lq, F), phi_k (B, H, Lk, F), v (B, H, Lk, Dv) -> (B, H, Lq, Dv):
 * out_i = phi_q_i^T S_i / (phi_q_i . z_i) with S_i, z_i the sums over the keys
 * j <= i + (Lk - Lq); zeros where nothing is visible.  float32 or float64
 * (16-bit inputs compute in float32); under autograd it records its own
 * backward (two scans, O(L F Dv), nothing stored per step). */
as_tensor *as_linear_attention_causal(const as_tensor *fq, const as_tensor *fk, const as_tensor *v);

/* linear_attention (AS_FEATURE_ELU1), performer_attention (AS_FEATURE_FAVOR,
 * projection w (m, D)) or efficient_attention (AS_FEATURE_SOFTMAX, not
 * causal), features made inside the kernel:
 * q (B, H, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) -> (B, H, Lq, Dv) float32;
 * keep (1 or B, Lk) weights phi(k) (a key-padding mask), or NULL; causal: query
 * i sees keys j <= i + Lk - Lq. */
as_tensor *as_kernelized_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *keep,
                                   const as_tensor *w, as_feature_map feature, bool causal);

#endif
