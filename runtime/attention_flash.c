/* flash_attention: exact softmax(q k^T * scale + bias) v through the fused
 * tiled kernel (Dao et al. 2022), never materialising the Lq x Lk scores.
 * Same contract as as_sdp_attention; this file checks the arguments, reads
 * strides and broadcast masks as they come (no copies) and dispatches to
 * the CPU kernel (kernels/cpu/attention_flash.c). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "attention_flash.h"
#include "layers.h"

#define FN "flash_attention"

static _Thread_local const char *last_backend = "none";

const char *as_flash_backend(void) { return last_backend; }

static const char *backend_name(const char *isa)
{
    static const char *const names[] = {"flash/avx512", "flash/avx2", "flash/scalar"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(isa, names[i] + 6)) return names[i];
    return "flash/?";
}

static int check(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *mask,
                 const as_attention_opts *o)
{
    char s1[128], s2[128], s3[128];
    const as_tensor *in[4] = {q, k, v, mask};
    const char *names[4] = {"q", "k", "v", "mask"};
    for (int i = 0; i < 3; i++) {
        if (!in[i]) {
            as_error_set(FN ": %s must be a Tensor, got nil", names[i]);
            return -1;
        }
        if (in[i]->ndim != 4) {
            as_error_set(FN ": %s must be 4-d (B, H, L, D), got shape %s", names[i],
                         as_shape_str(s1, sizeof s1, in[i]->ndim, in[i]->shape));
            return -1;
        }
    }
    if (!as_dtype_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype) {
        as_error_set(FN ": q, k and v must be floating point of one dtype, got %s, %s and %s",
                     as_dtype_name(q->dtype), as_dtype_name(k->dtype), as_dtype_name(v->dtype));
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (in[i] && as_tensor_device(in[i]).type != AS_DEV_CPU) {
            as_error_set(FN ": %s is on %s; this kernel runs on cpu tensors", names[i],
                         as_device_name(as_tensor_device(in[i])));
            return -1;
        }
    }
    as_shape_str(s1, sizeof s1, 4, q->shape);
    as_shape_str(s2, sizeof s2, 4, k->shape);
    as_shape_str(s3, sizeof s3, 4, v->shape);
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0]) {
        as_error_set(FN ": batch sizes differ: q %s, k %s, v %s", s1, s2, s3);
        return -1;
    }
    if (k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2]) {
        as_error_set(FN ": k %s and v %s must have the same heads and length", s2, s3);
        return -1;
    }
    if (k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0) {
        as_error_set(FN ": the query heads (%lld) must be a multiple of the key/value heads (%lld): "
                     "q %s, k %s",
                     (long long)q->shape[1], (long long)k->shape[1], s1, s2);
        return -1;
    }
    if (k->shape[3] != q->shape[3]) {
        as_error_set(FN ": q %s and k %s must have the same head dimension", s1, s2);
        return -1;
    }
    if (k->shape[2] > INT32_MAX - 1) {
        as_error_set(FN ": %lld keys is more than this kernel indexes (2^31 - 2)",
                     (long long)k->shape[2]);
        return -1;
    }
    if (!(o->dropout >= 0 && o->dropout < 1)) {
        as_error_set(FN ": dropout must be in [0, 1), got %g", o->dropout);
        return -1;
    }
    if (isinf(o->scale)) {
        as_error_set(FN ": scale must be finite (or NaN for 1/sqrt(D)), got %g", o->scale);
        return -1;
    }
    if (!mask) return 0;
    int64_t target[4] = {q->shape[0], q->shape[1], q->shape[2], k->shape[2]};
    bool ok = mask->ndim <= 4;
    for (int d = 0; ok && d < mask->ndim; d++) {
        int64_t n = mask->shape[mask->ndim - 1 - d];
        ok = n == 1 || n == target[3 - d];
    }
    if (!ok) {
        as_error_set(FN ": mask of shape %s is not broadcastable to (B, H, Lq, Lk) = %s",
                     as_shape_str(s1, sizeof s1, mask->ndim, mask->shape),
                     as_shape_str(s2, sizeof s2, 4, target));
        return -1;
    }
    if (mask->dtype != AS_BOOL && !as_dtype_is_float(mask->dtype)) {
        as_error_set(FN ": mask must be bool (keep) or floating point (additive), got %s",
                     as_dtype_name(mask->dtype));
        return -1;
    }
    return 0;
}

/* The operand as the kernel reads it; dims missing on the left or of size 1
 * get stride 0 (broadcast). */
static as_cpu_flash_operand operand(const as_tensor *t)
{
    as_cpu_flash_operand o = {.data = as_data(t), .dtype = t->dtype};
    for (int d = 0; d < 4; d++) {
        int td = d - (4 - t->ndim);
        o.stride[d] = td < 0 || t->shape[td] == 1 ? 0 : t->stride[td];
    }
    return o;
}

/* One 64-bit draw from the seeded generator (as_manual_seed), so dropout
 * follows the global seed and two calls get different masks: four
 * U[0, 1) floats carry 24 bits each. */
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

as_tensor *as_flash_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v,
                              const as_tensor *mask, const as_attention_opts *opts, bool training)
{
    as_attention_opts o = opts ? *opts : (as_attention_opts){.scale = NAN};
    if (check(q, k, v, mask, &o)) return NULL;
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Dv = v->shape[3];
    as_tensor *out = as_empty(4, (int64_t[]){B, H, Lq, Dv}, q->dtype, AS_CPU);
    if (!out) return NULL;
    as_cpu_flash_params p = {
        .B = B, .H = H, .Hkv = k->shape[1], .Lq = Lq, .Lk = k->shape[2], .D = D, .Dv = Dv,
        .q = operand(q), .k = operand(k), .v = operand(v),
        .causal = o.causal,
        .scale = (float)(isnan(o.scale) ? (D > 0 ? 1.0 / sqrt((double)D) : 1.0) : o.scale),
        .out = as_data(out), .out_dtype = out->dtype,
    };
    if (mask) p.mask = operand(mask);
    if (training && o.dropout > 0) {
        p.dropout = (float)o.dropout;
        if (dropout_seed(&p.seed)) {
            as_release(out);
            return NULL;
        }
    }
    last_backend = backend_name(as_cpu_flash_isa_name());
    if (as_numel(out) == 0) return out;
    int nthreads = omp_get_max_threads();
    size_t bytes = as_cpu_flash_workspace_size(&p, nthreads);
    void *ws = malloc(bytes);
    if (!ws) {
        as_release(out);
        as_error_set(FN ": out of memory (%zu bytes of scratch)", bytes);
        return NULL;
    }
    as_cpu_flash_attention(&p, ws, nthreads);
    free(ws);
    return out;
}
