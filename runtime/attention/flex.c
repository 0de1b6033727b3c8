/* flex_attention's C half: the online-softmax step over one tile of scores
 * made by Lua (score_mod, mask_mod) and the final division
 * (kernels/cpu/zoo_reweight_flex.c); the tile loop is in
 * lua/attnswap/attention/flex_attention.lua. */
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/attention_reweight.h"
#include "prepare.h"

#define FN "flex_attention"

static int is_f32c(const as_tensor *t, int ndim)
{
    return t && t->ndim == ndim && t->dtype == AS_F32 && as_is_contiguous(t) &&
           as_tensor_device(t).type == AS_DEV_CPU;
}

int as_flex_step(as_tensor *acc, as_tensor *m, as_tensor *l, const as_tensor *s, const as_tensor *v,
                 const as_tensor *keep, double keep_scale)
{
    char s1[128], s2[128];
    if (!is_f32c(acc, 4) || !is_f32c(m, 3) || !is_f32c(l, 3)) {
        as_error_set(FN ": the accumulators must be contiguous float32 (B, H, Bq, Dv) and (B, H, Bq)");
        return -1;
    }
    int64_t B = acc->shape[0], H = acc->shape[1], Bq = acc->shape[2], Dv = acc->shape[3];
    if (!s || s->ndim != 4 || s->shape[0] != B || s->shape[1] != H || s->shape[2] != Bq ||
        !as_dtype_is_float(s->dtype) || as_tensor_device(s).type != AS_DEV_CPU) {
        as_error_set(FN ": the score tile must be float (B, H, Bq, Bk) = (%lld, %lld, %lld, Bk), got %s",
                     (long long)B, (long long)H, (long long)Bq,
                     s ? as_shape_str(s1, sizeof s1, s->ndim, s->shape) : "nil");
        return -1;
    }
    int64_t Bk = s->shape[3];
    if (!v || v->ndim != 4 || v->shape[0] != B || v->shape[1] == 0 || H % v->shape[1] != 0 ||
        v->shape[2] != Bk || v->shape[3] != Dv || v->dtype != AS_F32 ||
        as_tensor_device(v).type != AS_DEV_CPU) {
        as_error_set(FN ": the value tile must be float32 (B, Hkv, Bk, Dv) matching scores %s, got %s",
                     as_shape_str(s1, sizeof s1, 4, s->shape),
                     v ? as_shape_str(s2, sizeof s2, v->ndim, v->shape) : "nil");
        return -1;
    }
    if (keep && !(keep->ndim == 4 && keep->dtype == AS_BOOL && as_same_shape(keep, s) &&
                  as_is_contiguous(keep))) {
        as_error_set(FN ": the keep mask must be a contiguous bool tile shaped like the scores");
        return -1;
    }
    for (int d = 0; d < 3; d++) {
        if (m->shape[d] != acc->shape[d] || l->shape[d] != acc->shape[d]) {
            as_error_set(FN ": the running max and sum must be (B, H, Bq) like the accumulator");
            return -1;
        }
    }
    /* the scores are overwritten by the weights: a private float32 copy */
    as_tensor *sc = as_empty(4, s->shape, AS_F32, AS_CPU), *vc = NULL;
    if (!sc || as_copy_(sc, s)) {
        as_release(sc);
        return -1;
    }
    /* sgemm reads v rows with unit column stride and a row stride >= Dv */
    bool direct = (Dv <= 1 || v->stride[3] == 1) && v->stride[2] >= (Dv > 1 ? Dv : 1);
    if (!direct && !(vc = as_contiguous(v))) {
        as_release(sc);
        return -1;
    }
    const as_tensor *vv = direct ? v : vc;
    as_cpu_rw_flex_args a = {
        .s = as_data(sc), .v = as_data(vv),
        .vs = {vv->stride[0], vv->stride[1], vv->stride[2]},
        .acc = as_data(acc), .m = as_data(m), .l = as_data(l),
        .B = B, .H = H, .Hkv = v->shape[1], .Bq = Bq, .Bk = Bk, .Dv = Dv,
        .keep = keep ? as_data(keep) : NULL, .keep_scale = (float)keep_scale,
    };
    if (B * H * Bq > 0) as_cpu_rw_flex_step(&a);
    as_release(sc), as_release(vc);
    return 0;
}

as_tensor *as_flex_finish(const as_tensor *acc, const as_tensor *l, as_dtype dtype)
{
    if (!is_f32c(acc, 4) || !is_f32c(l, 3)) {
        as_error_set(FN ": the accumulators must be contiguous float32 (B, H, Bq, Dv) and (B, H, Bq)");
        return NULL;
    }
    as_tensor *out = as_empty(4, acc->shape, AS_F32, AS_CPU);
    if (!out) return NULL;
    as_cpu_rw_flex_finish(as_data(out), as_data(acc), as_data(l), acc->shape[0] * acc->shape[1] * acc->shape[2],
                          acc->shape[3]);
    if (dtype == AS_F32) return out;
    as_tensor *r = as_to_dtype(out, dtype);
    as_release(out);
    return r;
}
