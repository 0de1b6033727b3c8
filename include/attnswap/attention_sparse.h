/* The sparse attention family: front-ends over kernels/cpu/zoo_sparse*.c.
 * Every function keeps the attention contract of as_sdp_attention (attnswap/attention.h):
 * q (B, H, Lq, D); k, v (B, Hkv, Lk, D|Dv), H % Hkv == 0; mask NULL, bool
 * keep-mask or float additive bias broadcastable to (B, H, Lq, Lk); causal
 * bottom-right aligned (query i stands at i' = i + Lk - Lq); a row with
 * nothing to attend to gives zeros.  Float inputs of any float dtype
 * (computed in float32), result (B, H, Lq, Dv) contiguous in q's dtype;
 * NULL with the error set, naming the implementation. */
#ifndef AS_ATTENTION_SPARSE_H
#define AS_ATTENTION_SPARSE_H

#include "attnswap/attention.h"

/* ---- sparse_attention: exact softmax restricted to a layout ----
 * layout: bool, (Lr, Lk) elements or (ceil(Lr / bs), ceil(Lk / bs)) blocks,
 * optionally with a leading dim of 1 or H (one layout per head).  Lr is Lq,
 * or Lk when Lk > Lq: then query i reads row i + Lk - Lq (as causal aligns).
 * Element layouts are turned into blocks; blocks only partly kept check
 * their elements. */
as_tensor *as_sparse_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o,
                               const as_tensor *layout, int64_t block_size, bool training);

/* ---- local_attention: keys i' - w <= j <= i' + w (causal: <= i') ---- */
as_tensor *as_local_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *o, int64_t window,
                              bool training);

/* ---- sink_attention: keys j < num_sinks or i' - window < j, and j <= i' (always causal) ---- */
as_tensor *as_sink_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                             const as_tensor *mask, const as_attention_opts *o, int64_t window,
                             int64_t num_sinks, bool training);

/* ---- dynamic_attention: softmax over the top_k scores of each query ---- */
/* dynamic_attention's selection, for its composite: a bool tensor shaped as
 * the scores s, true at the top_k largest of each last-dim row (ties to the
 * lower index, -inf never, all visible when fewer).  The fused CPU kernel's
 * linear-time selection; as_topk_keep_takes says whether it takes s (float32
 * on the CPU): elsewhere the composite selects with tensor ops. */
bool as_topk_keep_takes(const as_tensor *s);
as_tensor *as_topk_keep(const as_tensor *s, int64_t top_k);

as_tensor *as_dynamic_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_attention_opts *o, int64_t top_k,
                                bool training);

/* ---- patterns (runtime/attention/sparse_patterns.c): bool (L, L), true = keep ---- */
typedef enum { AS_PATTERN_LOCAL, AS_PATTERN_STRIDED, AS_PATTERN_FIXED, AS_PATTERN_AXIAL } as_pattern_kind;
/* local: a = window; strided: a = stride; fixed: a = stride, b = c;
 * axial: an a x b grid (L = a b). */
as_tensor *as_pattern(as_pattern_kind kind, int64_t L, int64_t a, int64_t b, bool causal);
as_tensor *as_pattern_random(int64_t L, double p, uint64_t seed);
/* idx: int64 or int32 0-based positions */
as_tensor *as_pattern_global(int64_t L, const as_tensor *idx);
/* (L, L) elements, or the (ceil(L / block), ...) block layout when blocks_only. */
as_tensor *as_pattern_bigbird(int64_t L, int64_t block, int64_t window, int64_t globals,
                              int64_t randoms, uint64_t seed, bool causal, bool blocks_only);
/* (..., Lr, Lc) -> (..., ceil(Lr / bs), ceil(Lc / bs)): a block is kept when
 * any of its elements is. */
as_tensor *as_pattern_to_blocks(const as_tensor *mask, int64_t bs);
/* (..., R, C) blocks -> (..., Lr, Lc) elements, R = ceil(Lr / bs), C = ceil(Lc / bs). */
as_tensor *as_pattern_from_blocks(const as_tensor *layout, int64_t bs, int64_t Lr, int64_t Lc);

#endif
