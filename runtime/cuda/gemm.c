/* cuBLAS GEMM for matmul on CUDA tensors.  cuBLAS is column-major: a
 * row-major C (M, N) is a column-major C^T (N, M) = op(B)^T op(A)^T, so the
 * operands swap and keep their transpose flags. */
#include "cuda_backend.h"

#include <limits.h>

#include "attnswap/cuda.h"
#include "attnswap/error.h"

#ifndef ATTNSWAP_HAVE_CUDA

int as_cuda_gemm(as_gemm_args *g)
{
    (void)g;
    return as_cuda_use("matmul", 0);
}

#else

#include <cublas_v2.h>

static cudaDataType_t cuda_type(as_dtype dt)
{
    return dt == AS_F16 ? CUDA_R_16F : dt == AS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* batch matrices, the i-th at element offsets i*sa, i*sb, i*sc. */
static int gemm(const as_tensor *a, const as_tensor *b, as_tensor *c, int ta, int tb, int64_t M, int64_t N,
                int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch, int64_t sa, int64_t sb, int64_t sc)
{
    if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) ||
        !fits_int(batch)) {
        as_error_set("matmul: sizes past 2^31 are more than cuBLAS's int interface takes");
        return -1;
    }
    if (as_cuda_use("matmul", as_tensor_device(c).index)) return -1;
    const char *pa = as_data(a), *pb = as_data(b);
    char *pc = as_data(c);
    cudaDataType_t t = cuda_type(c->dtype);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = as_cuda_blas_handle();
    cublasStatus_t st;
    if (batch == 1)
        st = cublasGemmEx(h, opb, opa, (int)N, (int)M, (int)K, &one, pb, t, (int)ldb, pa, t, (int)lda, &zero, pc, t,
                          (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else
        st = cublasGemmStridedBatchedEx(h, opb, opa, (int)N, (int)M, (int)K, &one, pb, t, (int)ldb, sb, pa, t,
                                        (int)lda, sa, &zero, pc, t, (int)ldc, sc, (int)batch, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
    return as_cublas_check("matmul", st);
}

/* The batch [0, nbatch) as one stride per operand, when its dims allow. */
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

/* *t as a contiguous copy: its matrices then read untransposed, rows of ld. */
static int make_contiguous(as_tensor **t, bool *trans, int64_t *ld)
{
    as_tensor *c = as_contiguous(*t);
    if (!c) return -1;
    as_release(*t);
    *t = c;
    *trans = false;
    *ld = c->shape[c->ndim - 1] > 1 ? c->shape[c->ndim - 1] : 1;
    return 0;
}

int as_cuda_gemm(as_gemm_args *g)
{
    int64_t M = g->M, N = g->N, K = g->K, sa = 0, sb = 0;
    if (g->fold)
        return gemm(g->a, g->b, g->out, g->ta, g->tb, M * g->nbatch, N, K, g->lda, g->ldb, N, 1, 0, 0, 0);
    /* Batches that one stride cannot step through (a head split out of a
     * fused qkv projection: (B, H) strides (L 3HD, D)) are copied contiguous:
     * one strided-batched call and a copy cost a fraction of a cuBLAS call
     * per matrix (B H of them). */
    if (!uniform_batch(g->nb, g->batch, g->a->stride, &sa) &&
        (make_contiguous(&g->a, &g->ta, &g->lda) || !uniform_batch(g->nb, g->batch, g->a->stride, &sa)))
        return -1;
    if (!uniform_batch(g->nb, g->batch, g->b->stride, &sb) &&
        (make_contiguous(&g->b, &g->tb, &g->ldb) || !uniform_batch(g->nb, g->batch, g->b->stride, &sb)))
        return -1;
    return gemm(g->a, g->b, g->out, g->ta, g->tb, M, N, K, g->lda, g->ldb, N, g->nbatch, sa, sb, M * N);
}

#endif
