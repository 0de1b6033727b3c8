/* Built-in layers with C forwards.  Each constructor returns a new module
 * (refcount 1) with its parameters initialised as PyTorch initialises the
 * same layer (from the seeded generator), or NULL with the error set. */
#ifndef AS_LAYERS_H
#define AS_LAYERS_H

#include <stdbool.h>

#include "module.h"
#include "ops.h"

/* Linear: weight (out, in), bias (out); U(-1/sqrt(in), 1/sqrt(in)) as torch's
 * kaiming_uniform_(a=sqrt(5)).  forward(x (..., in)) -> (..., out). */
as_module *as_linear_new(int64_t in_features, int64_t out_features, bool bias);
/* LayerNorm over the last dim: weight = 1, bias = 0. */
as_module *as_layer_norm_new(int64_t dim, double eps, bool affine);
as_module *as_rms_norm_new(int64_t dim, double eps, bool affine);
/* Embedding: weight (num, dim) ~ N(0, 1); forward(ids int64, 0-based) -> ids.shape + (dim,). */
as_module *as_embedding_new(int64_t num_embeddings, int64_t dim);
/* Dropout(p): identity in eval mode; in training scales kept values by 1/(1-p). */
as_module *as_dropout_new(double p);
/* Elementwise activations: type names "GELU" (AS_GELU or AS_GELU_TANH), "SiLU", "ReLU", "Tanh". */
as_module *as_activation_new(as_unop op);
/* Containers: children named "0", "1", ... as torch names them. */
as_module *as_sequential_new(void);  /* forward calls children in order */
as_module *as_module_list_new(void); /* no forward of its own */
int as_module_append(as_module *container, as_module *child);

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
 * may be NULL).  0 or -1 with the error set (runtime/attention_check.c). */
int as_attention_check(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                       const as_tensor *mask, const as_attention_opts *opts);
/* dropout in [0, 1), scale finite or NaN. */
int as_attention_check_opts(const char *fn, const as_attention_opts *opts);
/* What a CPU kernel adds: every operand on the CPU, sizes it can index. */
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

typedef struct {
    int64_t dim, num_heads, num_kv_heads; /* num_kv_heads 0: = num_heads */
    int64_t head_dim;                     /* 0: dim / num_heads */
    bool qkv_bias, out_bias, fused_qkv;
} as_mha_config;
/* MultiheadAttention: children qkv (fused) or q_proj, k_proj, v_proj; then
 * core (the attention, passed in, retained) and out_proj.
 * forward(x (B, L, dim) [, mask]) -> (B, L, dim). */
as_module *as_mha_new(const as_mha_config *cfg, as_module *core);

typedef struct {
    as_mha_config attn;
    double mlp_ratio;    /* hidden = dim * mlp_ratio */
    bool pre_norm;       /* pre: x + attn(norm1(x)); post: norm1(x + attn(x)) */
    double norm_eps;
    as_unop activation;  /* AS_GELU by default */
    double dropout;      /* after attention and MLP */
} as_block_config;
/* TransformerBlock: children norm1, attn (MultiheadAttention), norm2,
 * mlp (Sequential fc1, act, fc2), as timm names them.  forward(x [, mask]). */
as_module *as_transformer_block_new(const as_block_config *cfg, as_module *core);

/* ---- helpers shared by the C forwards (additions) ---- */
/* Checks a forward's arguments: at least min and at most max positions, the
 * first min of them tensors (not nil); positions past max may be nil.
 * 0, or -1 with "fn: ..." set. */
int as_check_args(const char *fn, const as_args *args, int min, int max);
/* Functional dropout: x itself (a new reference) unless training and p > 0;
 * otherwise x * keep / (1 - p) with keep from as_bernoulli_keep.  p in [0, 1). */
as_tensor *as_dropout(const as_tensor *x, double p, bool training);
/* Checks an attention config for fn ("MultiheadAttention: dim (10) must be
 * divisible by num_heads (3)"); 0 or -1 with the error set. */
int as_mha_config_check(const char *fn, const as_mha_config *cfg);
/* TransformerBlock's MLP: children fc1, act, fc2 (and drop when dropout > 0),
 * as timm's Mlp; forward fc1 -> act -> drop -> fc2 -> drop. */
as_module *as_mlp_new(int64_t in_features, int64_t hidden, as_unop activation, double dropout);

/* ---- flash_attention (runtime/attention_flash.c) ---- */
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
/* The kernel and vector path the calling thread's last exact attention
 * used: "flash/avx512", "flash/avx2", "flash/scalar", a "flash/..." CUDA
 * kernel, or "math" when as_sdpa materialised ("none" before). */
const char *as_flash_backend(void);
void as_attention_note_backend(const char *name);

/* ---- attention cores over a functional kernel (runtime/attention_core.c) ---- */
typedef as_tensor *(*as_attention_fn)(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                      const as_tensor *mask, const as_attention_opts *opts, bool training);
/* A core module of the given type name whose forward(q, k, v [, mask]) calls
 * fn with opts and the module's training flag ("FlashAttention" over
 * as_flash_attention, ...). */
as_module *as_attention_core_new(const char *type_name, as_attention_fn fn, const as_attention_opts *opts);

#endif
