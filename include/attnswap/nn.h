/* Built-in layers with C forwards.  Each constructor returns a new module
 * (refcount 1) with its parameters initialised as PyTorch initialises the
 * same layer (from the seeded generator), or NULL with the error set. */
#ifndef AS_NN_H
#define AS_NN_H

#include <stdbool.h>

#include "attnswap/module.h"
#include "attnswap/ops.h"


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

#endif
