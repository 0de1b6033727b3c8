/* matmul (torch.matmul semantics) and linear on OpenBLAS sgemm, or cuBLAS
 * on CUDA.  Operands whose last two dims have a unit stride in either
 * direction go to BLAS as they are, transposed by flag; only other layouts
 * are copied. */
#include <cblas.h>
#include <string.h>

#include "gemm.h"
#include "ops_internal.h"

/* How BLAS can read a (rows, cols) matrix with strides (rs, cs): 0 fine, -1 copy needed. */
static int blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *trans, int64_t *ld)
{
    if ((cs == 1 || cols == 1) && rs >= (cols > 1 ? cols : 1)) {
        *trans = CblasNoTrans, *ld = rs > 0 ? rs : 1;
        if (rows == 1) *ld = cols > 1 ? cols : 1;
        return 0;
    }
    if ((rs == 1 || rows == 1) && cs >= (rows > 1 ? rows : 1)) {
        *trans = CblasTrans, *ld = cs > 0 ? cs : 1;
        if (cols == 1) *ld = rows > 1 ? rows : 1;
        return 0;
    }
    return -1;
}

/* Batches [0, nbatch) as one stride per operand, when the batch dims allow. */
static int uniform_batch(int nb, const int64_t *batch, const int64_t *stride, int64_t *step)
{
    int64_t s = -1, expect = 0;
    for (int d = nb - 1; d >= 0; d--) {
        if (batch[d] == 1) continue;
        if (s < 0) s = stride[d], expect = s * batch[d];
        else if (stride[d] != expect) return 0;
        else expect *= batch[d];
    }
    *step = s < 0 ? 0 : s;
    return 1;
}

