/* Front-end of the causal linear-attention scan (kernels/cpu/zoo_linear.c),
 * shared by linear_attention and performer_attention: they differ only in
 * the feature map that makes fq and fk. */
#include "attention_linear.h"
#include "as_error.h"
#include "ops_internal.h"
#include "zoo_linear.h"

as_tensor *as_linear_attention_causal(const as_tensor *fq, const as_tensor *fk, const as_tensor *v)
{
    const char *fn = "linear_attention";
    const as_tensor *ts[3] = {fq, fk, v};
    if (as_ops_check_cpu(fn, 3, ts)) return NULL;
    char s1[128], s2[128], s3[128];
    if (fq->ndim != 4 || fk->ndim != 4 || v->ndim != 4 || fq->shape[0] != fk->shape[0] || fq->shape[1] != fk->shape[1] ||
        fq->shape[3] != fk->shape[3] || v->shape[0] != fk->shape[0] || v->shape[1] != fk->shape[1] ||
        v->shape[2] != fk->shape[2]) {
        as_error_set("%s: features of q %s and k %s and values %s do not match (B, H, L, F) / (B, H, Lk, Dv)", fn,
                     as_shape_str(s1, sizeof s1, fq->ndim, fq->shape), as_shape_str(s2, sizeof s2, fk->ndim, fk->shape),
                     as_shape_str(s3, sizeof s3, v->ndim, v->shape));
        return NULL;
    }
    as_tensor *cq = as_ops_f32_contiguous(fq), *ck = cq ? as_ops_f32_contiguous(fk) : NULL;
    as_tensor *cv = ck ? as_ops_f32_contiguous(v) : NULL;
    int64_t B = fq->shape[0], H = fq->shape[1], Lq = fq->shape[2], Lk = fk->shape[2], F = fq->shape[3], Dv = v->shape[3];
    as_tensor *out = cv ? as_empty(4, (int64_t[]){B, H, Lq, Dv}, AS_F32, AS_CPU) : NULL;
    if (out && B * H * Lq * Dv > 0)
        as_cpu_linear_causal(as_data(cq), as_data(ck), as_data(cv), as_data(out), B * H, Lq, Lk, F, Dv);
    as_ops_release4(cq, ck, cv, NULL);
    return out;
}
