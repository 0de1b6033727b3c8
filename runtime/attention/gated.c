/* gated_attention: exact attention (the fused flash kernel) times a
 * sigmoid gate per head (G = 1) or per channel (G = Dv) computed from the
 * head's query: out * sigma(q W_g + b_g) (Qiu et al. 2025, G1;
 * kernels/cpu/zoo_reweight_gated.c). */
#include <math.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "gated_attention"

as_tensor *as_gated_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *o, const as_tensor *w,
                              const as_tensor *b, bool training)
{
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    in.param[0] = w, in.param[1] = b;
    int64_t H = in.p.H, D = in.p.D, Dv = in.p.Dv;
    as_tensor *w32 = NULL, *b32 = NULL, *att = NULL, *out = NULL;
    if (w && w->ndim == 3 && (w->shape[0] != H || w->shape[1] != D)) {
        as_error_set(FN ": the gate was made for %lld heads of size %lld (num_heads, head_dim) "
                     "but q has %lld heads of size %lld",
                     (long long)w->shape[0], (long long)w->shape[1], (long long)H, (long long)D);
        goto done;
    }
    int64_t G = w && w->ndim == 3 ? w->shape[2] : 1;
    if (G != 1 && G != Dv) {
        as_error_set(FN ": the gate has %lld outputs per head; expected 1 (headwise) or Dv = %lld "
                     "(elementwise)",
                     (long long)G, (long long)Dv);
        goto done;
    }
    if (as_rw_check_param(FN, "gate_weight", w, 3, (int64_t[]){H, D, G}) ||
        as_rw_check_param(FN, "gate_bias", b, 2, (int64_t[]){H, G}))
        goto done;
    if (!(w32 = as_ops_f32_contiguous(w)) || !(b32 = as_ops_f32_contiguous(b))) goto done;
    as_attention_opts ao = o ? *o : (as_attention_opts){.scale = NAN};
    /* flash records nothing here: the gate is applied in place, and the
     * result is marked as gated_attention's (as_attention_finish) */
    bool prev = as_set_grad_enabled(false);
    att = as_flash_attention(in.q, in.k, in.v, in.mask, &ao, training);
    as_set_grad_enabled(prev);
    if (!att) goto done;
    if (as_numel(att) > 0)
        as_cpu_rw_gate(as_data(att), in.p.q, as_data(w32), as_data(b32), in.p.B, H, in.p.Lq, D, Dv, G);
    out = as_attention_finish(&in, att);
    att = NULL;
done:
    as_release(w32), as_release(b32), as_release(att);
    as_attention_inputs_release(&in);
    return out;
}
