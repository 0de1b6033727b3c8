/* The one parameter block of exact attention kernels, CPU and CUDA alike
 * (kernels/cpu/attention_flash.h, kernels/cuda/attention_flash_cuda.h),
 * filled by the runtime (runtime/attention/flash.c) from checked tensors;
 * and the dropout hash they share, so a CPU and a CUDA run drop the same
 * entries. */
#ifndef AS_ATTENTION_PARAMS_H
#define AS_ATTENTION_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "as_types.h"

/* A (B, H, L, D) operand: strides in elements, 0 on broadcast dims. */
typedef struct {
    const void *data; /* element (0, 0, 0, 0) */
    as_dtype dtype;   /* q, k, v: F32, F16, BF16; mask: BOOL (keep) or a float (additive) */
    int64_t stride[4];
} as_attn_operand;

typedef struct {
    int64_t B, H, Hkv, Lq, Lk, D, Dv; /* Lk < 2^31 */
    as_attn_operand q, k, v;
    /* data NULL: none; else broadcast to (B, H, Lq, Lk) by its strides */
    as_attn_operand mask;
    bool causal;    /* key j visible to query i iff j <= i + Lk - Lq */
    float scale;
    float dropout;  /* on the normalised probabilities; 0: none */
    uint64_t seed;  /* dropout only */
    void *out;      /* (B, H, Lq, Dv), of out_dtype (F32, F16, BF16) */
    as_dtype out_dtype;
    /* out's element strides of b, h and a row (the last is 1); all 0:
     * contiguous.  The CUDA kernels honour them; the CPU's want 0 or dense. */
    int64_t out_stride[3];
    /* NULL, or (B, H, Lq) float32: each row's log-sum-exp of its (scaled,
     * biased, masked) scores for the backward; +inf for a row with nothing
     * to attend, so that e^(s - lse) = 0 there */
    float *lse;
} as_attn_params;

/* The backward of exact attention (FlashAttention-2, Dao 2023, Algorithm 2):
 * the forward's block with out = its output O, and the gradients. */
typedef struct {
    as_attn_params f;     /* as the forward ran: q, k, v, mask, causal, scale, dropout, seed, out, lse */
    as_attn_operand dout; /* dO (B, H, Lq, Dv), any strides (0: broadcast), F32, F16 or BF16 */
    /* contiguous out: dq (B, H, Lq, D) float32, dk (B, Hkv, Lk, D) and dv (B, Hkv, Lk, Dv) of
     * dkv_dtype: F32, or (the CUDA kernels) the inputs' F16/BF16, rounded from float32 as the
     * kernel writes them, so no cast pass follows */
    float *dq;
    void *dk, *dv;
    as_dtype dkv_dtype;
    float *dbias; /* NULL, or (B, H, Lq, Lk) float32 out: the gradient of the additive mask */
    float *di;    /* (B, H, Lq) float32 scratch for rowsum(dO o O) (the CUDA kernel's; the CPU keeps its own) */
    /* NULL, or AS_ATTN_BWD_TURNS(B, H, Lq) int32 scratch (the CUDA kernels'):
     * the key blocks then add their float32 parts of dq in index order, so
     * dq repeats bit for bit (as_set_deterministic).  The CPU's backward is
     * deterministic without it. */
    int32_t *dq_turns;
} as_attn_bwd_params;

/* dq_turns' length: one counter a (b, h, 64-row query block) */
#define AS_ATTN_BWD_TURNS(B, H, Lq) ((B) * (H) * (((Lq) + 63) / 64))

/* The zoo's kernels (kernels/cpu/zoo_*.c) read contiguous float32 inputs:
 * what every one of them takes, filled by runtime/attention/prepare.c. */
typedef struct {
    int64_t B, H, Hkv, Lq, Lk, D, Dv; /* Lk < 2^31 */
    /* contiguous float32: q (B, H, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) */
    const float *q, *k, *v;
    /* data NULL: none; else BOOL (keep) or F32 (additive), broadcast to
     * (B, H, Lq, Lk) by its strides */
    as_attn_operand mask;
    bool causal;   /* key j visible to query i iff j <= i + Lk - Lq */
    float scale;
    float dropout; /* on the normalised weights, training only; 0: none */
    uint64_t seed; /* dropout: the hash below, as the flash kernel drops */
    float *out;    /* contiguous float32 (B, H, Lq, Dv) */
} as_attn_f32_params;

/* The feature maps of the linear-cost attentions (kernels/cpu/zoo_linear.c). */
typedef enum {
    AS_FEATURE_ELU1,  /* phi(x) = elu(x) + 1 (linear_attention), F = D */
    AS_FEATURE_FAVOR, /* phi(x) = exp(w x' - |x'|^2 / 2 - stab) / sqrt(m) + 1e-6,
                       * x' = x D^-1/4 (performer_attention), F = m; stab: each
                       * query's own max, one max over each item's keys */
    AS_FEATURE_SOFTMAX /* efficient_attention: phi(q) a softmax over each query's
                        * features, phi(k) a softmax over the (kept) keys for each
                        * feature; F = D */
} as_feature_map;

/* ---- dropout: a counter-based hash of (seed, b, h, i, j), so the mask does
 * not depend on tiling or threads.  Query (b, h, i) gets a 32-bit row key;
 * key j is kept iff (mix(row_key + j * golden) >> 8) >= threshold, with
 * threshold = round(p * 2^24). ---- */
static inline uint64_t as_attn_mix64(uint64_t x) /* splitmix64's finaliser */
{
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static inline uint32_t as_attn_mix32(uint32_t x) /* Wellons' lowbias32 */
{
    x ^= x >> 16, x *= 0x7feb352du;
    x ^= x >> 15, x *= 0x846ca68bu;
    return x ^ (x >> 16);
}
static inline uint32_t as_attn_row_key(uint64_t seed, int64_t H, int64_t Lq, int64_t b,
                                            int64_t h, int64_t i)
{
    return (uint32_t)as_attn_mix64(seed ^
                                        as_attn_mix64((uint64_t)((b * H + h) * Lq + i)));
}
static inline uint32_t as_attn_drop_threshold(float p)
{
    return (uint32_t)((double)p * 16777216.0 + 0.5);
}
static inline bool as_attn_keep(uint32_t row_key, int64_t j, uint32_t threshold)
{
    return (as_attn_mix32(row_key + (uint32_t)j * 0x9e3779b9u) >> 8) >= threshold;
}

#endif
