/* Front-ends of the linear-cost attention kernels (kernels/cpu/zoo_linear.c),
 * shared by linear_attention and performer_attention: they differ only in
 * the feature map.  The causal scan takes the features made; the non-causal
 * kernel makes them itself, a chunk of rows at a time. */
#include "attnswap/attention_linear.h"

#include <stdbool.h>
#include <stdlib.h>

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "ops_internal.h"
#include "attnswap/ops.h"
#include "prepare.h" /* as_attention_grad_name */
#include "zoo_linear.h"

#define FN_CAUSAL "linear_attention_causal"

/* scratch of bytes for the scan's threads; NULL with the error set */
static void *causal_workspace(const char *fn, size_t bytes)
{
    void *ws = malloc(bytes > 0 ? bytes : sizeof(double));
    if (!ws) as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
    return ws;
}

/* saved: phi_q, phi_k, v as the scan read them (contiguous, its dtype) and
 * its out; the gradients come in that dtype (the engine casts them to the
 * inputs') */
static int causal_backward(as_node *node, const as_tensor *g, as_tensor **gi)
{
    const as_tensor *sv[4];
    for (int i = 0; i < 4; i++)
        if (!(sv[i] = as_node_saved(node, i))) return -1; /* freed, or changed in place */
    const as_tensor *fq = sv[0], *fk = sv[1], *v = sv[2], *out = sv[3];
    int64_t B = fq->shape[0], H = fq->shape[1], Lq = fq->shape[2], Lk = fk->shape[2], F = fq->shape[3];
    int64_t Dv = v->shape[3];
    as_tensor *t[3] = {NULL, NULL, NULL}, *gc = as_ops_contiguous_as(g, fq->dtype);
    void *ws = NULL;
    int rc = -1;
    if (!gc) goto done;
    for (int i = 0; i < 3; i++)
        if (as_node_needs(node, i) && !(t[i] = as_empty(4, sv[i]->shape, fq->dtype, AS_CPU))) goto done;
    if (B * H > 0 && (t[0] || t[1] || t[2])) {
        int nthreads = as_get_num_threads();
        bool f64 = fq->dtype == AS_F64;
        ws = causal_workspace(FN_CAUSAL " backward", as_cpu_linear_causal_bwd_workspace_size(F, Dv, Lq, f64, nthreads));
        if (!ws) goto done;
        as_cpu_linear_causal_bwd_args a = {
            .fq = as_data(fq), .fk = as_data(fk), .v = as_data(v), .out = as_data(out), .g = as_data(gc),
            .dq = t[0] ? as_data(t[0]) : NULL, .dk = t[1] ? as_data(t[1]) : NULL, .dv = t[2] ? as_data(t[2]) : NULL,
            .f64 = f64, .N = B * H, .Lq = Lq, .Lk = Lk, .F = F, .Dv = Dv,
        };
        as_cpu_linear_causal_bwd(&a, ws, nthreads);
    }
    for (int i = 0; i < 3; i++) gi[i] = t[i], t[i] = NULL;
    rc = 0;
done:
    free(ws);
    as_ops_release4(t[0], t[1], t[2], gc);
    return rc;
}

