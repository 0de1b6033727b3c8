/* The attention contract (DESIGN.md, Attention), checked once for every
 * implementation's front-end. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "attnswap/error.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

int as_attention_check_opts(const char *fn, const as_attention_opts *o)
{
    if (!o) return 0;
    if (!(o->dropout >= 0 && o->dropout < 1)) {
        as_error_set("%s: dropout must be in [0, 1), got %g", fn, o->dropout);
        return -1;
    }
    if (isinf(o->scale)) {
        as_error_set("%s: scale must be finite (or NaN for 1/sqrt(D)), got %g", fn, o->scale);
        return -1;
    }
    return 0;
}

static int check_mask(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *mask)
{
    char s1[128], s2[128];
    int64_t target[4] = {q->shape[0], q->shape[1], q->shape[2], k->shape[2]};
    bool ok = mask->ndim <= 4;
    for (int d = 0; ok && d < mask->ndim; d++) {
        int64_t n = mask->shape[mask->ndim - 1 - d];
        ok = n == 1 || n == target[3 - d];
    }
    if (!ok) {
        as_error_set("%s: mask of shape %s is not broadcastable to (B, H, Lq, Lk) = %s", fn,
                     as_shape_str(s1, sizeof s1, mask->ndim, mask->shape), as_shape_str(s2, sizeof s2, 4, target));
        return -1;
    }
    if (mask->dtype != AS_BOOL && !as_dtype_is_float(mask->dtype)) {
        as_error_set("%s: mask must be bool (keep) or floating point (additive), got %s", fn,
                     as_dtype_name(mask->dtype));
        return -1;
    }
    return 0;
}

int as_attention_check(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                       const as_tensor *mask, const as_attention_opts *opts)
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
        as_error_set("%s: the query heads (%lld) must be a multiple of the key/value heads (%lld): q %s, k %s", fn,
                     (long long)q->shape[1], (long long)k->shape[1], s1, s2);
        return -1;
    }
    if (k->shape[3] != q->shape[3]) {
        as_error_set("%s: q %s and k %s must have the same head dimension", fn, s1, s2);
        return -1;
    }
    if (mask && check_mask(fn, q, k, mask)) return -1;
    const as_tensor *all[3] = {k, v, mask};
    const char *what[3] = {"k", "v", "mask"};
    for (int i = 0; i < 3; i++)
        if (all[i] && !as_device_equal(as_tensor_device(all[i]), as_tensor_device(q))) {
            snprintf(s1, sizeof s1, "%s", as_device_name(as_tensor_device(q)));
            as_error_set("%s: q is on %s but %s is on %s; move them to one device first", fn, s1, what[i],
                         as_device_name(as_tensor_device(all[i])));
            return -1;
        }
    return as_attention_check_opts(fn, opts);
}

int as_attention_check_cpu_kernel(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                                  const as_tensor *mask)
{
    const as_tensor *in[4] = {q, k, v, mask};
    const char *names[4] = {"q", "k", "v", "mask"};
    for (int i = 0; i < 4; i++) {
        if (in[i] && as_tensor_device(in[i]).type != AS_DEV_CPU) {
            as_error_set("%s: %s is on %s; this kernel runs on cpu tensors", fn, names[i],
                         as_device_name(as_tensor_device(in[i])));
            return -1;
        }
        if (in[i] && in[i]->dtype == AS_F64) { /* the fused kernels read float32/16 and bfloat16 */
            as_error_set("%s: %s is float64, which this fused kernel does not take (float32, float16 or "
                         "bfloat16; scaled_dot_product_attention's math path computes in float64)", fn, names[i]);
            return -1;
        }
    }
    if (k->shape[2] > INT32_MAX - 1 || q->shape[3] > INT32_MAX || v->shape[3] > INT32_MAX) {
        as_error_set("%s: sizes past 2^31 are more than this kernel indexes", fn);
        return -1;
    }
    return 0;
}

int as_attention_opts_fields(const as_attention_opts *o, as_config_field *f, int max)
{
    as_config_field all[3] = {{"causal", o->causal, true}, {"dropout", o->dropout, false}, {"scale", o->scale, false}};
    int want = isnan(o->scale) ? 2 : 3, n = 0;
    for (; n < want && n < max; n++) f[n] = all[n];
    return n;
}
