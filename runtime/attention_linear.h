/* The causal prefix scan of the linear-cost attentions (runtime/attention_linear.c). */
#ifndef AS_ATTENTION_LINEAR_H
#define AS_ATTENTION_LINEAR_H

#include "tensor.h"

/* phi_q (B, H, Lq, F), phi_k (B, H, Lk, F), v (B, H, Lk, Dv) -> (B, H, Lq, Dv):
 * out_i = phi_q_i^T S_i / (phi_q_i . z_i) with S_i, z_i the sums over the keys
 * j <= i + (Lk - Lq); zeros where nothing is visible. */
as_tensor *as_linear_attention_causal(const as_tensor *fq, const as_tensor *fk, const as_tensor *v);

#endif