/* a (..., M, K) @ b (..., K, N), of one dtype (float32 on the CPU), at least 2-d. */
static as_tensor *matmul_2d_plus(const as_tensor *a0, const as_tensor *b0)
{
    char s1[128], s2[128];
    int64_t M = a0->shape[a0->ndim - 2], K = a0->shape[a0->ndim - 1];
    int64_t K2 = b0->shape[b0->ndim - 2], N = b0->shape[b0->ndim - 1];
    if (K != K2) {
        as_error_set("matmul: shapes %s and %s do not align", as_shape_str(s1, sizeof s1, a0->ndim, a0->shape),
                     as_shape_str(s2, sizeof s2, b0->ndim, b0->shape));
        return NULL;
    }
    int64_t batch[AS_MAX_DIMS];
    int nb = as_broadcast_shape("matmul", a0->ndim - 2, a0->shape, b0->ndim - 2, b0->shape, batch);
    if (nb < 0) return NULL;
    int64_t shape[AS_MAX_DIMS], ash[AS_MAX_DIMS], bsh[AS_MAX_DIMS];
    memcpy(shape, batch, sizeof(int64_t) * (size_t)nb);
    memcpy(ash, batch, sizeof(int64_t) * (size_t)nb);
    memcpy(bsh, batch, sizeof(int64_t) * (size_t)nb);
    shape[nb] = M, shape[nb + 1] = N;
    ash[nb] = M, ash[nb + 1] = K;
    bsh[nb] = K, bsh[nb + 1] = N;
    /* gemm with beta = 0 writes every element; only K = 0 needs the zeros */
    as_device dev = as_tensor_device(a0);
    as_tensor *out = K == 0 ? as_zeros(nb + 2, shape, a0->dtype, dev) : as_empty(nb + 2, shape, a0->dtype, dev);
    if (!out || M == 0 || N == 0 || K == 0) return out;
    as_tensor *a = as_expand(a0, nb + 2, ash), *b = a ? as_expand(b0, nb + 2, bsh) : NULL;
    if (!b) {
        as_ops_release4(out, a, b, NULL);
        return NULL;
    }
    CBLAS_TRANSPOSE ta = CblasNoTrans, tb = CblasNoTrans;
    int64_t lda = 1, ldb = 1;
    as_tensor *ca = NULL, *cb = NULL;
    if (blas_layout(M, K, a->stride[nb], a->stride[nb + 1], &ta, &lda)) {
        ca = as_contiguous(a);
        if (!ca) goto fail;
        as_release(a);
        a = as_retain(ca);
        blas_layout(M, K, a->stride[nb], a->stride[nb + 1], &ta, &lda);
    }
    if (blas_layout(K, N, b->stride[nb], b->stride[nb + 1], &tb, &ldb)) {
        cb = as_contiguous(b);
        if (!cb) goto fail;
        as_release(b);
        b = as_retain(cb);
        blas_layout(K, N, b->stride[nb], b->stride[nb + 1], &tb, &ldb);
    }
    int64_t nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= batch[d];
    /* Fold the batch into M when b is the same matrix for every batch and a's
     * rows follow each other in memory: one big GEMM (nn.Linear's case). */
    int b_shared = 1;
    for (int d = 0; d < nb; d++)
        if (b->stride[d] != 0 && batch[d] != 1) b_shared = 0;
    int a_rows_contig = ta == CblasNoTrans;
    int64_t expect = M * a->stride[nb];
    for (int d = nb - 1; d >= 0 && a_rows_contig; d--) {
        if (batch[d] != 1 && a->stride[d] != expect) a_rows_contig = 0;
        expect *= batch[d];
    }
    if (dev.type == AS_DEV_CUDA) {
        int64_t sa, sb;
        int rc;
        if (b_shared && a_rows_contig) {
            rc = as_cuda_gemm(a, b, out, ta == CblasTrans, tb == CblasTrans, M * nbatch, N, K, lda, ldb, N, 1, 0, 0, 0);
        } else {
            /* Batches that one stride cannot step through (a head split out of a
             * fused qkv projection: (B, H) strides (L 3HD, D)) are copied
             * contiguous: one strided-batched call and a copy cost a fraction of
             * a cuBLAS call per matrix (B H of them). */
            rc = 0;
            if (!uniform_batch(nb, batch, a->stride, &sa)) {
                as_tensor *c = as_contiguous(a);
                rc = !c || blas_layout(M, K, c->stride[nb], c->stride[nb + 1], &ta, &lda) ||
                     !uniform_batch(nb, batch, c->stride, &sa);
                if (c) as_release(a), a = c;
            }
            if (!rc && !uniform_batch(nb, batch, b->stride, &sb)) {
                as_tensor *c = as_contiguous(b);
                rc = !c || blas_layout(K, N, c->stride[nb], c->stride[nb + 1], &tb, &ldb) ||
                     !uniform_batch(nb, batch, c->stride, &sb);
                if (c) as_release(b), b = c;
            }
            if (!rc)
                rc = as_cuda_gemm(a, b, out, ta == CblasTrans, tb == CblasTrans, M, N, K, lda, ldb, N, nbatch, sa, sb,
                                  M * N);
        }
        as_ops_release4(a, b, ca, cb);
        if (rc) {
            as_release(out);
            return NULL;
        }
        return out;
    }
    float *po = as_data(out);
    if (b_shared && a_rows_contig && nbatch > 1) {
        as_cpu_sgemm(ta == CblasTrans, tb == CblasTrans, M * nbatch, N, K, 1.0f, as_data(a), lda, as_data(b), ldb,
                     0.0f, po, N);
    } else if (nbatch == 1) {
        as_cpu_sgemm(ta == CblasTrans, tb == CblasTrans, M, N, K, 1.0f, as_data(a), lda, as_data(b), ldb, 0.0f, po,
                     N);
    } else {
        /* one product per thread at a time (each big one is not split again) */
        const float *pa = as_data(a), *pb = as_data(b);
#pragma omp parallel for schedule(dynamic, 1) if (nbatch > 1 && (double)M * N * K * nbatch >= 262144.0)
        for (int64_t i = 0; i < nbatch; i++) {
            int64_t oa = 0, ob = 0, rem = i;
            for (int d = nb - 1; d >= 0; d--) {
                int64_t idx = rem % batch[d];
                rem /= batch[d];
                oa += idx * a->stride[d], ob += idx * b->stride[d];
            }
            as_cpu_sgemm(ta == CblasTrans, tb == CblasTrans, M, N, K, 1.0f, pa + oa, lda, pb + ob, ldb, 0.0f,
                         po + i * M * N, N);
        }
    }
    as_ops_release4(a, b, ca, cb);
    return out;
fail:
    as_ops_release4(a, b, ca, cb);
    as_release(out);
    return NULL;
}

