/* cosine_attention (Swin Transformer V2, Liu et al. 2022, eq. 2):
 *
 *   softmax(cos(q_i, k_j) / tau_h + mask) v,   1 / tau_h = exp(min(logit_scale_h, log 100))
 *
 * q and k rows are normalised (q's also scaled by 1 / tau_h) in one pass
 * (kernels/cpu/zoo_reweight_cosine.c); the rest is exact attention with
 * scale 1 through the fused flash kernel. */
#include <math.h>
#include <stdlib.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "cosine_attention"

as_tensor *as_cosine_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o,
                               const as_tensor *logit_scale, double max_logit, bool training)
{
    if (isnan(max_logit)) {
        as_error_set(FN ": max_logit must be a number, got nan");
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    in.param[0] = logit_scale;
    int64_t B = in.p.B, H = in.p.H, Hkv = in.p.Hkv, D = in.p.D;
    as_tensor *ls = NULL, *qn = NULL, *kn = NULL, *att = NULL, *out = NULL;
    float *gain = NULL;
    if (logit_scale && logit_scale->ndim == 3 && logit_scale->shape[0] != H) {
        as_error_set(FN ": logit_scale was made for %lld heads (num_heads) but q has %lld; "
                     "build the core with num_heads = %lld",
                     (long long)logit_scale->shape[0], (long long)H, (long long)H);
        goto done;
    }
    if (as_rw_check_param(FN, "logit_scale", logit_scale, 3, (int64_t[]){H, 1, 1}) ||
        !(ls = as_ops_f32_contiguous(logit_scale)))
        goto done;
    gain = malloc((size_t)(H + 1) * sizeof *gain);
    qn = as_empty_like(in.q), kn = as_empty_like(in.k);
    if (!gain || !qn || !kn) {
        if (!gain) as_error_set(FN ": out of memory");
        goto done;
    }
    const float *l = as_data(ls);
    for (int64_t h = 0; h < H; h++) gain[h] = (float)exp(fmin((double)l[h], max_logit));
    as_cpu_rw_l2_normalize(as_data(qn), in.p.q, B, H, in.p.Lq, D, gain);
    as_cpu_rw_l2_normalize(as_data(kn), in.p.k, B, Hkv, in.p.Lk, D, NULL);
    as_attention_opts ao = o ? *o : (as_attention_opts){0};
    ao.scale = 1.0;
    /* flash records nothing here (qn, kn are fresh copies): the result is
     * marked as cosine_attention's, q, k, v and logit_scale included
     * (as_attention_finish), so a backward through it is an error, never a
     * silent missing gradient */
    bool prev = as_set_grad_enabled(false);
    att = as_flash_attention(qn, kn, in.v, in.mask, &ao, training);
    as_set_grad_enabled(prev);
    if (!att) goto done;
    out = as_attention_finish(&in, att);
    att = NULL;
done:
    free(gain);
    as_release(ls), as_release(qn), as_release(kn), as_release(att);
    as_attention_inputs_release(&in);
    return out;
}