as_tensor *as_linear_attention_causal(const as_tensor *fq, const as_tensor *fk, const as_tensor *v)
{
    const char *fn = FN_CAUSAL;
    const as_tensor *in[3] = {fq, fk, v};
    char s1[128], s2[128], s3[128];
    if (!fq || !fk || !v) {
        as_error_set("%s: expected phi_q, phi_k and v tensors, got NULL", fn);
        return NULL;
    }
    if (as_ops_check_cpu(fn, 3, in)) return NULL;
    for (int i = 0; i < 3; i++)
        if (as_ops_check_float(fn, in[i])) return NULL;
    if (fk->dtype != fq->dtype || v->dtype != fq->dtype) {
        as_error_set("%s: phi_q, phi_k and v must share one dtype, got %s, %s, %s", fn, as_dtype_name(fq->dtype),
                     as_dtype_name(fk->dtype), as_dtype_name(v->dtype));
        return NULL;
    }
    if (fq->ndim != 4 || fk->ndim != 4 || v->ndim != 4 || fq->shape[0] != fk->shape[0] || fq->shape[1] != fk->shape[1] ||
        fq->shape[3] != fk->shape[3] || v->shape[0] != fk->shape[0] || v->shape[1] != fk->shape[1] ||
        v->shape[2] != fk->shape[2]) {
        as_error_set("%s: expected phi_q (B, H, Lq, F), phi_k (B, H, Lk, F), v (B, H, Lk, Dv), got %s, %s, %s", fn,
                     as_shape_str(s1, sizeof s1, fq->ndim, fq->shape), as_shape_str(s2, sizeof s2, fk->ndim, fk->shape),
                     as_shape_str(s3, sizeof s3, v->ndim, v->shape));
        return NULL;
    }
    /* float64 scans in float64 (gradcheck); float32 and the halves in float32 */
    as_dtype dt = as_ops_work_float(fq->dtype);
    int64_t B = fq->shape[0], H = fq->shape[1], Lq = fq->shape[2], Lk = fk->shape[2], F = fq->shape[3], Dv = v->shape[3];
    as_grad_scope s = as_grad_begin(3, in);
    as_tensor *cq = as_ops_contiguous_as(fq, dt), *ck = cq ? as_ops_contiguous_as(fk, dt) : NULL;
    as_tensor *cv = ck ? as_ops_contiguous_as(v, dt) : NULL;
    as_tensor *out = cv ? as_empty(4, (int64_t[]){B, H, Lq, Dv}, dt, AS_CPU) : NULL;
    if (out && B * H * Lq * Dv > 0) {
        /* recording: the forward through the backward's products (chunks,
         * gemm); inference keeps the per-row scan in double */
        int nthreads = as_get_num_threads();
        bool f64 = dt == AS_F64;
        void *ws = causal_workspace(fn, s.record ? as_cpu_linear_causal_bwd_workspace_size(F, Dv, Lq, f64, nthreads)
                                                 : as_cpu_linear_causal_workspace_size(F, Dv, nthreads));
        if (ws && s.record) {
            as_cpu_linear_causal_bwd_args a = {
                .fq = as_data(cq), .fk = as_data(ck), .v = as_data(cv), .out = as_data(out),
                .f64 = f64, .N = B * H, .Lq = Lq, .Lk = Lk, .F = F, .Dv = Dv,
            };
            as_cpu_linear_causal_blocked(&a, ws, nthreads);
        } else if (ws) {
            as_cpu_linear_causal(as_data(cq), as_data(ck), as_data(cv), as_data(out), f64, B * H, Lq, Lk, F, Dv, ws,
                                 nthreads);
        } else {
            as_release(out), out = NULL;
        }
        free(ws);
    }
    as_node *n = as_grad_end(s, fn, causal_backward, &out, 3, in); /* restores grad mode, out NULL or not */
    if (n && (as_node_save(n, 0, cq) || as_node_save(n, 1, ck) || as_node_save(n, 2, cv) || as_node_save(n, 3, out)))
        as_release(out), out = NULL;
    as_ops_release4(cq, ck, cv, NULL);
    return out;
}

/* k, v, keep, w against q: (B, Hkv, Lk, D), (B, Hkv, Lk, Dv), (1 or B, Lk),
 * (m, D); 0 or -1 with the error set. */
