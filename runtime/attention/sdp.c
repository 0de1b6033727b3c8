/* scaled_dot_product: softmax(q k^T * scale + bias) v with the scores
 * materialised (Vaswani et al. 2017, eq. 1); the reference every other
 * exact core is tested against.
 *
 * Grouped heads (GQA/MQA, Ainslie et al. 2023): query head h reads KV head
 * h / G, G = H / Hkv.  K and V are never copied per query head: q
 * (B, H, Lq, D) is viewed as (B, Hkv, G*Lq, D) so one GEMM per KV head
 * serves its G query heads, or, when q's strides cannot express that view,
 * as (B, Hkv, G, Lq, D) against k broadcast over G. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "prepare.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

#define FN "scaled_dot_product"



/* s = where(keep, s, -inf); consumes s. */
static as_tensor *mask_out(as_tensor *s, const as_tensor *keep)
{
    as_tensor *ninf = as_scalar(-INFINITY, s->dtype, as_tensor_device(s));
    as_tensor *r = ninf ? as_where(keep, s, ninf) : NULL;
    as_release(ninf), as_release(s);
    return r;
}

/* Keep-mask (Lq, Lk): key j is visible to query i when j <= i + (Lk - Lq). */
static as_tensor *causal_keep(int64_t lq, int64_t lk, as_device dev)
{
    as_tensor *ones = as_full(2, (int64_t[]){lq, lk}, 1.0, AS_BOOL, dev);
    as_tensor *keep = ones ? as_tril(ones, lk - lq) : NULL;
    as_release(ones);
    return keep;
}

/* (B, H, Lq, Lk) scores q k^T, unscaled, contiguous. */
static as_tensor *scores(const as_tensor *q, const as_tensor *k)
{
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], G = H / Hkv;
    as_tensor *kt = as_transpose(k, 2, 3), *qg = NULL, *kg = NULL, *s = NULL, *s4 = NULL;
    if (!kt) return NULL;
    if (G == 1) {
        s = as_matmul(q, kt);
    } else if ((qg = as_view(q, 4, (int64_t[]){B, Hkv, G * Lq, D}))) {
        s = as_matmul(qg, kt); /* (B, Hkv, G*Lq, Lk) */
    } else {
        qg = as_view(q, 5, (int64_t[]){B, Hkv, G, Lq, D}); /* splitting H always views */
        kg = qg ? as_unsqueeze(kt, 2) : NULL;             /* (B, Hkv, 1, D, Lk) */
        s = kg ? as_matmul(qg, kg) : NULL;                /* (B, Hkv, G, Lq, Lk) */
    }
    if (s) s4 = as_reshape(s, 4, (int64_t[]){B, H, Lq, Lk});
    as_release(kt), as_release(qg), as_release(kg), as_release(s);
    return s4;
}

as_tensor *as_sdp_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                            const as_tensor *mask, const as_attention_opts *opts, bool training)
{
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(FN, q, k, v, mask, &o)) return NULL;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3], G = H / Hkv;
    double scale = as_attention_scale(o.scale, D);
    as_device dev = as_tensor_device(q);
    as_tensor *s = NULL, *t = NULL, *pg = NULL, *out = NULL, *r = NULL;

    /* the scale on q (B H Lq D), not on the scores (B H Lq Lk): a pass over
     * the small operand instead of a read and a write of the large one, and
     * of its gradient */
    t = as_scalar(scale, q->dtype, dev);
    pg = t ? as_binary(AS_MUL, q, t) : NULL;
    s = pg ? scores(pg, k) : NULL; /* (B, H, Lq, Lk) */
    as_release(t), t = NULL, as_release(pg), pg = NULL;
    if (!s) goto done;
    if (o.causal) {
        t = causal_keep(Lq, Lk, dev);
        if (!t || !(s = mask_out(s, t))) goto done;
        as_release(t), t = NULL;
    }
    if (mask && mask->dtype == AS_BOOL) {
        if (!(s = mask_out(s, mask))) goto done;
    } else if (mask && as_binary_(AS_ADD, s, mask)) {
        goto done;
    }
    /* rows of -inf (nothing to attend to) come out of softmax as zeros */
    t = as_softmax(s, -1);
    as_release(s), s = t, t = NULL;
    if (!s) goto done;
    if (training && o.dropout > 0) {
        t = as_dropout(s, o.dropout, true);
        as_release(s), s = t, t = NULL;
        if (!s) goto done;
    }
    /* probabilities (B, Hkv, G*Lq, Lk) @ v (B, Hkv, Lk, Dv) */
    pg = G == 1 ? as_retain(s) : as_reshape(s, 4, (int64_t[]){B, Hkv, G * Lq, Lk});
    out = pg ? as_matmul(pg, v) : NULL;
    r = out ? as_reshape(out, 4, (int64_t[]){B, H, Lq, Dv}) : NULL;
