/* What the attention front-ends share (prepare.h): one default scale, one
 * dropout seed, one operand reader, one preparation for the zoo. */
#include "prepare.h"

#include <math.h>
#include <string.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "attnswap/ops.h"
#include "ops_internal.h"

double as_attention_scale(double scale, int64_t D)
{
    return isnan(scale) ? (D > 0 ? 1.0 / sqrt((double)D) : 1.0) : scale;
}

/* four U[0, 1) floats carry 24 bits each */
int as_attention_dropout_seed(uint64_t *seed)
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

as_attn_operand as_attention_operand(const as_tensor *t)
{
    as_attn_operand o = {.data = as_data(t), .dtype = t->dtype};
    for (int d = 0; d < 4; d++) {
        int td = d - (4 - t->ndim);
        o.stride[d] = td < 0 || t->shape[td] == 1 ? 0 : t->stride[td];
    }
    return o;
}

void as_attention_inputs_release(as_attn_inputs *in)
{
    as_release(in->q), as_release(in->k), as_release(in->v), as_release(in->mask);
    in->q = in->k = in->v = in->mask = NULL;
}

int as_attention_prepare(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                         const as_tensor *mask, const as_attention_opts *opts, bool training, as_attn_inputs *in)
{
    *in = (as_attn_inputs){.fn = fn};
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(fn, q, k, v, mask, &o) || as_attention_check_cpu_kernel(fn, q, k, v, mask)) return -1;
    in->dtype = q->dtype;
    in->q = as_ops_f32_contiguous(q);
    in->k = in->q ? as_ops_f32_contiguous(k) : NULL;
    in->v = in->k ? as_ops_f32_contiguous(v) : NULL;
    if (!in->v) goto fail;
    if (mask) {
        in->mask = mask->dtype == AS_BOOL ? as_retain((as_tensor *)mask) : as_to_dtype(mask, AS_F32);
        if (!in->mask) goto fail;
    }
    int64_t D = q->shape[3];
    in->p = (as_attn_f32_params){
        .B = q->shape[0], .H = q->shape[1], .Hkv = k->shape[1], .Lq = q->shape[2], .Lk = k->shape[2],
        .D = D, .Dv = v->shape[3],
        .q = as_data(in->q), .k = as_data(in->k), .v = as_data(in->v),
        .causal = o.causal,
        .scale = (float)as_attention_scale(o.scale, D),
    };
    if (in->mask) in->p.mask = as_attention_operand(in->mask);
    if (training && o.dropout > 0) {
        in->p.dropout = (float)o.dropout;
        if (as_attention_dropout_seed(&in->p.seed)) goto fail;
    }
    return 0;
fail:
    as_attention_inputs_release(in);
    return -1;
}

const char *as_attention_grad_name(const char *fn)
{
#define ZOO(name)                                                                                          \
    {name, name " (its fused CPU kernel is inference only; as.attention.new(\"" name "\") takes the "  \
           "differentiable tensor-op path when a gradient is needed)"}
    static const struct {
        const char *fn, *name;
    } names[] = {
        ZOO("local_attention"),     ZOO("sink_attention"),      ZOO("sparse_attention"),
        ZOO("dynamic_attention"),   ZOO("relative_attention"),  ZOO("adaptive_attention"),
        ZOO("gated_attention"),     ZOO("entmax_attention"),    ZOO("sigmoid_attention"),
        ZOO("cosine_attention"),    ZOO("linear_attention"),    ZOO("performer_attention"),
        ZOO("efficient_attention"),
    };
#undef ZOO
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i].fn, fn) == 0) return names[i].name;
    return fn;
}

as_tensor *as_attention_finish(const as_attn_inputs *in, as_tensor *out)
{
    /* the zoo's fused kernels have no backward: the modules take their
     * tensor-op composite when a gradient is needed (ops_path.lua), so only
     * the functional forms get here with one, and say so at backward */
    const as_tensor *all[6] = {in->q, in->k, in->v, in->mask, in->param[0], in->param[1]}, *need[AS_NODE_MAX_INPUTS];
    int n = 0; /* a node holds at most AS_NODE_MAX_INPUTS; one that requires grad puts it in the graph */
    for (int i = 0; i < 6 && n < AS_NODE_MAX_INPUTS; i++)
        if (as_requires_grad(all[i])) need[n++] = all[i];
    out = as_autograd_guard(as_attention_grad_name(in->fn), out, n, need);
    if (!out || in->dtype == AS_F32) return out;
    as_tensor *r = as_to_dtype(out, in->dtype);
    as_release(out);
    return r;
}
