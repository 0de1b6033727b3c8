/* cuBLAS GEMM for matmul on CUDA tensors.  cuBLAS is column-major: a
 * row-major C (M, N) is a column-major C^T (N, M) = op(B)^T op(A)^T, so the
 * operands swap and keep their transpose flags. */
#include "gemm.h"

#include <limits.h>

#include "attnswap/error.h"
#include "attnswap/cuda.h"

#ifndef ATTNSWAP_HAVE_CUDA

int as_cuda_gemm(const as_tensor *a, const as_tensor *b, as_tensor *c, int ta, int tb, int64_t M, int64_t N,
                 int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch, int64_t sa, int64_t sb,
                 int64_t sc)
{
    (void)a, (void)b, (void)c, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)lda, (void)ldb, (void)ldc;
    (void)batch, (void)sa, (void)sb, (void)sc;
    return as_cuda_use("matmul", 0);
}

#else

#include <cublas_v2.h>

static cudaDataType_t cuda_type(as_dtype dt)
{
    return dt == AS_F16 ? CUDA_R_16F : dt == AS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

int as_cuda_gemm(const as_tensor *a, const as_tensor *b, as_tensor *c, int ta, int tb, int64_t M, int64_t N,
                 int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int64_t batch, int64_t sa, int64_t sb,
                 int64_t sc)
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

#endif
