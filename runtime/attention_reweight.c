/* What every reweight front-end shares: checking the attention contract,
 * bringing the inputs to contiguous float32, reading the mask through its
 * broadcast strides, and running the driver (kernels/cpu/zoo_reweight_rows.c). */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "as_error.h"
#include "attention_flash.h"
#include "attention_reweight.h"

static int check_inputs(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                        const as_tensor *mask)
{
    char s1[128], s2[128], s3[128];
    const as_tensor *in[3] = {q, k, v};
    const char *names = "qkv";
    for (int i = 0; i < 3; i++) {
        if (!in[i]) {
            as_error_set("%s: %c must be a Tensor, got nil", fn, names[i]);
            return -1;
        }
        if (in[i]->ndim != 4) {
            as_error_set("%s: %c must be 4-d (B, H, L, D), got shape %s", fn, names[i],
                         as_shape_str(s1, sizeof s1, in[i]->ndim, in[i]->shape));
            return -1;
        }
        if (as_tensor_device(in[i]).type != AS_DEV_CPU) {
            as_error_set("%s: %c is on %s; this kernel runs on cpu tensors", fn, names[i],
                         as_device_name(as_tensor_device(in[i])));
            return -1;
        }
    }
    if (!as_dtype_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype) {
        as_error_set("%s: q, k and v must be floating point of one dtype, got %s, %s and %s", fn,
                     as_dtype_name(q->dtype), as_dtype_name(k->dtype), as_dtype_name(v->dtype));
        return -1;
    }
    as_shape_str(s1, sizeof s1, 4, q->shape);
    as_shape_str(s2, sizeof s2, 4, k->shape);
    as_shape_str(s3, sizeof s3, 4, v->shape);
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0]) {
        as_error_set("%s: batch sizes differ: q %s, k %s, v %s", fn, s1, s2, s3);
        return -1;
    }
    if (k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2]) {
        as_error_set("%s: k %s and v %s must have the same heads and length", fn, s2, s3);
        return -1;
    }
    if (k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0) {
        as_error_set("%s: the query heads (%lld) must be a multiple of the key/value heads (%lld): "
                     "q %s, k %s",
                     fn, (long long)q->shape[1], (long long)k->shape[1], s1, s2);
        return -1;
    }
    if (k->shape[3] != q->shape[3]) {
        as_error_set("%s: q %s and k %s must have the same head dimension", fn, s1, s2);
        return -1;
    }
    if (k->shape[2] > INT32_MAX || q->shape[3] > INT32_MAX || v->shape[3] > INT32_MAX) {
        as_error_set("%s: sizes past 2^31 are more than this kernel indexes", fn);
        return -1;
    }
    if (!mask) return 0;
    if (as_tensor_device(mask).type != AS_DEV_CPU) {
        as_error_set("%s: mask is on %s; this kernel runs on cpu tensors", fn,
                     as_device_name(as_tensor_device(mask)));
        return -1;
    }
    int64_t target[4] = {q->shape[0], q->shape[1], q->shape[2], k->shape[2]};
    bool ok = mask->ndim <= 4;
    for (int d = 0; ok && d < mask->ndim; d++) {
        int64_t n = mask->shape[mask->ndim - 1 - d];
        ok = n == 1 || n == target[3 - d];
    }
    if (!ok) {
        as_error_set("%s: mask of shape %s is not broadcastable to (B, H, Lq, Lk) = %s", fn,
                     as_shape_str(s1, sizeof s1, mask->ndim, mask->shape),
                     as_shape_str(s2, sizeof s2, 4, target));
        return -1;
    }
    if (mask->dtype != AS_BOOL && !as_dtype_is_float(mask->dtype)) {
        as_error_set("%s: mask must be bool (keep) or floating point (additive), got %s", fn,
                     as_dtype_name(mask->dtype));
        return -1;
    }
    return 0;
}

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
    for (int i = 0; i < 4; i++) s = as_cpu_flash_mix64(s ^ (uint64_t)(f[i] * 16777216.0f));
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
    if (!(o.dropout >= 0 && o.dropout < 1)) {
        as_error_set("%s: dropout must be in [0, 1), got %g", fn, o.dropout);
        return -1;
    }
    if (isinf(o.scale)) {
        as_error_set("%s: scale must be finite (or NaN for 1/sqrt(D)), got %g", fn, o.scale);
        return -1;
    }
    if (check_inputs(fn, q, k, v, mask)) return -1;
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