as_tensor *as_matmul(const as_tensor *a, const as_tensor *b)
{
    const as_tensor *ts[2] = {a, b};
    if (as_ops_check_device("matmul", 2, ts)) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        as_error_set("matmul: both arguments need at least 1 dimension, got %d-d and %d-d", a->ndim, b->ndim);
        return NULL;
    }
    if (!as_dtype_is_float(a->dtype) || !as_dtype_is_float(b->dtype)) {
        as_error_set("matmul: expected floating-point tensors, got %s and %s", as_dtype_name(a->dtype),
                     as_dtype_name(b->dtype));
        return NULL;
    }
    as_dtype result = as_dtype_promote(a->dtype, b->dtype);
    /* cuBLAS multiplies float16 and bfloat16 as they are (float32 accumulation) */
    as_dtype cdt = as_tensor_device(a).type == AS_DEV_CUDA ? result : AS_F32;
    as_tensor *fa = as_to_dtype(a, cdt), *fb = fa ? as_to_dtype(b, cdt) : NULL;
    as_tensor *ua = fb ? (a->ndim == 1 ? as_unsqueeze(fa, 0) : as_retain(fa)) : NULL;
    as_tensor *ub = ua ? (b->ndim == 1 ? as_unsqueeze(fb, 1) : as_retain(fb)) : NULL;
    as_tensor *out = ub ? matmul_2d_plus(ua, ub) : NULL;
    as_ops_release4(fa, fb, ua, ub);
    if (out && (a->ndim == 1 || b->ndim == 1)) {
        /* drop the dims the 1-d operands gained */
        int64_t shape[AS_MAX_DIMS];
        int n = 0;
        for (int d = 0; d < out->ndim; d++) {
            if (a->ndim == 1 && d == out->ndim - 2) continue;
            if (b->ndim == 1 && d == out->ndim - 1) continue;
            shape[n++] = out->shape[d];
        }
        as_tensor *r = as_reshape(out, n, shape);
        as_release(out);
        out = r;
    }
    if (out && result != out->dtype) {
        as_tensor *r = as_to_dtype(out, result);
        as_release(out);
        out = r;
    }
    return out;
}

as_tensor *as_linear(const as_tensor *x, const as_tensor *w, const as_tensor *bias)
{
    const as_tensor *ts[3] = {x, w, bias};
    if (as_ops_check_device("linear", 3, ts)) return NULL;
    char s1[128], s2[128];
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        as_error_set("linear: input of shape %s does not match weight of shape %s",
                     as_shape_str(s1, sizeof s1, x->ndim, x->shape), as_shape_str(s2, sizeof s2, w->ndim, w->shape));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])) {
        as_error_set("linear: bias of shape %s does not match %lld output features",
                     as_shape_str(s1, sizeof s1, bias->ndim, bias->shape), (long long)w->shape[0]);
        return NULL;
    }
    as_tensor *wt = as_transpose(w, 0, 1);
    as_tensor *y = wt ? as_matmul(x, wt) : NULL;
    as_release(wt);
    if (y && bias && as_binary_(AS_ADD, y, bias)) {
        as_release(y);
        return NULL;
    }
    return y;
}
