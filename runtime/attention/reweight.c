/* What every reweight front-end shares: checking the attention contract,
 * bringing the inputs to contiguous float32, reading the mask through its
 * broadcast strides, and running the driver (kernels/cpu/zoo_reweight_rows.c). */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/error.h"
#include "attention_flash.h"
#include "attnswap/attention_reweight.h"


as_tensor *as_rw_float(const as_tensor *t)
{
    as_tensor *f = as_to_dtype(t, AS_F32);
    if (!f) return NULL;
    as_tensor *c = as_contiguous(f);
    as_release(f);
    return c;
}

int as_rw_check_param(const char *fn, const char *what, const as_tensor *t, int ndim,
                      const int64_t *shape)
{
    char s1[128], s2[128];
    if (!t) {
        as_error_set("%s: %s must be a Tensor, got nil", fn, what);
        return -1;
    }
    bool ok = t->ndim == ndim && as_dtype_is_float(t->dtype) && as_tensor_device(t).type == AS_DEV_CPU;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        as_error_set("%s: %s must be a float cpu tensor of shape %s, got %s %s", fn, what,
                     as_shape_str(s1, sizeof s1, ndim, shape), as_dtype_name(t->dtype),
                     as_shape_str(s2, sizeof s2, t->ndim, t->shape));
        return -1;
    }
    return 0;
}

/* The flash kernel's way to seed dropout: 64 bits from the seeded generator. */
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

void as_rw_release(as_rw_inputs *in)
{
    as_release(in->q), as_release(in->k), as_release(in->v), as_release(in->mask);
    in->q = in->k = in->v = in->mask = NULL;
}

int as_rw_prepare(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                  const as_tensor *mask, const as_attention_opts *opts, bool training, as_rw_inputs *in)
{
    *in = (as_rw_inputs){0};
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (as_attention_check_opts(fn, &o) || as_attention_check(fn, q, k, v, mask, NULL) ||
        as_attention_check_cpu_kernel(fn, q, k, v, mask))
        return -1;
    in->dtype = q->dtype;
    in->q = as_rw_float(q), in->k = in->q ? as_rw_float(k) : NULL, in->v = in->k ? as_rw_float(v) : NULL;
    if (!in->v) goto fail;
    if (mask) {
        in->mask = mask->dtype == AS_BOOL ? as_retain((as_tensor *)mask) : as_to_dtype(mask, AS_F32);
        if (!in->mask) goto fail;
    }
    int64_t D = q->shape[3];
    in->p = (as_cpu_rw_params){
        .B = q->shape[0], .H = q->shape[1], .Hkv = k->shape[1], .Lq = q->shape[2], .Lk = k->shape[2],
        .D = D, .Dv = v->shape[3],
        .q = as_data(in->q), .k = as_data(in->k), .v = as_data(in->v),
        .causal = o.causal,
        .scale = (float)(isnan(o.scale) ? (D > 0 ? 1.0 / sqrt((double)D) : 1.0) : o.scale),
    };
    if (in->mask) {
        as_cpu_rw_mask *mk = &in->p.mask;
        mk->data = as_data(in->mask);
        mk->dtype = in->mask->dtype;
        for (int d = 0; d < 4; d++) {
            int td = d - (4 - in->mask->ndim);
            mk->stride[d] = td < 0 || in->mask->shape[td] == 1 ? 0 : in->mask->stride[td];
        }
    }
    if (training && o.dropout > 0) {
        in->p.dropout = (float)o.dropout;
        if (dropout_seed(&in->p.seed)) goto fail;
    }
    return 0;
fail:
    as_rw_release(in);
    return -1;
}

as_tensor *as_rw_run(const char *fn, as_rw_inputs *in)
{
    as_cpu_rw_params *p = &in->p;
    as_tensor *out = as_empty(4, (int64_t[]){p->B, p->H, p->Lq, p->Dv}, AS_F32, AS_CPU);
    if (!out) return NULL;
    p->out = as_data(out);
    if (as_numel(out) > 0) {
        int nthreads = 1;
#ifdef _OPENMP
        nthreads = omp_get_max_threads();
#endif
        size_t bytes = as_cpu_rw_workspace_size(p, nthreads);
        void *ws = malloc(bytes);
        if (!ws) {
            as_release(out);
            as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
            return NULL;
        }
        as_cpu_rw_attention(p, ws, nthreads);
        free(ws);
    }
    if (in->dtype == AS_F32) return out;
    as_tensor *r = as_to_dtype(out, in->dtype);
    as_release(out);
    return r;
}
