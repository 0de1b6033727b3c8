/* sigmoid_attention: sigma(q k^T * scale + b) v, no normalisation
 * (Ramapuram et al. 2024); b = -log(Lk) unless given
 * (kernels/cpu/zoo_reweight_sigmoid.c). */
#include <math.h>

#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "sigmoid_attention"

as_tensor *as_sigmoid_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                const as_tensor *mask, const as_attention_opts *o, double bias,
                                bool training)
{
    if (isinf(bias)) {
        as_error_set(FN ": bias must be finite (or NaN for -log(Lk)), got %g", bias);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    if (isnan(bias)) bias = in.p.Lk > 0 ? -log((double)in.p.Lk) : 0.0;
    as_cpu_rw_sigmoid_ctx ctx = {.bias = (float)bias};
    as_cpu_rw_mech mech = as_cpu_rw_sigmoid_mech;
    mech.ctx = &ctx;
    as_tensor *out = as_rw_run(FN, &in, &mech);
    as_attention_inputs_release(&in);
    return out;
}
