/* adaptive_attention: softmax weights times the soft span mask
 * m(x) = clamp((R + z_h - x) / R, 0, 1), renormalised (Sukhbaatar et al.
 * 2019); z_h = clamp(span_h, 0, 1) * max_span.  A banded kernel:
 * keys at distance z_h + R or more are never visited
 * (kernels/cpu/zoo_reweight_adaptive.c). */
#include <math.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "adaptive_attention"

as_tensor *as_adaptive_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                 const as_tensor *mask, const as_attention_opts *o,
                                 const as_tensor *span, double max_span, double ramp, bool training)
{
    if (!(max_span >= 0 && max_span <= 1e9)) {
        as_error_set(FN ": max_span must be a number in [0, 1e9], got %g", max_span);
        return NULL;
    }
    if (!(ramp > 0 && ramp <= 1e9)) {
        as_error_set(FN ": ramp must be a number in (0, 1e9], got %g", ramp);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    in.param[0] = span;
    int64_t H = in.p.H;
    as_tensor *s32 = NULL, *out = NULL;
    float *z = NULL;
    if (span && span->ndim == 1 && span->shape[0] != H) {
        as_error_set(FN ": the span was made for %lld heads (num_heads) but q has %lld; "
                     "build the core with num_heads = %lld",
                     (long long)span->shape[0], (long long)H, (long long)H);
        goto done;
    }
    if (as_rw_check_param(FN, "span", span, 1, (int64_t[]){H}) || !(s32 = as_ops_f32_contiguous(span))) goto done;
    if (!(z = malloc((size_t)(H + 1) * sizeof *z))) {
        as_error_set(FN ": out of memory");
        goto done;
    }
    const float *sp = as_data(s32);
    for (int64_t h = 0; h < H; h++) {
        float f = isnan(sp[h]) ? 0.0f : sp[h] < 0 ? 0.0f : sp[h] > 1 ? 1.0f : sp[h];
        z[h] = (float)(f * max_span);
    }
    as_cpu_rw_adaptive_ctx ctx = {.span = z, .ramp = (float)ramp};
    as_cpu_rw_mech mech = as_cpu_rw_adaptive_mech;
    mech.ctx = &ctx;
    /* blocks of 16 queries while the widest band is narrow: a block scores at
     * most 15 keys per row beyond that row's band, and weighs them 0 */
    double widest = 0;
    for (int64_t h = 0; h < H; h++) widest = fmax(widest, (double)z[h] + ramp);
    mech.bq = widest < 256 ? 16 : 0;
    out = as_rw_run(FN, &in, &mech);
done:
    free(z);
    as_release(s32);
    as_attention_inputs_release(&in);
    return out;
}
