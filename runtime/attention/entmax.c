/* entmax_attention: alpha-entmax(q k^T * scale + mask) v (Peters et al. 2019;
 * Correia et al. 2019), alpha fixed or learned per head as
 * 1 + sigmoid(pre_alpha_h).  The scores of a block of query rows are
 * materialised and normalised row by row (kernels/cpu/zoo_reweight_entmax.c);
 * as_entmax is the same normaliser as a tensor op, on the CPU (every float
 * dtype) and on a device with the kernel (kernels/cuda/entmax.cu). */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "backend.h"
#include "dispatch.h"
#include "prepare.h"

#define FN "entmax_attention"

as_tensor *as_entmax_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                               const as_tensor *mask, const as_attention_opts *o, double alpha,
                               const as_tensor *pre_alpha, bool training)
{
    if (!pre_alpha && !(alpha >= 1 && alpha <= 2)) {
        as_error_set(FN ": alpha must be a number in [1, 2], got %g", alpha);
        return NULL;
    }
    as_attn_inputs in;
    if (as_attention_prepare(FN, q, k, v, mask, o, training, &in)) return NULL;
    in.param[0] = pre_alpha;
    int64_t H = in.p.H;
    as_tensor *a32 = NULL, *out = NULL;
    float *al = malloc((size_t)(H + 1) * sizeof *al);
    if (!al) {
        as_error_set(FN ": out of memory");
        goto done;
    }
    if (pre_alpha) {
        if (pre_alpha->ndim == 1 && pre_alpha->shape[0] != H) {
            as_error_set(FN ": pre_alpha was made for %lld heads (num_heads) but q has %lld; "
                         "build the core with num_heads = %lld",
                         (long long)pre_alpha->shape[0], (long long)H, (long long)H);
            goto done;
        }
        if (as_rw_check_param(FN, "pre_alpha", pre_alpha, 1, (int64_t[]){H}) ||
            !(a32 = as_ops_f32_contiguous(pre_alpha)))
            goto done;
        const float *pa = as_data(a32);
        for (int64_t h = 0; h < H; h++) {
            if (isnan(pa[h])) {
                as_error_set(FN ": pre_alpha[%lld] is NaN", (long long)h + 1);
                goto done;
            }
            al[h] = (float)(1.0 + 1.0 / (1.0 + exp(-(double)pa[h])));
        }
    } else {
        for (int64_t h = 0; h < H; h++) al[h] = (float)alpha;
    }
    as_cpu_rw_entmax_ctx ctx = {.alpha = al};
    as_cpu_rw_mech mech = as_cpu_rw_entmax_mech;
    mech.ctx = &ctx;
    out = as_rw_run(FN, &in, &mech);
done:
    free(al);
    as_release(a32);
    as_attention_inputs_release(&in);
    return out;
}

/* The CPU: float64 rows computed and returned in float64
 * (as_cpu_entmax_row_f64); float32 and the halves through a float32 copy
 * (each threshold in double all the same), returned in x's dtype.  The rows
 * are laid out along the last dim of a contiguous copy. */
static as_tensor *entmax_cpu(const as_tensor *x, int d, double alpha)
{
    bool f64 = x->dtype == AS_F64;
    as_tensor *t = as_transpose(x, d, x->ndim - 1), *y = t ? as_to_dtype(t, f64 ? AS_F64 : AS_F32) : NULL;
    as_tensor *c = y ? as_clone(y) : NULL, *r = NULL, *back = NULL;
    as_release(t), as_release(y);
    if (!c) return NULL;
    int64_t n = x->shape[d], rows = n > 0 ? as_numel(c) / n : 0;
    void *data = as_data(c);
    double *scratch = NULL;
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    if (rows > 0 && !(scratch = malloc((size_t)nthreads * 2 * (size_t)n * sizeof *scratch))) {
        as_release(c);
        as_error_set("entmax: out of memory");
        return NULL;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) if (rows * n > 16384)
    for (int64_t i = 0; i < rows; i++) {
#ifdef _OPENMP
        double *mine = scratch + (size_t)omp_get_thread_num() * 2 * (size_t)n;
#else
        double *mine = scratch;
#endif
        if (f64) as_cpu_entmax_row_f64((double *)data + i * n, n, alpha, mine);
        else as_cpu_entmax_row((float *)data + i * n, n, alpha, mine);
    }
    free(scratch);
    back = as_transpose(c, d, x->ndim - 1);
    as_release(c);
    if (!back) return NULL;
    r = as_contiguous(back);
    as_release(back);
    if (!r || r->dtype == x->dtype) return r;
    as_tensor *o = as_to_dtype(r, x->dtype);
    as_release(r);
    return o;
}

/* A device's kernel (as_backend.entmax_rows): float32, bfloat16, float16 in,
 * the same out, float32 arithmetic.  The output is the only allocation: a
 * non-contiguous x is first copied into it and normalised in place. */
static as_tensor *entmax_device(const as_tensor *x, int d, double alpha)
{
    as_device dev = as_tensor_device(x);
    if (!as_backend_for("entmax", dev)) return NULL; /* no such device, or a build without it */
    if (!as_k_has_entmax_rows(dev) || x->dtype == AS_F64) {
        as_error_set("entmax: expected float32, bfloat16 or float16 on %s (no entmax kernel there for %s)",
                     as_device_name(dev), as_dtype_name(x->dtype));
        return NULL;
    }
    as_tensor *y = as_empty(x->ndim, x->shape, x->dtype, dev);
    if (!y || as_numel(y) == 0) return y;
    int64_t n = x->shape[d], inner = 1;
    for (int i = d + 1; i < x->ndim; i++) inner *= x->shape[i];
    const void *src = as_data(x);
    if (!as_is_contiguous(x)) {
        if (as_copy_(y, x)) goto fail;
        src = as_data(y);
    }
    if (as_k_entmax_rows(dev, x->dtype, src, as_data(y), as_numel(y) / (n * inner), n, inner, alpha)) goto fail;
    return y;
fail:
    as_release(y);
    return NULL;
}

as_tensor *as_entmax(const as_tensor *x, int dim, double alpha)
{
    if (!x) {
        as_error_set("entmax: expected a Tensor, got nil");
        return NULL;
    }
    if (!as_dtype_is_float(x->dtype)) {
        as_error_set("entmax: expected a float tensor (float32, float64, bfloat16, float16), got %s",
                     as_dtype_name(x->dtype));
        return NULL;
    }
    if (!(alpha >= 1 && alpha <= 2)) {
        as_error_set("entmax: alpha must be a number in [1, 2], got %g", alpha);
        return NULL;
    }
    if (x->ndim == 0) {
        as_error_set("entmax: expected at least 1 dimension, got a 0-d tensor");
        return NULL;
    }
    int d = as_wrap_dim("entmax", dim, x->ndim);
    if (d < 0) return NULL;
    if (as_tensor_device(x).type == AS_DEV_CPU) return entmax_cpu(x, d, alpha);
    return entmax_device(x, d, alpha);
}