done:
    as_release(s), as_release(t), as_release(pg), as_release(out);
    return r;
}

/* The fused kernel takes every input the contract allows (float32, float16,
 * bfloat16, strides, masks, dropout, CPU or CUDA) up to its index range;
 * only past that does the default core materialise the scores. */
static bool fused_dtype(as_dtype dt) { return dt == AS_F32 || dt == AS_F16 || dt == AS_BF16; }

static bool fused_can_take(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask)
{
    /* wider floats (a float64 gradcheck) keep their precision on the math path */
    return k->shape[2] <= INT32_MAX - 1 && q->shape[3] <= INT32_MAX && v->shape[3] <= INT32_MAX &&
           fused_dtype(q->dtype) && fused_dtype(k->dtype) && fused_dtype(v->dtype) &&
           (!mask || mask->dtype != AS_F64);
}

as_tensor *as_sdpa(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                   const as_attention_opts *opts, as_sdp_backend backend, bool training)
{
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check(FN, q, k, v, mask, &o)) return NULL;
    /* a call that needs gradients takes the fused kernel where the device
     * has its backward (the CPU), else the materialising path, whose ops all
     * record theirs */
    const as_tensor *in[4] = {q, k, v, mask};
    if (backend == AS_SDP_AUTO && fused_can_take(q, k, v, mask) &&
        (!as_autograd_needed(4, in) || as_flash_has_backward(as_tensor_device(q))))
        return as_flash_attention(q, k, v, mask, &o, training);
    as_attention_note_backend("math");
    return as_sdp_attention(q, k, v, mask, &o, training);
}

/* ---- the core module ---- */

typedef struct {
    as_attention_opts attn; /* first: the config reads as as_attention_opts too */
    as_sdp_backend backend;
} sdp_config;

static as_tensor *sdp_forward(as_module *m, const as_args *args)
{
    if (as_check_args(FN, args, 3, 4)) return NULL;
    const sdp_config *c = m->config;
    const as_tensor *mask = args->n > 3 ? args->v[3] : NULL;
    return as_sdpa(args->v[0], args->v[1], args->v[2], mask, &c->attn, c->backend, m->training);
}

static void sdp_repr(const as_module *m, char *buf, size_t size)
{
    const sdp_config *c = m->config;
    const as_attention_opts *o = &c->attn;
    int n;
    if (isnan(o->scale))
        n = snprintf(buf, size, "causal=%s, dropout=%g", o->causal ? "true" : "false", o->dropout);
    else
        n = snprintf(buf, size, "causal=%s, scale=%g, dropout=%g", o->causal ? "true" : "false", o->scale,
                     o->dropout);
    if (c->backend == AS_SDP_MATH && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ", backend=math");
}

static int sdp_fields(const as_module *m, as_config_field *f, int max)
{
    return as_attention_opts_fields(&((const sdp_config *)m->config)->attn, f, max);
}

static const as_module_class sdp_class = {.name = "ScaledDotProductAttention",
                                          .forward = sdp_forward,
                                          .free_config = free,
                                          .extra_repr = sdp_repr,
                                          .config_fields = sdp_fields,
                                          .config_size = sizeof(sdp_config)};

as_module *as_sdp_attention_new(const as_attention_opts *opts, as_sdp_backend backend)
{
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check_opts(FN, &o)) return NULL;
    sdp_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = (sdp_config){o, backend};
    as_module *m = as_module_new(&sdp_class, NULL, c);
    if (!m) free(c);
    return m;
}
