/* The reweight attention family: front-ends over kernels/cpu/zoo_reweight*.c.
 * Every function keeps the attention contract of as_sdp_attention (attnswap/attention.h):
 * q (B, H, Lq, D); k, v (B, Hkv, Lk, D|Dv), H % Hkv == 0; mask NULL, bool
 * keep-mask or float additive bias broadcastable to (B, H, Lq, Lk); causal
 * bottom-right aligned; a row with nothing to attend to gives zeros.
 * Float inputs of any float dtype (computed in float32), result
 * (B, H, Lq, Dv) contiguous in q's dtype; NULL with the error set, naming
 * the implementation. */
#ifndef AS_ATTENTION_REWEIGHT_H
#define AS_ATTENTION_REWEIGHT_H

#include "attnswap/attention.h"

/* ---- relative_attention: softmax(q k^T * scale + b_h(j - i) + mask) v ---- */
typedef struct {
    bool alibi;           /* fixed ALiBi slopes, no parameter */
    bool bidirectional;   /* T5 buckets on both sides (else only the past) */
    int64_t num_buckets;  /* T5: 32 */
    int64_t max_distance; /* T5: 128 */
} as_relative_opts;
/* bias (num_buckets, H): the T5 bucket bias (ignored with alibi). */
as_tensor *as_relative_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                 const as_tensor *mask, const as_attention_opts *o,
                                 const as_relative_opts *r, const as_tensor *bias, bool training);

/* ---- adaptive_attention: span (H) in [0, 1] (clamped) times max_span ---- */
as_tensor *as_adaptive_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                 const as_tensor *mask, const as_attention_opts *o,
                                 const as_tensor *span, double max_span, double ramp, bool training);

/* ---- gated_attention: exact attention * sigma(q W + b), W (H, D, G), b (H, G), G = 1 or Dv ---- */
as_tensor *as_gated_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *o, const as_tensor *w,
                              const as_tensor *b, bool training);

/* ---- entmax_attention: alpha in [1, 2], or per head 1 + sigmoid(pre_alpha (H)) ---- */
as_tensor *as_entmax_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o, double alpha,
                               const as_tensor *pre_alpha, bool training);
/* alpha-entmax along dim (0-based, may be negative) of a float tensor. */
as_tensor *as_entmax(const as_tensor *x, int dim, double alpha);

/* ---- sigmoid_attention: sigma(q k^T * scale + bias) v; bias NaN: -log(Lk) ---- */
as_tensor *as_sigmoid_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_attention_opts *o, double bias,
                                bool training);

/* ---- cosine_attention: softmax(cos(q, k) * exp(min(logit_scale_h, max_logit)) + mask) v;
 * logit_scale (H, 1, 1); o->scale is not used ---- */
as_tensor *as_cosine_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o,
                               const as_tensor *logit_scale, double max_logit, bool training);

/* ---- flex_attention's tile step (kernels/cpu/zoo_reweight_flex.c) ----
 * acc (B, H, Bq, Dv), m, l (B, H, Bq): float32 contiguous, updated in place;
 * s (B, H, Bq, Bk) scores; v (B, Hkv, Bk, Dv); keep NULL or bool
 * (B, H, Bq, Bk), kept weights scaled by keep_scale.  0 or -1. */
int as_flex_step(as_tensor *acc, as_tensor *m, as_tensor *l, const as_tensor *s, const as_tensor *v,
                 const as_tensor *keep, double keep_scale);
/* acc / l, 0 where l = 0, in dtype. */
as_tensor *as_flex_finish(const as_tensor *acc, const as_tensor *l, as_dtype dtype);

#endif
