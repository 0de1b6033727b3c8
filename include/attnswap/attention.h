/* Attention: the contract every core keeps (q (B, H, Lq, D), k and v
 * (B, Hkv, Lk, D), a mask broadcastable to (B, H, Lq, Lk)), the exact
 * attentions (the materialising reference, the fused kernel, the default
 * that dispatches between them) and core modules over them.  The zoo's
 * front-ends are in attention_linear.h, attention_reweight.h and
 * attention_sparse.h. */
#ifndef AS_ATTENTION_H
#define AS_ATTENTION_H

#include <stdbool.h>

#include "attnswap/module.h"
#include "attnswap/tensor.h"

/* Options every attention core takes (DESIGN.md, Attention). */
typedef struct {
    bool causal;
    double scale;   /* NaN: 1/sqrt(D) */
    double dropout; /* applied in training mode only */
} as_attention_opts;

/* The attention contract, checked for fn ("flash_attention: k (1, 2, 3, 4) and v
 * (1, 2, 5, 4) must have the same heads and length"): q, k, v 4-d floating
 * point of one dtype, one batch, H % Hkv == 0, one D for q and k, a mask
 * broadcastable to (B, H, Lq, Lk) that is bool or float, valid options (opts
 * may be NULL).  0 or -1 with the error set (runtime/attention/contract.c). */
int as_attention_check(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                       const as_tensor *mask, const as_attention_opts *opts);
/* The options as config fields (causal, dropout, and scale unless it is the
 * default); at most max written, the count returned. */
int as_attention_opts_fields(const as_attention_opts *o, as_config_field *f, int max);
/* dropout in [0, 1), scale finite or NaN. */
int as_attention_check_opts(const char *fn, const as_attention_opts *opts);
/* What a CPU kernel adds: every operand on the CPU and not float64, sizes it can index. */
int as_attention_check_cpu_kernel(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                  const as_tensor *mask);

/* The reference attention: softmax(q k^T * scale + bias) v, materialising the
 * scores.  q (B, H, Lq, D); k, v (B, Hkv, Lk, D) with H % Hkv == 0; mask NULL,
 * bool keep-mask or float additive bias, broadcastable to (B, H, Lq, Lk).
 * Causal aligns the last query with the last key (offset Lk - Lq), so a
 * query shorter than the keys (a KV cache) works.  A query row with nothing
 * to attend to gives zeros.  Result (B, H, Lq, Dv). */
as_tensor *as_sdp_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                            const as_tensor *mask, const as_attention_opts *opts, bool training);
/* Which kernel the default exact attention runs: AS_SDP_AUTO the fused one
 * (as_flash_attention) wherever it can take the inputs, as PyTorch's SDPA
 * picks a fused backend; AS_SDP_MATH always as_sdp_attention. */
typedef enum { AS_SDP_AUTO, AS_SDP_MATH } as_sdp_backend;
/* The default exact attention: as_sdp_attention's contract and result, its
 * errors named "scaled_dot_product", computed by the kernel backend picks
 * (as_flash_backend() then says which: "flash/..." or "math"). */
as_tensor *as_sdpa(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                   const as_attention_opts *opts, as_sdp_backend backend, bool training);
/* The "scaled_dot_product" core module: forward(q, k, v [, mask]) is as_sdpa. */
as_module *as_sdp_attention_new(const as_attention_opts *opts, as_sdp_backend backend);

/* ---- flash_attention (runtime/attention/flash.c) ---- */
/* The fused exact attention (FlashAttention, Dao et al. 2022): the same
 * contract and result as as_sdp_attention, computed tile by tile with an
 * online softmax, never materialising Lq x Lk.  Any strides; masks are read
 * through their broadcast strides, never expanded.  float32, float16 or
 * bfloat16 inputs (computed in float32); the result is contiguous
 * (B, H, Lq, Dv) in the inputs' dtype.  Dropout (training only) drops
 * normalised probabilities by a hash of (seed, b, h, i, j), the seed drawn
 * from the generator as_manual_seed seeds. */
as_tensor *as_flash_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *opts, bool training);
/* The same forward (no dropout) that also returns each row's log-sum-exp of
 * its scaled, masked scores in *lse, (B, H, Lq) float32; +inf for a row
 * that saw no key (its output row is zeros).  Records no backward (an input
 * requiring grad makes the output's backward an error): for a custom
 * function that merges blocks by their lse (ring_attention).  NULL (and
 * *lse NULL) with the error set. */
as_tensor *as_flash_attention_lse(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                                  const as_attention_opts *opts, as_tensor **lse);
/* The fused backward on a given out (B, H, Lq, Dv) and lse (B, H, Lq)
 * float32: dq, dk, dv (float32, new references) of sum(out * dout) for the
 * attention of q over (k, v) with probabilities exp(s - lse), s the scaled,
 * masked scores.  With out and lse of the whole attention and (k, v) one
 * block of its keys, these are that block's shares of the whole gradients
 * (ring_attention's backward).  No dropout.  0, or -1 with the error set. */
int as_flash_attention_backward(const as_tensor *dout, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_tensor *out, const as_tensor *lse,
                                const as_attention_opts *opts, as_tensor **dq, as_tensor **dk, as_tensor **dv);
/* The kernel and vector path the calling thread's last exact attention
 * used: "flash/avx512", "flash/avx2", "flash/scalar", a "flash/..." CUDA
 * kernel, or "math" when as_sdpa materialised ("none" before). */
const char *as_flash_backend(void);
/* The kernel of the last fused attention backward that ran on this thread
 * ("flash-bwd/avx2", "flash-bwd/wgmma", "flash-bwd/tf32x3", ...; "none" before
 * one).  A backward through the math path (autograd of the materialised
 * scores) leaves it as it was. */
const char *as_flash_backward_backend(void);

/* Whether flash_attention on dev records a fused backward (runtime/attention/
 * flash.c): where not, scaled_dot_product takes the math path for gradients. */
bool as_flash_has_backward(as_device dev);
void as_attention_note_backend(const char *name);

/* ---- attention cores over a functional kernel (runtime/attention/core.c) ---- */
typedef as_tensor *(*as_attention_fn)(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                      const as_tensor *mask, const as_attention_opts *opts, bool training);
/* A core module of the given type name whose forward(q, k, v [, mask]) calls
 * fn with opts and the module's training flag ("FlashAttention" over
 * as_flash_attention, ...). */
as_module *as_attention_core_new(const char *type_name, as_attention_fn fn, const as_attention_opts *opts);

#endif
