/* flash_attention: exact softmax(q k^T * scale + bias) v through the fused
 * tiled kernel (Dao et al. 2022), never materialising the Lq x Lk scores.
 * Same contract as as_sdp_attention; this file checks the arguments, reads
 * strides and broadcast masks as they come (no copies) into the kernels'
 * parameter block (kernels/common/as_attention.h) and hands it to the
 * device's kernel (kernels/cpu/attention_flash.c, kernels/cuda/). */
#include <math.h>
#include <stdint.h>

#include "attnswap/attention.h"
#include "attnswap/error.h"
#include "attnswap/nn.h"
#include "dispatch.h"

#define FN "flash_attention"

static _Thread_local const char *last_backend = "none";

const char *as_flash_backend(void) { return last_backend; }

void as_attention_note_backend(const char *name) { last_backend = name; }

/* The operand as the kernel reads it; dims missing on the left or of size 1
 * get stride 0 (broadcast). */
static as_attn_operand operand(const as_tensor *t)
{
    as_attn_operand o = {.data = as_data(t), .dtype = t->dtype};
    for (int d = 0; d < 4; d++) {
        int td = d - (4 - t->ndim);
        o.stride[d] = td < 0 || t->shape[td] == 1 ? 0 : t->stride[td];
    }
    return o;
}

/* One 64-bit draw from the seeded generator (as_manual_seed), so dropout
 * follows the global seed and two calls get different masks: four
 * U[0, 1) floats carry 24 bits each. */
static int dropout_seed(uint64_t *seed)
{
    as_tensor *u = as_rand(1, (int64_t[]){4}, AS_F32, AS_CPU);
    if (!u) return -1;
    const float *f = as_data(u);
    uint64_t s = 0;
    for (int i = 0; i < 4; i++) s = as_attn_mix64(s ^ (uint64_t)(f[i] * 16777216.0f));
    as_release(u);
    *seed = s;
    return 0;
}

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
        .q = operand(q), .k = operand(k), .v = operand(v),
        .causal = o.causal,
        .scale = (float)(isnan(o.scale) ? (D > 0 ? 1.0 / sqrt((double)D) : 1.0) : o.scale),
        .out = as_data(out), .out_dtype = out->dtype,
    };
    if (mask) p.mask = operand(mask);
    if (training && o.dropout > 0) {
        p.dropout = (float)o.dropout;
        if (dropout_seed(&p.seed)) {
            as_release(out);
            return NULL;
        }
    }
    if (as_k_flash(FN, dev, &p, &last_backend)) {
        as_release(out);
        return NULL;
    }
    return out;
}
