/* flash_attention: exact softmax(q k^T * scale + bias) v through the fused
 * tiled kernel (Dao et al. 2022), never materialising the Lq x Lk scores.
 * Same contract as as_sdp_attention; this file checks the arguments, reads
 * strides and broadcast masks as they come (no copies) into the kernels'
 * parameter block (kernels/common/as_attention.h) and hands it to the
 * device's kernel (kernels/cpu/attention_flash.c, kernels/cuda/). */
#include <math.h>
#include <stdint.h>

#include "attnswap/attention.h"
#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/nn.h"
#include "dispatch.h"
#include "prepare.h"

#define FN "flash_attention"

static _Thread_local const char *last_backend = "none";

const char *as_flash_backend(void) { return last_backend; }

void as_attention_note_backend(const char *name) { last_backend = name; }

as_tensor *as_flash_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *opts, bool training)
{
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(FN, q, k, v, mask, &o)) return NULL;
    as_device dev = as_tensor_device(q);
    if (dev.type == AS_DEV_CPU && as_attention_check_cpu_kernel(FN, q, k, v, mask)) return NULL;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Dv = v->shape[3];
    if (k->shape[2] > INT32_MAX - 1) {
        as_error_set(FN ": sizes past 2^31 are more than this kernel indexes");
        return NULL;
    }
    as_tensor *out = as_empty(4, (int64_t[]){B, H, Lq, Dv}, q->dtype, dev);
    if (!out) return NULL;
    as_attn_params p = {
        .B = B, .H = H, .Hkv = k->shape[1], .Lq = Lq, .Lk = k->shape[2], .D = D, .Dv = Dv,
        .q = as_attention_operand(q), .k = as_attention_operand(k), .v = as_attention_operand(v),
        .causal = o.causal,
        .scale = (float)as_attention_scale(o.scale, D),
        .out = as_data(out), .out_dtype = out->dtype,
    };
    if (mask) p.mask = as_attention_operand(mask);
    if (training && o.dropout > 0) {
        p.dropout = (float)o.dropout;
        if (as_attention_dropout_seed(&p.seed)) {
            as_release(out);
            return NULL;
        }
    }
    if (as_k_flash(FN, dev, &p, &last_backend)) {
        as_release(out);
        return NULL;
    }
    /* its backward is the attention-backward issue's */
    return as_autograd_guard(FN, out, 4, (const as_tensor *[]){q, k, v, mask});
}
