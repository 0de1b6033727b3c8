/* What the attention front-ends share, internal to runtime/attention: the
 * default scale, the dropout seed, a tensor as a kernel operand, and the
 * zoo's preparation (check the contract, bring q, k, v to contiguous
 * float32, read the mask through its broadcast strides) with the drivers of
 * the reweight and sparse families (kernels/cpu/zoo_*). */
#ifndef AS_ATTENTION_PREPARE_H
#define AS_ATTENTION_PREPARE_H

#include "as_attention.h"
#include "attnswap/attention.h"
#include "ops_internal.h" /* as_ops_f32_contiguous */
#include "zoo_reweight.h"
#include "zoo_sparse.h"

/* scale NaN means 1/sqrt(D) (1 when D = 0, where every score is 0 anyway). */
double as_attention_scale(double scale, int64_t D);
/* 64 bits from the seeded generator (as_manual_seed), so dropout follows the
 * global seed and two calls get different masks.  0 or -1. */
int as_attention_dropout_seed(uint64_t *seed);
/* t as a (B, H, L, D) kernel operand; dims missing on the left or of size 1
 * get stride 0 (broadcast). */
as_attn_operand as_attention_operand(const as_tensor *t);

/* The zoo front-ends' inputs: float32 contiguous q, k, v, the mask as bool
 * or float32 (any strides), the result's dtype, and the kernels' block. */
typedef struct {
    as_tensor *q, *k, *v, *mask;
    as_dtype dtype; /* q's: the result's */
    as_attn_f32_params p;
    const char *fn; /* the public name, for the backward's error */
    /* the core's learned parameters (span, gate, bias table, ...), borrowed:
     * a result that needs their gradient says so at backward too */
    const as_tensor *param[2];
} as_attn_inputs;
/* Checks the contract for fn (every operand on the CPU) and fills in
 * (dims, scale, causal, dropout when training); 0 or -1 with the error set.
 * Release with as_attention_inputs_release. */
int as_attention_prepare(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                         const as_tensor *mask, const as_attention_opts *o, bool training, as_attn_inputs *in);
void as_attention_inputs_release(as_attn_inputs *in);
/* out (float32, released) in in->dtype, marked so that a backward through
 * it is an error naming in->fn (the fused kernels are inference only). */
as_tensor *as_attention_finish(const as_attn_inputs *in, as_tensor *out);
/* fn's name in that error: fn, what the fused kernel is, and where the
 * differentiable composite lives (a static string). */
const char *as_attention_grad_name(const char *fn);

/* ---- the reweight family (runtime/attention/reweight.c) ---- */
/* Runs the row driver with mech; the result in in->dtype. */
as_tensor *as_rw_run(const char *fn, as_attn_inputs *in, const as_cpu_rw_mech *mech);
/* Checks that param is a float cpu tensor of the given shape; -1 with
 * "fn: what must be a float cpu tensor of shape (..), got ...". */
int as_rw_check_param(const char *fn, const char *what, const as_tensor *param, int ndim,
                      const int64_t *shape);

/* ---- the sparse family (runtime/attention/sparse.c) ---- */
/* Runs the tile driver (exactly one of blocks and band); the result in in->dtype. */
as_tensor *as_sp_run_tiles(const char *fn, as_attn_inputs *in, const as_cpu_sp_blocks *blocks,
                           const as_cpu_sp_band *band);

#endif