static int check_kernelized(const char *fn, const as_tensor *q, const as_tensor *k, const as_tensor *v,
                            const as_tensor *keep, const as_tensor *w, as_feature_map feature)
{
    char s1[128], s2[128], s3[128];
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] ||
        k->shape[1] != v->shape[1] || k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0 ||
        k->shape[2] != v->shape[2] || k->shape[3] != q->shape[3]) {
        as_error_set("%s: expected q (B, H, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) with H a multiple of Hkv, "
                     "got q %s, k %s, v %s", fn, as_shape_str(s1, sizeof s1, q->ndim, q->shape),
                     as_shape_str(s2, sizeof s2, k->ndim, k->shape), as_shape_str(s3, sizeof s3, v->ndim, v->shape));
        return -1;
    }
    if (keep && (keep->ndim != 2 || (keep->shape[0] != 1 && keep->shape[0] != q->shape[0]) ||
                 keep->shape[1] != k->shape[2])) {
        as_error_set("%s: key weights must be (1 or B, Lk) = (1 or %lld, %lld), got %s", fn,
                     (long long)q->shape[0], (long long)k->shape[2], as_shape_str(s1, sizeof s1, keep->ndim, keep->shape));
        return -1;
    }
    if (feature == AS_FEATURE_FAVOR && (w == NULL || w->ndim != 2 || w->shape[0] < 1 || w->shape[1] != q->shape[3])) {
        as_error_set("%s: the projection must be (m, D) with m >= 1, D = %lld, got %s", fn, (long long)q->shape[3],
                     w ? as_shape_str(s1, sizeof s1, w->ndim, w->shape) : "none");
        return -1;
    }
    return 0;
}

as_tensor *as_kernelized_attention(const as_tensor *q, const as_tensor *k, const as_tensor *v, const as_tensor *keep,
                                   const as_tensor *w, as_feature_map feature, bool causal)
{
    const char *fn = feature == AS_FEATURE_FAVOR     ? "performer_attention"
                     : feature == AS_FEATURE_SOFTMAX ? "efficient_attention"
                                                     : "linear_attention";
    const as_tensor *ts[5] = {q, k, v, keep, w};
    int n = 3 + (keep != NULL) + (w != NULL && feature == AS_FEATURE_FAVOR);
    if (keep == NULL) ts[3] = ts[4];
    if (as_ops_check_cpu(fn, n, ts)) return NULL;
    for (int i = 0; i < n; i++)
        if (as_ops_check_float(fn, ts[i])) return NULL;
    if (check_kernelized(fn, q, k, v, keep, w, feature)) return NULL;
    if (causal && feature == AS_FEATURE_SOFTMAX) {
        as_error_set("%s: causal is not supported (the keys' softmax runs over the whole sequence)", fn);
        return NULL;
    }

    as_tensor *c[5] = {NULL};
    as_tensor *out = NULL;
    void *ws = NULL;
    const as_tensor *in[5] = {q, k, v, keep, feature == AS_FEATURE_FAVOR ? w : NULL};
    for (int i = 0; i < 5; i++)
        if (in[i] && !(c[i] = as_ops_f32_contiguous(in[i]))) goto done;
    as_cpu_kernelized_params p = {
        .q = as_data(c[0]), .k = as_data(c[1]), .v = as_data(c[2]),
        .keep = c[3] ? as_data(c[3]) : NULL, .keep_B = c[3] ? c[3]->shape[0] : 1,
        .w = c[4] ? as_data(c[4]) : NULL, .m = c[4] ? c[4]->shape[0] : 0,
        .B = q->shape[0], .H = q->shape[1], .Hkv = k->shape[1], .Lq = q->shape[2], .Lk = k->shape[2],
        .D = q->shape[3], .Dv = v->shape[3], .feature = feature, .causal = causal,
    };
    out = as_empty(4, (int64_t[]){p.B, p.H, p.Lq, p.Dv}, AS_F32, AS_CPU);
    if (!out || as_numel(out) == 0) goto done;
    p.out = as_data(out);
    int nthreads = as_get_num_threads();
    size_t bytes = as_cpu_kernelized_workspace_size(&p, nthreads);
    ws = malloc(bytes);
    if (!ws) {
        as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
        as_release(out);
        out = NULL;
        goto done;
    }
    as_cpu_kernelized_attention(&p, ws, nthreads);
done:
    free(ws);
    for (int i = 0; i < 5; i++) as_release(c[i]);
    return as_autograd_guard(as_attention_grad_name(fn), out, 4, (const as_tensor *[]){q, k, v, w});
}
